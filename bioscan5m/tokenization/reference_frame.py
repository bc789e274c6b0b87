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
