"""Barcodes placed in the coordinates of a reference COI-5P barcode before they are cut into k-mers.

Non-overlapping k-mers depend on where a barcode starts: two barcodes of one species that start a single
nucleotide apart share no k-mer at all. Real barcodes do start at different places (in BOLD's insect barcodes ~40 %
do not start at the usual first base of the COI-5P region: 1 to 13 bases later or earlier, or with extra upstream
sequence). Reading every start offset (``BarcodeBertModel.embed(reading_frames=k)``) costs k times the compute.
Aligning is cheaper and better: find where each barcode sits on a reference barcode, then pad its front with ``N``
(or drop bases before the reference start) so that base ``i`` of the result is reference position ``i``. Every
barcode's k-mers are then cut at the same reference positions, and token ``j`` is the same stretch of the gene in
every barcode.

The placement is an ungapped match of the barcode's first 150 bases against every shift of the reference (the
next 150 where those lie upstream of the region): the shift with the highest identity wins. Insect COI-5P barcodes
have almost no indels, and the true shift scores ~85-90 % identity where wrong ones score ~30 %. Two one-hot matrix
products score all shifts of a whole batch. Barcodes that match no shift well (``min_identity``; not COI-5P, or
too short) are left as they are.

For comparing barcodes base by base (the aligned identity encoder, species delimitation), `place_bases` also
places each later stretch of the barcode on its own, so that an insertion or deletion does not shift every base
after it; the tokenizer keeps the whole-barcode placement, so the models trained on it see the tokens they saw.

This module imports nothing from ``bioscan5m``: it is copied next to saved tokenizers and must run on its own.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Consensus of the 3,944 complete (658 nt, no leading N) insect barcodes in the ``pretrain`` split of the
#: ``bold-insects`` fixture (BOLD COI-5P; Diptera, Lepidoptera, Coleoptera, Hymenoptera): the majority base at each
#: position. Position 0 is the first base of the standard COI-5P barcode region (after the LCO1490 primer).
COI_5P_REFERENCE = (
    "AACATTATATTTTATTTTTGGAGTTTGAGCAGGAATAGTAGGAACTTCTTTAAGAATATTAATTCGAGCTGAATTAGGAAATCCTGGATCATTA"
    "ATTGGAGATGATCAAATTTATAATGTAATTGTAACAGCTCATGCTTTTATTATAATTTTTTTTATAGTAATACCAATTATAATTGGAGGATTTG"
    "GAAATTGATTAGTTCCTTTAATATTAGGAGCTCCTGATATAGCTTTCCCTCGAATAAATAATATAAGTTTTTGACTATTACCCCCTTCTTTAAC"
    "TCTATTAATTTCAAGAAGAATAGTAGAAAATGGAGCAGGAACAGGATGAACAGTTTACCCCCCTCTATCATCTAATATTGCTCATGGAGGAGCT"
    "TCAGTTGATTTAGCTATTTTTTCTCTACATTTAGCTGGAATTTCATCTATTTTAGGAGCTGTAAATTTTATTACAACAATTATTAATATACGAT"
    "CAAATGGAATAACTTTTGATCGAATACCTTTATTTGTTTGATCTGTAGTAATTACAGCTTTTTTATTACTTTTATCTTTACCAGTATTAGCTGG"
    "AGCTATTACTATATTATTAACAGATCGAAATTTAAATACTTCATTTTTTGATCCTGCTGGAGGAGGAGATCCAATTTTATATCAACATTTATTT"
)

_WINDOW = 150          # bases of a barcode matched against the reference at a time
_MIN_OVERLAP = 100     # shifts where fewer of those bases fall on the reference are not considered
_CHUNK = 4096          # barcodes scored at once: bounds the (barcodes, shifts) score matrices to ~20 MB
_CODE_OF_BYTE = np.full(256, 4, dtype=np.uint8)  # A C G T (any case) -> 0..3; anything else (N, IUPAC) -> 4
for _code, _letters in enumerate(("Aa", "Cc", "Gg", "Tt")):
    for _letter in _letters:
        _CODE_OF_BYTE[ord(_letter)] = _code


def _one_hot(codes: np.ndarray) -> np.ndarray:
    """``(n, w)`` base codes -> ``(n, 4w)`` float32 one-hot rows (code 4, no base, is all zeros)."""
    return (codes[:, :, None] == np.arange(4, dtype=np.uint8)).reshape(len(codes), -1).astype(np.float32)


@lru_cache(maxsize=4)
def _reference_windows(reference: str, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every shift ``d`` at which a ``window``-base stretch overlaps the reference by ``_MIN_OVERLAP`` bases
    (stretch base 0 = reference position ``d``), nearest shifts first, with the reference's one-hot bases under the
    stretch and which of them exist: ``(shifts, one_hot (S, 4w), present (S, w))``."""
    codes = _CODE_OF_BYTE[np.frombuffer(reference.encode("ascii"), dtype=np.uint8)]
    before = window - _MIN_OVERLAP
    shifts = np.arange(-before, len(reference) - _MIN_OVERLAP + 1)
    shifts = shifts[np.argsort(np.abs(shifts), kind="stable")]  # argmax ties go to the smallest shift
    padded = np.concatenate([np.full(before, 4, np.uint8), codes, np.full(window, 4, np.uint8)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)[shifts + before]
    return shifts, _one_hot(windows), (windows < 4).astype(np.float32)


def _best_shifts(stretches: list[str], reference: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Best shift and its identity for each ``window``-base stretch (0 identity: no shift overlaps enough)."""
    shifts, reference_one_hot, reference_present = _reference_windows(reference, window)
    grid = "".join([stretch.ljust(window, "N") for stretch in stretches]).encode("ascii", "replace")
    codes = _CODE_OF_BYTE[np.frombuffer(grid, dtype=np.uint8)].reshape(len(stretches), window)
    matches = _one_hot(codes) @ reference_one_hot.T                          # (n, S) identical bases
    overlap = (codes < 4).astype(np.float32) @ reference_present.T           # (n, S) bases on both sides
    identity = np.where(overlap >= _MIN_OVERLAP, matches / np.maximum(overlap, 1), 0.0)
    best = identity.argmax(axis=1)
    return shifts[best], identity[np.arange(len(stretches)), best]


def reference_offsets(sequences: list[str], reference: str = COI_5P_REFERENCE, min_identity: float = 0.5,
                      window: int = _WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Where each barcode starts on the reference: ``(offsets, identity)``.

    ``offsets[i] = d`` means base 0 of barcode ``i`` lies at reference position ``d`` (negative: the barcode starts
    ``-d`` bases upstream of the reference). ``identity[i]`` is the fraction of identical bases in the matched
    stretch at that offset (0 where nothing could be judged). The barcode's first ``window`` bases are matched
    first; a barcode they do not place with ``min_identity`` (a long stretch upstream of the region) is matched
    again with its next ``window`` bases, and so on. Sequences are expected clean (no gaps); case does not matter,
    N and IUPAC codes never match.
    """
    offsets = np.zeros(len(sequences), dtype=np.int64)
    identity = np.zeros(len(sequences))
    pending = np.arange(len(sequences))
    longest = max(map(len, sequences), default=0)
    for start in range(0, max(longest - _MIN_OVERLAP, 0) + 1, window):
        for chunk in range(0, len(pending), _CHUNK):
            rows = pending[chunk:chunk + _CHUNK]
            shifts, scores = _best_shifts([sequences[i][start:start + window] for i in rows], reference, window)
            better = scores > identity[rows]
            offsets[rows[better]] = shifts[better] - start
            identity[rows[better]] = scores[better]
        pending = pending[(identity[pending] < min_identity)
                          & (np.fromiter((len(sequences[i]) for i in pending), int, len(pending)) > start + window)]
        if not len(pending):
            break
    return offsets, identity


def align_to_reference(sequences: list[str], reference: str = COI_5P_REFERENCE, min_identity: float = 0.5,
                       window: int = _WINDOW) -> list[str]:
    """Each barcode placed in reference coordinates: base ``i`` of the result is reference position ``i``.

    A barcode starting ``d`` bases into the reference gets ``d`` leading ``N`` (no k-mer is cut across the gap
    between reference start and barcode start: those tokens are ``[UNK]``); one starting ``d`` bases upstream
    loses those ``d`` bases (they lie outside the barcode region the model reads). Barcodes whose best
    placement has less than ``min_identity`` identity are returned unchanged.
    """
    if not sequences:
        return []
    offsets, identity = reference_offsets(sequences, reference, min_identity, window)
    placed = []
    for sequence, offset, score in zip(sequences, offsets.tolist(), identity.tolist()):
        if score < min_identity:
            placed.append(sequence)
        elif offset >= 0:
            placed.append("N" * offset + sequence)
        else:
            placed.append(sequence[-offset:])
    return placed


def place_bases(sequences: list[str], length: int = 660, reference: str = COI_5P_REFERENCE, window: int = 100,
                radius: int = 24, min_gain: float = 0.2, min_identity: float = 0.6) -> np.ndarray:
    """Barcodes in reference coordinates as base codes ``(n, length)`` uint8 (0-3 for A, C, G, T; 4 where there is
    no base), placed piece by piece so that an insertion or deletion does not misplace every base after it.

    The barcode is placed as by `align_to_reference`; then each further stretch of ``window`` bases may move by up
    to ``radius`` positions, when that raises its identity with the reference by ``min_gain`` to at least
    ``min_identity`` (the true placement of a stretch scores ~0.85-0.9 and a wrong one ~0.3, so only a clear
    frameshift moves it), and the stretches after it follow. A deletion leaves positions without a base, an
    insertion's extra bases are overwritten. Barcodes that match no placement are kept as they are.
    """
    if len(sequences) > _CHUNK // 2:  # bounds the (barcodes, moves, window) arrays to ~100 MB
        return np.concatenate([place_bases(sequences[start:start + _CHUNK // 2], length, reference, window, radius,
                                           min_gain, min_identity) for start in range(0, len(sequences), _CHUNK // 2)])
    offsets, identity = reference_offsets(sequences, reference)
    offsets = np.where(identity >= 0.5, offsets, 0)
    longest = max(map(len, sequences), default=0)
    grid = "".join(sequence.ljust(longest, "N") for sequence in sequences).encode("ascii", "replace")
    bases = _CODE_OF_BYTE[np.frombuffer(grid, dtype=np.uint8)].reshape(len(sequences), longest)
    placed = np.full((len(sequences), length), 4, dtype=np.uint8)
    rows = np.arange(len(sequences))
    movable = identity >= 0.5
    for start in range(0, longest, window):
        stretch = bases[:, start:start + window]
        if start and movable.any():
            moved = _better_shifts(stretch, start + offsets, reference, radius, min_gain, min_identity)
            offsets = np.where(movable, offsets + moved, offsets)
        positions = start + offsets[:, None] + np.arange(stretch.shape[1])
        inside = (positions >= 0) & (positions < length) & (stretch < 4)
        placed[np.broadcast_to(rows[:, None], positions.shape)[inside], positions[inside]] = stretch[inside]
    return placed


def _better_shifts(stretch: np.ndarray, at: np.ndarray, reference: str, radius: int, min_gain: float,
                   min_identity: float, min_bases: int = 30) -> np.ndarray:
    """For each stretch whose base 0 sits at reference position ``at``: the move within ``radius`` that raises its
    identity with the reference by ``min_gain`` to ``min_identity``, else 0. Two one-hot matrix products score the
    stretches against every position of the reference; each stretch's band of moves is read off them."""
    first, reference_one_hot, reference_present = _placement_windows(reference, stretch.shape[1])
    matches = _one_hot(stretch) @ reference_one_hot.T                         # (n, P) identical bases
    counted = (stretch < 4).astype(np.float32) @ reference_present.T          # (n, P) bases on both sides
    identity = np.where(counted >= min_bases, matches / np.maximum(counted, 1), 0.0)
    # Moves sorted by distance from 0, so that the argmax prefers the smallest of tied moves.
    moves = np.arange(-radius, radius + 1)
    moves = moves[np.argsort(np.abs(moves), kind="stable")]
    columns = at[:, None] + moves[None, :] - first
    valid = (columns >= 0) & (columns < identity.shape[1])
    banded = np.where(valid, identity[np.arange(len(at))[:, None], np.clip(columns, 0, identity.shape[1] - 1)], 0.0)
    best = banded.argmax(axis=1)
    gain = banded[np.arange(len(at)), best] - banded[:, 0]
    better = (gain > min_gain) & (banded[np.arange(len(at)), best] >= min_identity)
    return np.where(better, moves[best], 0)


@lru_cache(maxsize=4)
def _placement_windows(reference: str, window: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The reference under a ``window``-base stretch starting at each position from ``1 - window`` to the
    reference's end: ``(first position, one_hot (P, 4 window), present (P, window))``."""
    codes = _CODE_OF_BYTE[np.frombuffer(reference.encode("ascii"), dtype=np.uint8)]
    padded = np.concatenate([np.full(window - 1, 4, np.uint8), codes, np.full(window, 4, np.uint8)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)[:len(codes) + window - 1]
    return 1 - window, _one_hot(windows), (windows < 4).astype(np.float32)
