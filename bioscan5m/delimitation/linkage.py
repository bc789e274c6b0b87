"""Cuts of a distance tree at a threshold: single linkage (dense, or on the sparse graph) and UPGMA (dense), and
the threshold that best recovers the species of labelled records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..embedding import aligned_base_codes
from ..evaluation.scoring import clustering_agreement, is_missing
from .distances import (DENSE_LIMIT, MIN_OVERLAP, SPARSE_ABOVE, check_min_overlap, checked_barcodes, close_pairs,
                        p_distances)

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
            (default: sparse above 5,000 barcodes, where the matrix would pass 100 MB). ``upgma`` has no sparse
            form and refuses ``sparse=True``.
    """
    _check_options(method, min_overlap)
    check_threshold(threshold)
    if method == "upgma" and sparse:
        raise ValueError("UPGMA needs the dense distance matrix: sparse=True is for single linkage.")
    sequences = checked_barcodes(sequences)
    codes = aligned_base_codes(sequences)
    if method == "upgma":
        return renumber(_upgma_cut(_upgma_tree(codes, min_overlap), threshold))
    if sparse is None:
        sparse = len(sequences) > SPARSE_ABOVE
    first, second, _ = close_pairs(codes, sequences, threshold, min_overlap, sparse=sparse, progress=progress)
    return renumber(_components(len(codes), first, second))


def _check_options(method: str, min_overlap: int) -> None:
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"Unknown delimitation method {method!r}; choose from {', '.join(THRESHOLD_METHODS)}.")
    check_min_overlap(min_overlap)


def check_threshold(threshold: float) -> None:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a p-distance between 0 and 1 (e.g. 0.02), not {threshold!r}.")


def _upgma_tree(codes: np.ndarray, min_overlap: int) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    if len(codes) < 2:
        return np.zeros((0, 4))
    return linkage(squareform(p_distances(codes, min_overlap), checks=False).astype(np.float64), "average")


def _upgma_cut(tree: np.ndarray, threshold: float) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster

    return fcluster(tree, threshold, "distance") if len(tree) else np.zeros(1, dtype=np.int64)


def _components(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The connected components of the graph on ``n`` barcodes with edges ``(first[i], second[i])``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


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
    _check_options(method, min_overlap)
    grid = [float(threshold) for threshold in grid]
    if not grid:
        raise ValueError("The grid of thresholds to calibrate on is empty.")
    for threshold in grid:
        check_threshold(threshold)
    sequences = list(sequences)
    species = np.asarray(species, dtype=object)
    if len(sequences) != len(species):
        raise ValueError(f"{len(sequences):,} barcodes but {len(species):,} species labels: give one per barcode.")
    known = np.flatnonzero(~is_missing(species))
    if len(known) < 2:
        raise ValueError("Calibration needs at least two barcodes with a species label.")
    if len(known) > DENSE_LIMIT:
        raise ValueError(f"Calibration compares every pair: at most {DENSE_LIMIT:,} labelled barcodes, not "
                         f"{len(known):,}; calibrate on fewer records (e.g. val+val_unseen).")
    sequences = checked_barcodes([sequences[i] for i in known])
    species = species[known].astype(str)
    curve = Calibration(threshold=float("nan"), method=method, records=len(sequences),
                        species=len(set(species.tolist())))
    codes = aligned_base_codes(sequences)
    if method == "upgma":
        tree = _upgma_tree(codes, min_overlap)
        cut = lambda threshold: _upgma_cut(tree, threshold)  # noqa: E731
    else:
        # The pairs under the largest threshold once; each cut keeps those under its own.
        first, second, distances = close_pairs(codes, sequences, max(grid), min_overlap)
        cut = lambda threshold: _components(len(codes), first[distances <= threshold],  # noqa: E731
                                            second[distances <= threshold])
    for threshold in grid:
        labels = cut(threshold)
        curve.thresholds.append(threshold)
        curve.ami.append(100 * clustering_agreement(species, labels)["ami"])
        curve.clusters.append(int(len(np.unique(labels))))
    curve.threshold = curve.thresholds[int(np.argmax(curve.ami))]
    return curve
