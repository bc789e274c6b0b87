"""What one pass over the whole metadata CSV gives, cached per file: label vocabularies, split sizes, each record's
split, and the barcode masks of the two de-duplication rules.

Each is kept beside the ``datasets`` cache, keyed by the CSV's path, size and modification time (and the options it
depends on), so a changed file or option is never answered from a stale entry, and an unreadable entry is recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import release
from .caching import cache_folder, write_atomically
from .metadata import MetadataError, MetadataSource, check_max_nucleotides, check_records, iter_batches


def _derived_cache_path(kind: str, key: tuple, suffix: str) -> Path:
    """Where data derived from one CSV is kept: the datasets cache, keyed by the CSV's path, size, modification
    time and the options it depends on, so a changed file or option never reads a stale result."""
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    return cache_folder("metadata") / f"{kind}-{digest}{suffix}"


@functools.lru_cache(maxsize=8)
def _profile(stamp: tuple[str, int, int], source: MetadataSource) -> dict:
    # One pass over the whole CSV (seconds on the full release) collects the labels, the split sizes and each
    # record's split, with the records' path fields and split names checked on the way; the result is kept in the
    # datasets cache.
    cache = _derived_cache_path("metadata-profile", stamp, ".json")
    codes_cache = _derived_cache_path("split-codes", stamp, ".npy")
    if cache.is_file() and codes_cache.is_file():
        try:
            profile = json.loads(cache.read_text())
            return {"vocabularies": {c: tuple(v) for c, v in profile["vocabularies"].items()},
                    "split_counts": dict(profile["split_counts"]), "split_codes": codes_cache}
        except (ValueError, KeyError, AttributeError):
            pass  # an unreadable cache entry is recomputed, never trusted
    from tqdm.auto import tqdm

    values: dict[str, set[str]] = {c: set() for c in release.TARGET_COLUMNS}
    codes = []
    batches = iter_batches(source, ("processid", "chunk", "split", *release.TARGET_COLUMNS))
    with tqdm(desc=f"Reading the labels of {Path(source.path).name} (once per file)", unit=" records",
              unit_scale=True, leave=False, disable=None) as bar:  # no bar when not on a terminal
        for first_row, batch in batches:
            check_records(source, first_row, batch)
            for column in release.TARGET_COLUMNS:
                values[column].update(pc.unique(batch.column(column)).to_pylist())
            codes.append(pc.index_in(batch.column("split"), value_set=_SPLIT_NAMES).to_numpy().astype(np.uint8))
            bar.update(batch.num_rows)
    codes = np.concatenate(codes) if codes else np.zeros(0, np.uint8)
    counts = dict(zip(release.SPLITS, np.bincount(codes, minlength=len(release.SPLITS)).tolist()))
    profile = {"vocabularies": {c: tuple(sorted(v - {""})) for c, v in values.items()}, "split_counts": counts}
    write_atomically(codes_cache, lambda path: _save_array(path, codes))
    write_atomically(cache, lambda path: path.write_text(json.dumps(profile)))
    return {**profile, "split_codes": codes_cache}


_SPLIT_NAMES = pa.array(release.SPLITS)


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object, since np.save would append ".npy" to a staging name
        np.save(handle, array, allow_pickle=False)


def label_vocabularies(source: MetadataSource) -> dict[str, tuple[str, ...]]:
    """Sorted distinct labels per target column over the whole CSV (all splits).

    Sorting matches the pandas ``category`` codes used by `bioscan-dataset`, so ``{rank}_index`` values are
    interchangeable with that package's and identical across splits. Cached per CSV (see `_profile`).
    """
    return _profile(source.stamp(), source)["vocabularies"]


def count_records_per_split(source: MetadataSource) -> dict[str, int]:
    """Number of records per split in the CSV (every official split, 0 where empty). Cached per CSV."""
    return dict(_profile(source.stamp(), source)["split_counts"])


def split_codes(source: MetadataSource) -> np.ndarray:
    """Each record's split as its position in ``release.SPLITS`` (uint8), in file order. Cached per CSV."""
    for _ in range(2):
        path = _profile(source.stamp(), source)["split_codes"]
        try:
            codes = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            codes = None
        if codes is not None and codes.dtype == np.uint8 and codes.shape == (sum(count_records_per_split(source).values()),):
            return codes
        path.unlink(missing_ok=True)  # unreadable or stale: recomputed with the rest of the profile
        _profile.cache_clear()
    raise MetadataError(f"{path}: the split of each record of {source} could not be cached.")


def barcode_reduction_mask(source: MetadataSource, max_nucleotides: int | None) -> np.ndarray:
    """Which records survive ``reduce_repeated_barcodes``, over the whole CSV in file order.

    Same semantics as `bioscan-dataset`: truncate to ``max_nucleotides``, shuffle all records with seed 0,
    keep the first record of each barcode after stripping trailing ``N``, restore file order, and only then
    filter by split. Barcodes are compared through a 64-bit hash so memory is 8 bytes per record. The mask
    (one byte per record) is cached per CSV and ``max_nucleotides``.
    """
    check_max_nucleotides(max_nucleotides)
    cache = _derived_cache_path("barcode-mask", (*source.stamp(), max_nucleotides), ".npy")
    if cache.is_file():
        try:
            keep = np.load(cache, allow_pickle=False)
            if keep.dtype == np.bool_ and keep.shape == (sum(count_records_per_split(source).values()),):
                return keep
        except (OSError, ValueError):
            pass
    keep = _barcode_reduction_mask(source, max_nucleotides)
    write_atomically(cache, lambda path: _save_array(path, keep))
    return keep


def first_of_each_barcode(barcodes) -> np.ndarray:
    """BarcodeBERT's rule: the first record of each barcode in file order, barcodes compared after stripping
    trailing ``N`` (a boolean mask over ``barcodes``, a pandas Series of strings)."""
    return ~barcodes.str.rstrip("N").duplicated().to_numpy()


def _barcode_reduction_mask(source: MetadataSource, max_nucleotides: int | None) -> np.ndarray:
    import pandas as pd

    hashes = []
    for _, batch in iter_batches(source, ("dna_barcode",)):
        barcodes = batch.column("dna_barcode")
        if max_nucleotides is not None:
            barcodes = pc.utf8_slice_codeunits(barcodes, 0, max_nucleotides)
        stripped = pc.utf8_rtrim(barcodes, characters="N")
        hashes.append(pd.util.hash_array(stripped.to_numpy(zero_copy_only=False)))
    keys = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    order = np.random.RandomState(0).permutation(len(keys))
    first_in_shuffle = ~pd.Series(keys[order]).duplicated().to_numpy()
    keep = np.zeros(len(keys), dtype=bool)
    keep[order[first_in_shuffle]] = True
    return keep
