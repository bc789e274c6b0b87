"""The BarcodeBERT data protocol on a BIOSCAN-5M release: unique barcodes, fixed roles for the splits.

As in BarcodeBERT's ``data_split.py``: trailing ``N`` are stripped, then duplicate barcodes are dropped over the
whole release keeping the first occurrence in file order, *before* the records are divided by split. So a barcode
seen in ``train`` never reappears in ``test``, and every reported figure is on unique barcodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

#: Split roles of the protocol: pretraining pool, supervised train/val/test (seen species), unseen queries.
ROLES = {
    "pretrain": ("pretrain", "other_heldout"),
    "train": ("train",),
    "val": ("val",),
    "test": ("test",),
    "test_unseen": ("test_unseen",),
}


@dataclass(frozen=True)
class BarcodeSets:
    """Unique barcodes of each role, with the metadata columns (``dna_barcode``, ``{rank}``, ``{rank}_index``)."""

    frames: dict[str, pd.DataFrame]
    label_names: dict[str, tuple[str, ...]]

    def __getitem__(self, role: str) -> pd.DataFrame:
        return self.frames[role]

    def labelled(self, role: str, rank: str) -> pd.DataFrame:
        """The barcodes of ``role`` that carry a ``rank`` label."""
        frame = self.frames[role]
        return frame[frame[f"{rank}_index"] >= 0]


def unique_barcodes(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip trailing N and keep the first record of each barcode (file order), as BarcodeBERT does."""
    from ..data.derived import first_of_each_barcode

    frame = frame.assign(dna_barcode=frame["dna_barcode"].str.rstrip("N"))
    frame = frame[frame["dna_barcode"].str.len() > 0]
    return frame[first_of_each_barcode(frame["dna_barcode"])].reset_index(drop=True)


def load_barcode_sets(root: str | os.PathLike, roles: tuple[str, ...] = tuple(ROLES)) -> BarcodeSets:
    """Read the release once and split its unique barcodes into the protocol's roles."""
    from ..data.derived import label_vocabularies
    from ..data.metadata import find_metadata, read_metadata

    records = unique_barcodes(read_metadata(root, split="all", max_nucleotides=None))
    frames = {role: records[records["split"].isin(ROLES[role])].reset_index(drop=True) for role in roles}
    empty = [role for role, frame in frames.items() if frame.empty]
    if empty:
        raise ValueError(f"{root}: no barcodes for {', '.join(empty)} (splits "
                         f"{', '.join(s for role in empty for s in ROLES[role])}).")
    return BarcodeSets(frames, label_vocabularies(find_metadata(root)))
