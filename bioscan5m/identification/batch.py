"""Identifying many specimens at once: a plate's FASTA, a survey's folder of photographs, as a hit table.

    import bioscan5m
    table = bioscan5m.identify_many("runs/index", dna=bioscan5m.identification.iter_fasta("plate.fasta"))
    table[["query_id", "species", "species_confidence", "nearest_similarity", "possibly_undescribed", "error"]]

The input streams: FASTA records are read one at a time (a record is capped at a few barcode lengths, so neither
a 1 GB file nor a 1 GB line is ever held whole), embedded and searched ``batch_size`` at a time, and the rows are
written as they come. A record that cannot be identified gets its reason in the ``error`` column; the others are
still identified. The FASTA parser is this module's own: it keeps every per-record check of a pasted barcode
(``check_sequence``), reports a record by its number and header, and adds no dependency.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..data.release import ORDER_TO_SPECIES
from ..embedding import l2_normalize_rows
from ..staging import check_output, staged_file
from .inputs import MAX_BARCODE_NUCLEOTIDES, InputError, check_sequence, open_photo, parse_barcode
from .key_index import KeyIndex
from .prediction import check_counts, predict, resolve_index

#: Columns of the hit table, in order.
IDENTIFICATION_COLUMNS = ("query_id", *[c for rank in ORDER_TO_SPECIES for c in (rank, f"{rank}_confidence")],
                          "nearest_processid", "nearest_species", "nearest_bin", "nearest_similarity",
                          "possibly_undescribed", "error")
#: Output formats by file suffix.
TABLE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
#: A FASTA record's sequence text is read up to this many characters; past it the record is refused as too long.
MAX_RECORD_CHARACTERS = 4 * MAX_BARCODE_NUCLEOTIDES
#: Lines are read in pieces of at most this many bytes, so one enormous line is never held whole.
_READ_BYTES = 1 << 16
#: Photograph file suffixes taken from a folder.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


@dataclass
class FastaRecord:
    """One FASTA record as read: its id (the header's first word), its raw sequence text, and why it cannot be
    used (None when it can)."""

    id: str
    sequence: str
    error: str | None = None


def iter_fasta(path: str | os.PathLike) -> Iterator[FastaRecord]:
    """The records of a FASTA file (``.gz`` read compressed), one at a time, in file order.

    Records without a header id are named ``record N``. Sequence text before the first header, a header-only
    record, a non-UTF-8 line and a record longer than `MAX_RECORD_CHARACTERS` come back with their ``error`` set.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a FASTA file.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            yield from _records(handle, path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputError(f"{path}: not a whole gzip file ({error}); decompress it to check, or give the plain "
                         "FASTA.") from None


def _records(handle, path: Path) -> Iterator[FastaRecord]:
    """The records of an open binary FASTA file (see `iter_fasta`)."""
    record_id, parts, size, error, number, header_line = None, [], 0, None, 0, 0
    for line, line_number, at_start in _lines(handle):
        if line_number == header_line:
            continue  # the rest of a header longer than one read: its first word is already the id
        if at_start and line.startswith(b">"):
            if record_id is not None or parts:
                yield _record(record_id, number, parts, error)
            number, header_line = number + 1, line_number
            header, error = _decode(line[1:], path, line_number)
            record_id = (header.split() or [f"record {number}"])[0] if header else f"record {number}"
            parts, size = [], 0
            continue
        if record_id is None and line.strip():
            number += 1
            record_id, error = f"record {number}", f"{path.name} line {line_number}: sequence before the first '>' header"
        if error is not None or size > MAX_RECORD_CHARACTERS:
            continue
        text, error = _decode(line, path, line_number)
        size += len(text)
        if size > MAX_RECORD_CHARACTERS:
            error = (f"the record is over {MAX_RECORD_CHARACTERS:,} characters; a DNA barcode (COI-5P) is about "
                     f"658 nucleotides")
            parts = []
        elif error is None:
            parts.append(text)
    if record_id is not None or parts:
        yield _record(record_id, number, parts, error)


def _lines(handle) -> Iterator[tuple[bytes, int, bool]]:
    """``(piece, line number, starts the line)`` for each line of a binary file; a line longer than `_READ_BYTES`
    comes in several pieces with the same number."""
    number, at_start = 0, True
    while True:
        piece = handle.readline(_READ_BYTES)
        if not piece:
            return
        if at_start:
            number += 1
        yield piece.rstrip(b"\r\n"), number, at_start
        at_start = piece.endswith(b"\n")


def _decode(raw: bytes, path: Path, line_number: int) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return "", f"{path.name} line {line_number}: not UTF-8 text"


def _record(record_id, number, parts, error) -> FastaRecord:
    return FastaRecord(record_id or f"record {number}", "".join(parts), error)


def iter_photos(source: str | os.PathLike | Sequence) -> Iterator[tuple[str, Path]]:
    """``(query id, path)`` of each photograph: a folder's image files (sorted, none outside the folder), a text
    file listing one path per line (relative paths from the list's folder), or a sequence of paths."""
    if isinstance(source, (str, os.PathLike)):
        source = Path(source)
        if source.is_dir():
            root = source.resolve()
            for path in sorted(source.iterdir()):
                if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file() and path.resolve().is_relative_to(root):
                    yield path.name, path
            return
        if source.suffix.lower() in PHOTO_SUFFIXES:
            yield source.name, source
            return
        with open(source, encoding="utf-8") as listing:
            for line in listing:
                if line.strip():
                    path = Path(line.strip())
                    path = path if path.is_absolute() else source.parent / path
                    yield path.name, path
        return
    for item in source:
        yield Path(item).name, Path(item)


def identify_many(index: KeyIndex | str | os.PathLike, dna: Iterable | None = None, images: Iterable | None = None,
                  batch_size: int = 1024, vote_k: int = 25, key_modality: str = "dna", progress: bool = True):
    """Identify many specimens; the hit table as a ``pandas.DataFrame`` (columns `IDENTIFICATION_COLUMNS`).

    Args:
        index: a `KeyIndex` or its folder.
        dna: barcodes: strings (plain or one FASTA record each), `FastaRecord`s (e.g. from `iter_fasta`), or
            ``(query id, sequence)`` pairs.
        images: photographs: paths, PIL images, or ``(query id, photograph)`` pairs (e.g. from `iter_photos`).
            With ``dna`` too, the two are paired by position (one specimen each).
        batch_size: queries embedded and searched together.
        vote_k: nearest keys that vote for the labels (as in `identify`).
        key_modality: ``"dna"`` or ``"image"`` keys.
        progress: show a progress bar.
    """
    import pandas as pd

    rows = [row for batch in iter_identifications(index, dna, images, batch_size, vote_k, key_modality, progress)
            for row in batch]
    return pd.DataFrame(rows, columns=list(IDENTIFICATION_COLUMNS))


def iter_identifications(index, dna=None, images=None, batch_size: int = 1024, vote_k: int = 25,
                         key_modality: str = "dna", progress: bool = True) -> Iterator[list[dict]]:
    """`identify_many` as a stream: one list of table rows per batch of queries, in input order."""
    from tqdm.auto import tqdm

    check_counts(batch_size=batch_size, vote_k=vote_k)
    index = resolve_index(index)
    if dna is None and images is None:
        raise InputError("Nothing to identify: give barcodes (dna=...) and/or photographs (images=...).")
    if images is not None and "image" not in index.modalities:
        raise InputError(f"This index was built with a DNA-only model ({index.encoder.kind}), so it cannot identify "
                         "photographs; build one with a CLIBD model.")
    queries = _paired(dna, images)
    with tqdm(desc="identifying", unit="query", disable=not progress) as bar:
        while True:
            batch = [query for _, query in zip(range(batch_size), queries)]
            if not batch:
                return
            yield _identify_batch(index, batch, vote_k, key_modality)
            bar.update(len(batch))


def _paired(dna, images) -> Iterator[dict]:
    """Each query as ``{"id", "dna", "image", "error"}``, the barcode checked, the photograph still unopened."""
    dna_items = iter(dna) if dna is not None else None
    image_items = iter(images) if images is not None else None
    number = 0
    while True:
        number += 1
        query = {"id": None, "dna": None, "image": None, "error": None}
        if dna_items is not None:
            item = next(dna_items, _END)
            if item is _END:
                if image_items is not None and next(image_items, _END) is not _END:
                    raise InputError(f"There are more photographs than barcodes (barcodes end at query {number}); "
                                     "pair each specimen's barcode with its photograph.")
                return
            query["id"], query["dna"], query["error"] = _barcode(item, number)
        if image_items is not None:
            item = next(image_items, _END)
            if item is _END:
                if dna_items is None:
                    return
                raise InputError(f"There are more barcodes than photographs (photographs end at query {number}); "
                                 "pair each specimen's barcode with its photograph.")
            image_id, query["image"] = item if isinstance(item, tuple) else (_name(item), item)
            query["id"] = query["id"] or image_id
        query["id"] = query["id"] or f"query {number}"
        yield query


_END = object()


def _barcode(item, number: int) -> tuple[str | None, str | None, str | None]:
    try:
        if isinstance(item, FastaRecord):
            return item.id, None if item.error else check_sequence(item.sequence), item.error
        if isinstance(item, tuple):
            record_id, text = item
            return str(record_id), check_sequence(text), None
        record_id, sequence = parse_barcode(item)
        return record_id, sequence, None
    except InputError as error:
        record_id = item.id if isinstance(item, FastaRecord) else item[0] if isinstance(item, tuple) else None
        return record_id, None, str(error)


def _name(item) -> str | None:
    return Path(item).name if isinstance(item, (str, os.PathLike)) else None


def _identify_batch(index: KeyIndex, batch: list[dict], vote_k: int, key_modality: str) -> list[dict]:
    photos = {}
    for position, query in enumerate(batch):
        if query["image"] is not None and query["error"] is None:
            try:
                photos[position] = open_photo(query["image"])
            except (InputError, OSError) as error:
                query["error"] = f"photograph: {error}"
    usable = [i for i, q in enumerate(batch) if q["error"] is None and (q["dna"] is not None or i in photos)]
    rows = [_row(query) for query in batch]
    if not usable:
        return rows
    vectors = {}
    searched = list(range(len(usable)))  # which searched query answers each usable one
    if batch[usable[0]]["dna"] is not None:
        cut = index.manifest["max_nucleotides"]  # queries are cut like the keys were
        barcodes = [batch[i]["dna"][:cut] for i in usable]
        if not photos:  # identical barcodes (common in a survey) get one search
            first: dict[str, int] = {}
            searched = [first.setdefault(barcode, len(first)) for barcode in barcodes]
            barcodes = list(first)
        vectors["dna"] = index.encoder.query_vectors(barcodes)
    if photos:
        vectors["image"] = l2_normalize_rows(index.encoder.embed_images([photos[i] for i in usable]))
    answers = predict(index, vectors, 1, vote_k, key_modality)
    answers = [answers[j] for j in searched]
    for position, (ranks, novelty, hits, scores) in zip(usable, answers):
        row = rows[position]
        for prediction in ranks:
            row[prediction.rank] = prediction.label
            row[f"{prediction.rank}_confidence"] = round(prediction.confidence, 4)
        if len(hits):
            row.update(nearest_processid=index.columns["processid"][hits[0]],
                       nearest_species=index.columns["species"][hits[0]],
                       nearest_bin=index.columns["dna_bin"][hits[0]], nearest_similarity=round(float(scores[0]), 4))
        row["possibly_undescribed"] = novelty.possibly_undescribed
    return rows


def _row(query: dict) -> dict:
    row = dict.fromkeys(IDENTIFICATION_COLUMNS)
    row["query_id"], row["error"] = query["id"], query["error"]
    return row


def table_format(path: str | os.PathLike | None, default: str = "tsv") -> str:
    """The table format a file name asks for (``.tsv``, ``.csv``, ``.jsonl``); ``default`` for stdout."""
    if path is None:
        return default
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise InputError(f"{path}: the hit table is written as .tsv, .csv or .jsonl; got {suffix or 'no suffix'!r}.")
    return TABLE_FORMATS[suffix]


def write_identifications(batches: Iterable[list[dict]], out: str | os.PathLike | None = None,
                          table: str | None = None, overwrite: bool = False) -> int:
    """Write the rows of `iter_identifications` as they come, to ``out`` (staged, renamed into place when
    complete; an existing file is refused unless ``overwrite``) or to stdout. Returns the number of rows."""
    table = table or table_format(out)
    if out is None:
        return _write_rows(batches, sys.stdout, table)
    check_output(out, overwrite)
    with staged_file(out, overwrite) as staging, open(staging, "w", encoding="utf-8", newline="") as handle:
        return _write_rows(batches, handle, table)


def _write_rows(batches: Iterable[list[dict]], handle: io.TextIOBase, table: str) -> int:
    import csv

    count = 0
    writer = None
    if table != "jsonl":
        writer = csv.DictWriter(handle, fieldnames=IDENTIFICATION_COLUMNS, delimiter="\t" if table == "tsv" else ",",
                                lineterminator="\n")
        writer.writeheader()
    for rows in batches:
        for row in rows:
            if writer is None:
                handle.write(json.dumps({key: _json_value(value) for key, value in row.items()}) + "\n")
            else:
                writer.writerow({key: "" if value is None else value for key, value in row.items()})
        count += len(rows)
        handle.flush()
    return count


def _json_value(value):
    return value.item() if isinstance(value, np.generic) else value
