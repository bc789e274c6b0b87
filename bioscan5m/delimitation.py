"""Species delimitation without labels: barcodes grouped into putative species by a distance cut.

Taxonomists group unidentified barcodes into putative species (BOLD's BINs, ASAP, ABGD, the "2 % barcode gap").
Here the distance between two barcodes is the ungapped p-distance in COI-5P reference coordinates (the share of
differing bases among the positions both have; pairs that share fewer than ``min_overlap`` positions count as
unrelated), and two methods cut it:

* ``single`` (default): single linkage, i.e. the connected components of the graph joining barcodes closer than
  the threshold. A species' haplotypes are usually chained by close intermediates even where its extremes are far
  apart, which average linkage splits. It needs only the close pairs, so it runs on a sparse graph of candidate
  neighbours (FAISS over k-mer embeddings, exact p-distances on the candidates) at any size, with the same answer as
  the dense matrix;
* ``upgma``: average linkage on the dense matrix (up to `DENSE_LIMIT` barcodes), the textbook baseline at 2 %.

The threshold is given, or calibrated on labelled records that are *not* the ones being clustered (e.g.
``val+val_unseen``): the cut that best recovers their species (AMI). Nothing here reads the labels of the barcodes
being delimited.

    from bioscan5m.delimitation import delimit_barcodes, calibrate_threshold
    calibration = calibrate_threshold(val_barcodes, val_species)
    putative = delimit_barcodes(barcodes, threshold=calibration.threshold)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .evaluation.baselines import aligned_base_codes, one_hot_bases
from .evaluation.scoring import clustering_agreement, is_missing

METHODS = ("single", "upgma")
#: Barcodes above this many are refused by the dense methods (the matrix alone is ``4 n²`` bytes).
DENSE_LIMIT = 30_000
#: Positions two barcodes must share before their distance counts (shorter overlaps can match by chance).
MIN_OVERLAP = 100
#: Thresholds tried by `calibrate_threshold`: 0.5 % to 6 % in steps of 0.25 %.
THRESHOLD_GRID = tuple(np.round(np.arange(0.005, 0.0601, 0.0025), 4))


def p_distances(codes: np.ndarray, min_overlap: int = MIN_OVERLAP, chunk: int = 2048) -> np.ndarray:
    """The dense ``(n, n)`` float32 matrix of ungapped p-distances between `aligned_base_codes` rows; 1 for pairs
    sharing fewer than ``min_overlap`` positions."""
    if len(codes) > DENSE_LIMIT:
        raise ValueError(f"{len(codes):,} barcodes: the dense distance matrix stops at {DENSE_LIMIT:,}; use the "
                         "sparse path (method='single').")
    vectors = one_hot_bases(codes)
    present = (codes < 4).astype(np.float32)
    distances = np.empty((len(codes), len(codes)), dtype=np.float32)
    for start in range(0, len(codes), chunk):
        rows = slice(start, start + chunk)
        matches, overlap = vectors[rows] @ vectors.T, present[rows] @ present.T
        block = 1.0 - matches / np.maximum(overlap, 1.0)
        block[overlap < min_overlap] = 1.0
        distances[rows] = block
    np.fill_diagonal(distances, 0.0)
    return distances


def pair_p_distances(codes: np.ndarray, first: np.ndarray, second: np.ndarray, min_overlap: int = MIN_OVERLAP,
                     chunk: int = 200_000) -> np.ndarray:
    """The p-distances of the pairs ``(first[i], second[i])``, exactly as in `p_distances`."""
    distances = np.empty(len(first), dtype=np.float32)
    for start in range(0, len(first), chunk):
        a, b = codes[first[start:start + chunk]], codes[second[start:start + chunk]]
        both = (a < 4) & (b < 4)
        overlap = both.sum(axis=1)
        matches = (both & (a == b)).sum(axis=1)
        block = 1.0 - matches / np.maximum(overlap, 1)
        block[overlap < min_overlap] = 1.0
        distances[start:start + chunk] = block
    return distances


#: Barcodes with fewer positions than this are compared with every barcode exactly by `neighbour_graph`.
SHORT_BARCODE = 650


def neighbour_graph(codes: np.ndarray, sequences: Sequence[str], threshold: float, min_overlap: int = MIN_OVERLAP,
                    k: int = 32, progress: bool = False, chunk: int = 1024):
    """The sparse graph of barcode pairs closer than ``threshold``, with exact distances.

    Full-length barcodes find their candidates among their ``k`` nearest by cosine over 6-mer embeddings (FAISS);
    one whose candidates are all within the threshold is searched again with ``4 k``, and so on, so dense groups
    of near-identical barcodes (a species sampled many times) are followed to the edge of the graph. A fragment's
    k-mer profile is far from those of the full barcodes it lies inside, so barcodes shorter than
    `SHORT_BARCODE` positions are compared with every barcode, ``chunk`` at a time (two matrix products: shared
    identical bases and shared positions).
    """
    import faiss
    from scipy import sparse

    from .embedding import kmer_embeddings

    n = len(codes)
    present = (codes < 4).astype(np.float32)
    short = present.sum(axis=1) < SHORT_BARCODE
    first, second = [], []
    vectors = one_hot_bases(codes)
    for start in range(0, int(short.sum()), chunk):
        queries = np.flatnonzero(short)[start:start + chunk]
        matches, overlap = vectors[queries] @ vectors.T, present[queries] @ present.T
        close = (overlap >= min_overlap) & (1.0 - matches / np.maximum(overlap, 1.0) <= threshold)
        rows, columns = np.nonzero(close)
        rows = queries[rows]
        first.append(rows[rows != columns])
        second.append(columns[rows != columns])
    del vectors
    if progress:
        print(f"  neighbours: {int(short.sum()):,} barcodes shorter than {SHORT_BARCODE} positions compared with all")
    embeddings = np.ascontiguousarray(kmer_embeddings(sequences, k=6, svd_dims=64), dtype=np.float32)
    faiss.normalize_L2(embeddings)
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    pending, width = np.flatnonzero(~short), min(k, n)
    while len(pending):
        _, neighbours = index.search(embeddings[pending], width)
        rows = np.repeat(pending, width)
        columns = neighbours.ravel()
        keep = (columns >= 0) & (columns != rows)
        rows, columns = rows[keep], columns[keep]
        close = pair_p_distances(codes, rows, columns, min_overlap) <= threshold
        first.append(rows[close])
        second.append(columns[close])
        saturated = np.bincount(rows[close], minlength=n)[pending] >= width - 1
        if progress:
            print(f"  neighbours: {len(pending):,} barcodes searched at k={width}, {int(saturated.sum()):,} to widen")
        if width >= n:
            break
        pending, width = pending[saturated], min(4 * width, n)
    rows, columns = np.concatenate(first), np.concatenate(second)
    return sparse.coo_matrix((np.ones(len(rows), dtype=np.int32), (rows, columns)), shape=(n, n)).tocsr()


def delimit_barcodes(sequences: Sequence[str], threshold: float, method: str = "single",
                     min_overlap: int = MIN_OVERLAP, sparse: bool | None = None, progress: bool = False) -> np.ndarray:
    """Putative species of ``sequences``: a cluster id per barcode (0, 1, ... by first appearance).

    Args:
        threshold: the p-distance cut, e.g. ``0.02`` for the "2 %" rule.
        method: ``"single"`` (components of the threshold graph) or ``"upgma"`` (average linkage, dense only).
        sparse: for ``single``, build the threshold graph from candidate neighbours instead of the dense matrix
            (the same clusters; default: sparse above 5,000 barcodes, where the matrix would pass 100 MB).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown delimitation method {method!r}; choose from {', '.join(METHODS)}.")
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
        return _renumber(labels)
    from scipy.sparse.csgraph import connected_components

    if sparse is None:
        sparse = len(sequences) > 5_000
    if sparse:
        graph = neighbour_graph(codes, sequences, threshold, min_overlap, progress=progress)
    else:
        from scipy import sparse as scipy_sparse

        graph = scipy_sparse.csr_matrix(p_distances(codes, min_overlap) <= threshold)
    _, labels = connected_components(graph, directed=False)
    return _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
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


def delimitation_summary(clusters: np.ndarray, labels: dict[str, np.ndarray], bins: np.ndarray | None = None) -> dict:
    """How putative species compare with the names: clusters vs species, AMI/ARI per rank (percent), the species
    split over several clusters and the clusters holding several species, and agreement with the BINs."""
    clusters = np.asarray(clusters)
    summary: dict = {"records": int(len(clusters)), "clusters": int(len(np.unique(clusters)))}
    for rank, values in labels.items():
        agreement = clustering_agreement(values, clusters)
        summary[rank] = {"named": agreement["num_classes"], "ami": 100 * agreement["ami"],
                         "ari": 100 * agreement["ari"], "unlabelled": agreement["num_missing"]}
    if "species" in labels:
        species = np.asarray(labels["species"], dtype=object)
        named = ~is_missing(species)
        pairs = {(str(s), int(c)) for s, c in zip(species[named], clusters[named])}
        per_species, per_cluster = {}, {}
        for name, cluster in pairs:
            per_species.setdefault(name, set()).add(cluster)
            per_cluster.setdefault(cluster, set()).add(name)
        summary["species_split"] = sorted(name for name, found in per_species.items() if len(found) > 1)
        summary["clusters_merging_species"] = sorted(cluster for cluster, names in per_cluster.items()
                                                     if len(names) > 1)
    if bins is not None:
        agreement = clustering_agreement(bins, clusters)
        summary["bins"] = {"count": agreement["num_classes"], "without_bin": agreement["num_missing"],
                           "ami_with_clusters": 100 * agreement["ami"]}
        if "species" in labels:
            summary["bins"]["species_ami"] = 100 * clustering_agreement(
                labels["species"], _codes_of(bins))["ami"]
    return summary


def _codes_of(values) -> np.ndarray:
    """Integer codes of labels, missing ones each in a group of their own (a record without a BIN is alone)."""
    values = np.asarray(values, dtype=object)
    missing = is_missing(values)
    codes = np.unique(values[~missing].astype(str), return_inverse=True)[1] if (~missing).any() else []
    out = np.empty(len(values), dtype=np.int64)
    out[~missing] = codes
    out[missing] = np.arange(missing.sum()) + (int(np.max(codes)) + 1 if len(codes) else 0)
    return out


def barcode_gap(sequences: Sequence[str], species: Sequence,
                min_overlap: int = MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Each named barcode's distance to its nearest conspecific (where its species has another barcode) and to
    its nearest barcode of another species: the two distributions whose gap a threshold should fall in."""
    species = np.asarray(species, dtype=object)
    known = ~is_missing(species)
    names = species[known].astype(str)
    distances = p_distances(aligned_base_codes([s for s, keep in zip(sequences, known) if keep]), min_overlap)
    same = names[:, None] == names[None, :]
    np.fill_diagonal(same, False)
    intra = np.where(same, distances, np.inf).min(axis=1)
    other = ~same
    np.fill_diagonal(other, False)
    inter = np.where(other, distances, np.inf).min(axis=1)
    return intra[np.isfinite(intra)], inter[np.isfinite(inter)]


def plot_barcode_gap(intra: np.ndarray, inter: np.ndarray, calibration: Calibration | None, threshold: float,
                     path) -> None:
    """The barcode-gap histogram with the chosen threshold, and the calibration curve beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if calibration is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    bins = np.linspace(0, 0.2, 81)
    ax.hist(np.clip(intra, 0, 0.2), bins=bins, alpha=0.6, label="nearest conspecific")
    ax.hist(np.clip(inter, 0, 0.2), bins=bins, alpha=0.6, label="nearest other species")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {100 * threshold:.2f} %")
    ax.set_yscale("log")
    ax.set_xlabel("ungapped p-distance (COI-5P frame; > 0.2 shown at 0.2)")
    ax.set_ylabel("barcodes (log scale)")
    ax.set_title(f"Barcode gap of the {len(intra):,} barcodes with a conspecific (names used for this figure only)",
                 fontsize=9)
    ax.legend()
    if calibration is not None:
        ax = axes[0, 1]
        percent = 100 * np.asarray(calibration.thresholds)
        ax.plot(percent, calibration.ami, marker="o", label="species AMI")
        ax.axvline(100 * calibration.threshold, color="black", linestyle="--")
        ax.set_xlabel("threshold (%)")
        ax.set_ylabel("species AMI (%)")
        twin = ax.twinx()
        twin.plot(percent, calibration.clusters, color="tab:orange", marker=".", label="putative species")
        twin.axhline(calibration.species, color="tab:orange", linestyle=":", label="named species")
        twin.set_ylabel("putative species")
        ax.set_title(f"Calibration ({calibration.records:,} records, {calibration.method})")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def delimit(data_root, out_dir, split: str = "test+test_unseen", method: str = "single",
            threshold: float | None = None, calibrate_on: str | None = None, min_overlap: int = MIN_OVERLAP,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Delimit the barcodes of ``split`` into putative species and write ``out_dir``:

    * ``clusters.tsv``: ``processid``, ``cluster`` for every record given;
    * ``species.tsv``: per named species, its records and the putative species they fall in (its splits);
    * ``summary.json``: method, threshold (and its calibration), clusters vs species, AMI/ARI per rank, the species
      split and the clusters merging species, agreement with the BINs;
    * ``barcode_gap.png``: the barcode gap of the records (names used for the figure only) with the threshold,
      and the calibration curve.

    Exactly one of ``threshold`` and ``calibrate_on`` (labelled splits that must not overlap ``split``) is given.
    """
    import json

    import pandas as pd

    from .data.metadata import read_metadata
    from .data.release import parse_split
    from .staging import check_output, staged_folder

    if (threshold is None) == (calibrate_on is None):
        raise ValueError("Give a threshold (e.g. 0.02) or splits to calibrate it on (e.g. val+val_unseen), not "
                         "both and not neither.")
    shared = set(parse_split(split)) & set(parse_split(calibrate_on)) if calibrate_on else set()
    if shared:
        raise ValueError(f"--calibrate-on shares {', '.join(sorted(shared))} with --split: the threshold must not "
                         "be chosen on the labels of the records being delimited.")
    out_dir = check_output(out_dir, overwrite, inputs=(data_root,))
    calibration = None
    if calibrate_on:
        labelled = read_metadata(data_root, split=calibrate_on)
        calibration = calibrate_threshold(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy(),
                                          method=method, min_overlap=min_overlap)
        threshold = calibration.threshold
        if progress:
            print(f"calibrated on {calibrate_on} ({calibration.records:,} records): threshold "
                  f"{100 * threshold:.2f} %")
    records = read_metadata(data_root, split=split)
    clusters = delimit_barcodes(records["dna_barcode"].tolist(), threshold, method=method, min_overlap=min_overlap,
                                progress=progress)
    ranks = [rank for rank in ("species", "genus", "family") if rank in records]
    summary = {"split": split, "method": method, "threshold": threshold, "min_overlap": min_overlap,
               "calibration": None if calibration is None else {
                   "splits": calibrate_on, "records": calibration.records, "species": calibration.species,
                   "thresholds": calibration.thresholds, "species_ami": calibration.ami,
                   "clusters": calibration.clusters},
               **delimitation_summary(clusters, {rank: records[rank].to_numpy() for rank in ranks},
                                      bins=records["dna_bin"].to_numpy() if "dna_bin" in records else None)}
    with staged_folder(out_dir, overwrite) as staging:
        pd.DataFrame({"processid": records["processid"], "cluster": clusters}).to_csv(
            staging / "clusters.tsv", sep="\t", index=False)
        named = records[["species"]].assign(cluster=clusters)
        named = named[~is_missing(named["species"].to_numpy(dtype=object))]
        per_species = named.groupby("species")["cluster"].agg(
            records="size", putative_species="nunique",
            clusters=lambda found: ",".join(str(c) for c in sorted(set(found))))
        per_species.sort_values(["putative_species", "records"], ascending=False).to_csv(
            staging / "species.tsv", sep="\t")
        (staging / "summary.json").write_text(json.dumps(summary, indent=2))
        if len(records) <= DENSE_LIMIT and "species" in records:
            intra, inter = barcode_gap(records["dna_barcode"].tolist(), records["species"].to_numpy(), min_overlap)
            plot_barcode_gap(intra, inter, calibration, threshold, staging / "barcode_gap.png")
    return summary


__all__ = ["delimit", "METHODS", "DENSE_LIMIT", "MIN_OVERLAP", "THRESHOLD_GRID", "Calibration", "delimit_barcodes",
           "calibrate_threshold", "delimitation_summary", "barcode_gap", "plot_barcode_gap", "p_distances",
           "pair_p_distances", "neighbour_graph"]
