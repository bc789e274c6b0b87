"""Distances between barcodes in COI-5P reference coordinates, dense or as a sparse threshold graph."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..embedding import one_hot_bases
from ..evaluation.scoring import is_missing

#: Barcodes above this many are refused by the dense methods (the matrix alone is ``4 n²`` bytes).
DENSE_LIMIT = 30_000
#: Above this many barcodes the close pairs come from the sparse graph unless told (the matrix would pass 100 MB).
SPARSE_ABOVE = 5_000
#: Positions two barcodes must share before their distance counts (shorter overlaps can match by chance).
MIN_OVERLAP = 100


#: Positions of the COI-5P frame barcodes are placed in (`aligned_base_codes`).
FRAME_POSITIONS = 660


def check_min_overlap(min_overlap: int) -> None:
    """Refuse a ``min_overlap`` no two barcodes could meet (below one position, or beyond the frame)."""
    if not 1 <= min_overlap <= FRAME_POSITIONS:
        raise ValueError(f"min_overlap must be a number of shared positions from 1 to {FRAME_POSITIONS} (the COI-5P "
                         f"frame), not {min_overlap!r}.")


def checked_barcodes(sequences: Sequence[str]) -> list[str]:
    """``sequences`` as a list (read by position, as the labels beside them are), refusing missing barcodes."""
    sequences = list(sequences)
    if not sequences:
        raise ValueError("No barcodes to delimit.")
    missing = np.flatnonzero(is_missing(np.asarray(sequences, dtype=object)))
    if len(missing):
        raise ValueError(f"{len(missing):,} of the barcodes are missing (the first at position {missing[0]}): "
                         "give records with a DNA barcode.")
    return sequences


def _p_distance(matches: np.ndarray, overlap: np.ndarray, min_overlap: int) -> np.ndarray:
    """float32 p-distances from counts of identical and of shared positions, divided in float64 so that every path
    (matrix products, pairs) rounds alike and a pair at a threshold is on the same side of it in each."""
    distances = (1.0 - matches.astype(np.float64) / np.maximum(overlap, 1)).astype(np.float32)
    distances[overlap < min_overlap] = 1.0
    return distances


def p_distances(codes: np.ndarray, min_overlap: int = MIN_OVERLAP, chunk: int = 2048,
                others: np.ndarray | None = None) -> np.ndarray:
    """The dense ``(n, n)`` float32 matrix of ungapped p-distances between `aligned_base_codes` rows; 1 for pairs
    sharing fewer than ``min_overlap`` positions. With ``others``, the ``(n, len(others))`` matrix from each row of
    ``codes`` to each row of ``others``."""
    columns = len(codes) if others is None else len(others)
    if len(codes) * columns > DENSE_LIMIT ** 2:
        raise ValueError(f"{len(codes):,} × {columns:,} barcodes: the dense distance matrix stops at "
                         f"{DENSE_LIMIT:,}²; use the sparse graph (sparse=True, single or learned linkage).")
    vectors = one_hot_bases(codes)
    present = (codes < 4).astype(np.float32)
    other_vectors, other_present = (vectors, present) if others is None else (one_hot_bases(others),
                                                                              (others < 4).astype(np.float32))
    distances = np.empty((len(codes), len(other_vectors)), dtype=np.float32)
    for start in range(0, len(codes), chunk):
        rows = slice(start, start + chunk)
        distances[rows] = _p_distance(vectors[rows] @ other_vectors.T, present[rows] @ other_present.T, min_overlap)
    if others is None:
        np.fill_diagonal(distances, 0.0)
    return distances


def pair_p_distances(codes: np.ndarray, first: np.ndarray, second: np.ndarray, min_overlap: int = MIN_OVERLAP,
                     chunk: int = 200_000) -> np.ndarray:
    """The p-distances of the pairs ``(first[i], second[i])``, exactly as in `p_distances`."""
    distances = np.empty(len(first), dtype=np.float32)
    for start in range(0, len(first), chunk):
        a, b = codes[first[start:start + chunk]], codes[second[start:start + chunk]]
        both = (a < 4) & (b < 4)
        distances[start:start + chunk] = _p_distance((both & (a == b)).sum(axis=1), both.sum(axis=1), min_overlap)
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

    from ..embedding import kmer_embeddings

    if k < 1:
        raise ValueError(f"k must be a positive number of candidates per barcode, not {k!r}.")
    n = len(codes)
    present = (codes < 4).astype(np.float32)
    short = np.flatnonzero(present.sum(axis=1) < SHORT_BARCODE)
    first, second = [], []
    if len(short):
        # Every barcode against the fragments, a block of barcodes at a time: the one-hot rows of all n would be
        # 10 kB each.
        fragment_vectors, fragment_present = one_hot_bases(codes[short]), present[short]
        for start in range(0, n, chunk * 32):
            columns = np.arange(start, min(start + chunk * 32, n))
            vectors = one_hot_bases(codes[columns])
            for query in range(0, len(short), chunk):
                rows = slice(query, query + chunk)
                distances = _p_distance(fragment_vectors[rows] @ vectors.T,
                                        fragment_present[rows] @ present[columns].T, min_overlap)
                row, column = np.nonzero(distances <= threshold)
                row, column = short[rows][row], columns[column]
                first.append(row[row != column])
                second.append(column[row != column])
    if progress:
        print(f"  neighbours: {len(short):,} barcodes shorter than {SHORT_BARCODE} positions compared with all")
    embeddings = np.ascontiguousarray(kmer_embeddings(sequences, k=6, svd_dims=64), dtype=np.float32)
    faiss.normalize_L2(embeddings)
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    pending, width = np.setdiff1d(np.arange(n), short), min(k, n)
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
    rows = np.concatenate(first) if first else np.zeros(0, dtype=np.int64)
    columns = np.concatenate(second) if second else np.zeros(0, dtype=np.int64)
    return sparse.coo_matrix((np.ones(len(rows), dtype=np.int32), (rows, columns)), shape=(n, n)).tocsr()


def close_pairs(codes: np.ndarray, sequences: Sequence[str], threshold: float, min_overlap: int = MIN_OVERLAP,
                sparse: bool = False, k: int = 32, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of barcodes closer than ``threshold``, sorted, with its p-distance: from the dense
    matrix or from `neighbour_graph` with ``k`` candidates per barcode."""
    if sparse:
        first, second = neighbour_graph(codes, sequences, threshold, min_overlap, k=k, progress=progress).nonzero()
        pairs = np.unique(np.sort(np.stack([first, second], axis=1), axis=1).astype(np.int64), axis=0)
        first, second = pairs[pairs[:, 0] < pairs[:, 1]].T
    else:
        first, second = np.nonzero(np.triu(p_distances(codes, min_overlap) <= threshold, 1))   # sorted, i < j
    return first, second, pair_p_distances(codes, first, second, min_overlap)


#: Codon positions 1 and 2 in the COI-5P frame (position 0 is a third codon position): changes there mostly
#: change the protein, and are rarer within a species than between species.
FIRST_TWO_CODON_POSITIONS = np.arange(FRAME_POSITIONS) % 3 != 0


def pair_differences(codes: np.ndarray, first: np.ndarray, second: np.ndarray,
                     chunk: int = 100_000) -> np.ndarray:
    """``(len(first), 3)`` float32: for each pair, its p-distance, the p-distance over codon positions 1-2 and
    the share of shared positions that differ by a transversion (purine against pyrimidine). Pairs without a
    shared position get 1."""
    out = np.empty((len(first), 3), dtype=np.float32)
    slow = FIRST_TWO_CODON_POSITIONS[:codes.shape[1]]
    for start in range(0, len(first), chunk):
        a, b = codes[first[start:start + chunk]], codes[second[start:start + chunk]]
        both = (a < 4) & (b < 4)
        differ = both & (a != b)
        transversion = differ & (a % 2 != b % 2)          # A=0, G=2 are purines; C=1, T=3 pyrimidines
        overlap = both.sum(axis=1)
        overlap_slow = both[:, slow].sum(axis=1)
        block = out[start:start + chunk]
        block[:, 0] = np.where(overlap > 0, differ.sum(axis=1) / np.maximum(overlap, 1), 1.0)
        block[:, 1] = np.where(overlap_slow > 0, differ[:, slow].sum(axis=1) / np.maximum(overlap_slow, 1), 1.0)
        block[:, 2] = np.where(overlap > 0, transversion.sum(axis=1) / np.maximum(overlap, 1), 1.0)
    return out
