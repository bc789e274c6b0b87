"""Cuts of a distance tree at a threshold: single linkage (any size, on the sparse graph) and UPGMA (dense), and
the threshold that best recovers the species of labelled records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..embedding import aligned_base_codes
from ..evaluation.scoring import clustering_agreement, is_missing
from .distances import DENSE_LIMIT, MIN_OVERLAP, SPARSE_ABOVE, neighbour_graph, p_distances

#: The cuts of a distance tree at a threshold.
THRESHOLD_METHODS = ("single", "upgma")
#: Thresholds tried by `calibrate_threshold`: 0.5 % to 6 % in steps of 0.25 %.
THRESHOLD_GRID = tuple(np.round(np.arange(0.005, 0.0601, 0.0025), 4))


def delimit_barcodes(sequences: Sequence[str], threshold: float, method: str = "single",
                     min_overlap: int = MIN_OVERLAP, sparse: bool | None = None, progress: bool = False) -> np.ndarray:
    """Putative species of ``sequences``: a cluster id per barcode (0, 1, ... by first appearance).

    Args:
        threshold: the p-distance cut, e.g. ``0.02`` for the "2 %" rule.
        method: ``"single"`` (components of the threshold graph) or ``"upgma"`` (average linkage, dense only).
        sparse: for ``single``, build the threshold graph from candidate neighbours instead of the dense matrix
            (the same clusters; default: sparse above 5,000 barcodes, where the matrix would pass 100 MB).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"Unknown delimitation method {method!r}; choose from {', '.join(THRESHOLD_METHODS)}.")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a p-distance between 0 and 1 (e.g. 0.02), not {threshold!r}.")
    if min_overlap < 1:
        raise ValueError(f"min_overlap must be a positive number of positions, not {min_overlap!r}.")
    sequences = list(sequences)
    if not sequences:
        raise ValueError("No barcodes to delimit.")
    codes = aligned_base_codes(sequences)
    if method == "upgma":
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        if len(sequences) == 1:
            return np.zeros(1, dtype=np.int64)
        condensed = squareform(p_distances(codes, min_overlap), checks=False).astype(np.float64)
        labels = fcluster(linkage(condensed, "average"), threshold, "distance")
        return renumber(labels)
    from scipy.sparse.csgraph import connected_components

    if sparse is None:
        sparse = len(sequences) > SPARSE_ABOVE
    if sparse:
        graph = neighbour_graph(codes, sequences, threshold, min_overlap, progress=progress)
    else:
        from scipy import sparse as scipy_sparse

        graph = scipy_sparse.csr_matrix(p_distances(codes, min_overlap) <= threshold)
    _, labels = connected_components(graph, directed=False)
    return renumber(labels)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0, 1, ... in order of first appearance (stable across methods and runs)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


@dataclass
class Calibration:
    """The threshold that best recovered the species of the calibration records, and the whole curve."""

    threshold: float
    method: str
    thresholds: list[float] = field(default_factory=list)
    ami: list[float] = field(default_factory=list)          # percent, per threshold
    clusters: list[int] = field(default_factory=list)       # per threshold
    records: int = 0
    species: int = 0


def calibrate_threshold(sequences: Sequence[str], species: Sequence, method: str = "single",
                        min_overlap: int = MIN_OVERLAP, grid: Sequence[float] = THRESHOLD_GRID) -> Calibration:
    """The threshold of ``grid`` whose delimitation of ``sequences`` agrees best (AMI) with their ``species``
    (records without a species are left out). Give records other than those you will delimit."""
    species = np.asarray(species, dtype=object)
    known = ~is_missing(species)
    sequences = [s for s, keep in zip(sequences, known) if keep]
    species = species[known].astype(str)
    if len(sequences) < 2:
        raise ValueError("Calibration needs at least two barcodes with a species label.")
    if len(sequences) > DENSE_LIMIT:
        raise ValueError(f"Calibration compares every pair: at most {DENSE_LIMIT:,} labelled barcodes, not "
                         f"{len(sequences):,}; calibrate on fewer records (e.g. val+val_unseen).")
    curve = Calibration(threshold=float("nan"), method=method, records=len(sequences),
                        species=len(set(species.tolist())))
    codes = aligned_base_codes(sequences)
    if method == "upgma":
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        tree = linkage(squareform(p_distances(codes, min_overlap), checks=False).astype(np.float64), "average")
        cut = lambda threshold: fcluster(tree, threshold, "distance")  # noqa: E731
    else:
        from scipy.sparse.csgraph import connected_components

        distances = p_distances(codes, min_overlap)
        cut = lambda threshold: connected_components(distances <= threshold, directed=False)[1]  # noqa: E731
    for threshold in grid:
        labels = cut(float(threshold))
        curve.thresholds.append(float(threshold))
        curve.ami.append(100 * clustering_agreement(species, labels)["ami"])
        curve.clusters.append(int(len(np.unique(labels))))
    curve.threshold = curve.thresholds[int(np.argmax(curve.ami))]
    return curve
