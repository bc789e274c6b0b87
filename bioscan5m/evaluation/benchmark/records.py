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
    """Records of one role (e.g. retrieval keys): their ids and splits, cleaned sequences and integer labels per
    rank."""

    name: str
    sequences: list[str]
    labels: dict[str, np.ndarray]
    order_names: np.ndarray
    processids: np.ndarray
    splits: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)

    @classmethod
    def union(cls, name: str, record_sets: Sequence[RecordSet]) -> RecordSet:
        """Every distinct record (by processid) of ``record_sets``, ordered by processid."""
        processids = np.concatenate([s.processids for s in record_sets])
        _, keep = np.unique(processids, return_index=True)
        pick = lambda field: np.concatenate([getattr(s, field) for s in record_sets])[keep]  # noqa: E731
        sequences = [s for record_set in record_sets for s in record_set.sequences]
        return cls(name, [sequences[i] for i in keep],
                   {r: np.concatenate([s.labels[r] for s in record_sets])[keep] for r in record_sets[0].labels},
                   pick("order_names"), processids[keep], pick("splits"))


def _record_set(name: str, frame) -> RecordSet:
    return RecordSet(name, clean_barcodes(frame["dna_barcode"]),
                     {r: frame[f"{r}_index"].to_numpy() for r in TARGET_COLUMNS},
                     frame["order"].astype(object).fillna("").to_numpy(),
                     frame["processid"].astype(str).to_numpy(), frame["split"].astype(str).to_numpy())


#: The open-world protocol: at every rank, queries whose taxon one rank below is absent from the keys.
OPEN_WORLD_TASKS = ("species | species in keys", "genus | species absent", "family | genus absent",
                    "order | family absent")


def open_world_sets(unique, seed: int = 0, held_out_fraction: float = 0.2, max_queries: int = 2_000) -> dict:
    """The open-world tasks, each ``{"keys", "queries", "rank"}``, from unique-barcode records.

    ``species | species in keys``: keys ``train``, queries ``test`` (the paper's species@test).
    ``genus | species absent``: keys ``train``, queries ``test_unseen`` (the paper's genus@test_unseen).
    ``family | genus absent``: whole genera of ``train`` + ``test`` (a fraction, chosen with ``seed`` among genera
    whose family keeps another genus) are held out of the keys; their records are the queries, their family the
    answer. ``order | family absent``: the same with families, their order the answer.
    Queries are capped at ``max_queries`` (drawn with ``seed``).
    """
    by_split = lambda *names: unique[unique["split"].isin(names)]  # noqa: E731
    train = by_split("train")
    tasks = {OPEN_WORLD_TASKS[0]: (train, by_split("test"), "species"),
             OPEN_WORLD_TASKS[1]: (train, by_split("test_unseen"), "genus")}
    pool = by_split("train", "test")
    rng = np.random.default_rng(seed)
    for name, (held, parent) in zip(OPEN_WORLD_TASKS[2:], (("genus", "family"), ("family", "order"))):
        labelled = pool.dropna(subset=[held, parent])
        parent_of = labelled.groupby(held)[parent].first()
        remaining = parent_of.value_counts().to_dict()  # taxa left in the keys per parent
        eligible = [taxon for taxon in sorted(parent_of.index) if remaining[parent_of[taxon]] >= 2]
        wanted, chosen = max(1, round(held_out_fraction * len(eligible))), set()
        for taxon in rng.permutation(eligible):
            if len(chosen) == wanted:
                break
            if remaining[parent_of[taxon]] >= 2:  # the parent must keep a taxon in the keys, or it is no answer
                chosen.add(taxon)
                remaining[parent_of[taxon]] -= 1
        out = labelled[held].isin(chosen)
        tasks[name] = (pool[~pool[held].isin(chosen)], labelled[out], parent)
    sets = {}
    for name, (keys, queries, rank) in tasks.items():
        if len(queries) > max_queries:
            queries = queries.sample(max_queries, random_state=seed)
        sets[name] = {"keys": _record_set(f"{name}: keys", keys), "queries": _record_set(f"{name}: queries", queries),
                      "rank": rank}
    return sets


def load_benchmark_records(root, dedup: str = "barcodebert", max_records_per_split: int | None = None,
                           tasks: Sequence[str] = ("classification", "clustering", "retrieval"), seed: int = 0) -> dict:
    """The record sets each task needs, read from a release root.

    ``max_records_per_split`` keeps only the first records of every split (for quick runs and tests); ``seed`` draws
    the taxa the open-world protocol holds out of its keys.
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
    if "open_world" in tasks:
        sets["open_world"] = open_world_sets(unique_barcode_records(frame, dedup), seed=seed)
    if "delimitation" in tasks:
        sets["delimitation"] = {"records": _record_set("test+test_unseen", by_split(frame, "test", "test_unseen")),
                                "calibration": _record_set("val+val_unseen", by_split(frame, "val", "val_unseen"))}
    if "retrieval" in tasks:
        sets["retrieval"] = {"keys": _record_set("train+key_unseen", by_split(frame, "train", "key_unseen")),
                             "seen": _record_set("test", by_split(frame, "test")),
                             "unseen": _record_set("test_unseen", by_split(frame, "test_unseen"))}
    for role, value in sets.items():
        for record_set in record_sets(value):
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


def record_sets(value) -> list[RecordSet]:
    """The record sets of one role of `load_benchmark_records` (a set, a mapping of sets, or of tasks)."""
    if isinstance(value, RecordSet):
        return [value]
    if isinstance(value, dict):
        return [record_set for item in value.values() for record_set in record_sets(item)]
    return []  # an open-world task's rank name

