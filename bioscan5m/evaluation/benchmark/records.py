"""The records a benchmark scores: barcodes cleaned and de-duplicated as each protocol says, per split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...data.derived import first_of_each_barcode
from ...data.release import MAX_NUCLEOTIDES, TARGET_COLUMNS


CLUSTER_RANKS = tuple(r for r in TARGET_COLUMNS if r != "phylum")
RANK_TITLES = {"class": "class", "order": "order", "family": "family", "subfamily": "subfamily", "genus": "genus",
               "species": "species", "dna_bin": "BIN"}


def clean_barcodes(barcodes, max_nucleotides: int | None = MAX_NUCLEOTIDES) -> list[str]:
    """Barcodes cut to ``max_nucleotides`` then stripped of trailing ``N`` (the ZSC and retrieval preprocessing)."""
    return [str(b)[:max_nucleotides].rstrip("N") for b in barcodes]


def unique_barcode_records(frame, dedup: str = "barcodebert"):
    """Records with a barcode not seen before, as in BarcodeBERT's data split (see the module docstring)."""
    if dedup == "barcodebert":
        return frame[first_of_each_barcode(frame["dna_barcode"])]
    if dedup == "per-split":
        key = frame["dna_barcode"].str[:MAX_NUCLEOTIDES].str.strip("N")
        return frame[~(frame["split"] + ":" + key).duplicated()]
    raise ValueError(f"Unknown dedup protocol {dedup!r}; choose 'barcodebert' or 'per-split'.")


@dataclass
class RecordSet:
    """Records of one role (e.g. retrieval keys): cleaned sequences and integer labels per rank."""

    name: str
    sequences: list[str]
    labels: dict[str, np.ndarray]
    order_names: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)


def _record_set(name: str, frame) -> RecordSet:
    return RecordSet(name, clean_barcodes(frame["dna_barcode"]),
                     {r: frame[f"{r}_index"].to_numpy() for r in TARGET_COLUMNS},
                     frame["order"].astype(object).fillna("").to_numpy())


def load_benchmark_records(root, dedup: str = "barcodebert", max_records_per_split: int | None = None,
                           tasks: Sequence[str] = ("classification", "clustering", "retrieval")) -> dict:
    """The record sets each task needs, read from a release root.

    ``max_records_per_split`` keeps only the first records of every split (for quick runs and tests).
    """
    from ...data.metadata import read_metadata

    frame = read_metadata(root, split="all", max_nucleotides=None)
    if max_records_per_split is not None:
        frame = frame.groupby("split", sort=False).head(max_records_per_split)
    by_split = lambda f, *names: f[f["split"].isin(names)]  # noqa: E731
    sets = {}
    if "classification" in tasks:
        unique = unique_barcode_records(frame, dedup)
        sets["classification"] = {s: _record_set(f"{s} (unique barcodes)", by_split(unique, s))
                                  for s in ("train", "test", "test_unseen")}
    if "clustering" in tasks:
        sets["clustering"] = _record_set("test+test_unseen", by_split(frame, "test", "test_unseen"))
    if "retrieval" in tasks:
        sets["retrieval"] = {"keys": _record_set("train+key_unseen", by_split(frame, "train", "key_unseen")),
                             "seen": _record_set("test", by_split(frame, "test")),
                             "unseen": _record_set("test_unseen", by_split(frame, "test_unseen"))}
    for role, value in sets.items():
        for record_set in (value.values() if isinstance(value, dict) else [value]):
            if len(record_set) == 0:
                raise ValueError(f"{root}: no records for {role} ({record_set.name}); the release lacks those splits.")
    return sets


def read_records(root, split: str) -> RecordSet:
    """All records of a split expression (e.g. ``test+test_unseen``), barcodes cleaned as for clustering."""
    from ...data.metadata import read_metadata

    frame = read_metadata(root, split=split, max_nucleotides=None)
    if frame.empty:
        raise ValueError(f"{root}: split {split!r} holds no records.")
    return _record_set(split, frame)


