"""Species delimitation without labels: barcodes grouped into putative species.

Taxonomists group unidentified barcodes into putative species (BOLD's BINs, ASAP, ABGD, the "2 % barcode gap").
The distance between two barcodes is the ungapped p-distance in COI-5P reference coordinates (the share of differing
bases among the positions both have; pairs sharing fewer than ``min_overlap`` positions count as unrelated), and
three methods group them:

* ``learned`` (`LearnedLinkage`): single linkage whose merges between 1 and 5 % a model fitted on labelled barcodes
  accepts or refuses, from the two groups' distances, diversities, sizes and kinds of difference;
* ``single``: single linkage cut at a threshold, i.e. the connected components of the graph joining barcodes closer
  than it. A species' haplotypes are usually chained by close intermediates even where its extremes are far apart;
* ``upgma``: average linkage on the dense matrix (up to `DENSE_LIMIT` barcodes), the textbook baseline at 2 %.

``learned`` and ``single`` need only the close pairs, so they run past the dense matrix's limit on a sparse graph of
candidate neighbours (FAISS over k-mer embeddings, exact p-distances on the candidates); the candidates are
approximate, but on the real ``test+test_unseen`` the sparse graph gives the dense matrix's clusters.
Thresholds and the merge model are given or fitted on labelled records that are *not* the ones being delimited
(e.g. ``val+val_unseen+train``): nothing here reads the labels of the barcodes being delimited.

    from bioscan5m.delimitation import LearnedLinkage, calibrate_threshold, delimit_barcodes
    putative = LearnedLinkage().fit(labelled_barcodes, labelled_species).delimit(barcodes)
    putative = delimit_barcodes(barcodes, threshold=calibrate_threshold(labelled_barcodes, labelled_species).threshold)
"""

from .distances import DENSE_LIMIT, MIN_OVERLAP, neighbour_graph, p_distances, pair_differences, pair_p_distances
from .learned import LearnedLinkage, single_linkage_tree
from .linkage import THRESHOLD_GRID, THRESHOLD_METHODS, Calibration, calibrate_threshold, delimit_barcodes
from .report import METHODS, barcode_gap, delimit, delimitation_summary, plot_barcode_gap

__all__ = ["delimit", "METHODS", "THRESHOLD_METHODS", "DENSE_LIMIT", "MIN_OVERLAP", "THRESHOLD_GRID", "Calibration",
           "LearnedLinkage", "delimit_barcodes", "calibrate_threshold", "delimitation_summary", "barcode_gap",
           "plot_barcode_gap", "p_distances", "pair_p_distances", "pair_differences", "neighbour_graph",
           "single_linkage_tree"]
