"""Reading the official metadata CSV: validated, typed, streamed in record batches.

The CSV is read with pyarrow's streaming reader, so memory stays bounded by the batch size no matter how
many records the release holds. Every value is read as text first and converted here, so a bad value is
reported with its file, line, record and column instead of a bare conversion error.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import release

BATCH_BYTES = 8 << 20

#: ``processid`` and ``chunk`` become parts of image paths, so they are held to plain names: no separators, no
#: leading dot (hence no ``.`` or ``..``), nothing a file system could read as a path.
PATH_FIELD_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
#: What a ``dna_barcode`` may hold: IUPAC nucleotide codes (N and the ambiguity codes) and alignment gaps, in upper
#: case as the release writes them (the tokenizers and the barcode statistics read upper case).
BARCODE_CHARACTERS = "ACGTNRYKMSWBDHV-"
_BARCODE_BYTES = np.zeros(256, dtype=bool)
_BARCODE_BYTES[np.frombuffer(BARCODE_CHARACTERS.encode(), dtype=np.uint8)] = True
#: Value ranges the release's numbers must fall in; non-finite values (nan, inf) are refused in every float column.
FLOAT_RANGES = {"coord-lat": (-90.0, 90.0), "coord-lon": (-180.0, 180.0), "image_measurement_value": (0.0, None),
                "area_fraction": (0.0, 1.0), "scale_factor": (0.0, None)}


class MetadataError(ValueError):
    """The metadata CSV does not follow the official layout; the message names file, line and field."""


@dataclass(frozen=True)
class MetadataSource:
    """Where the metadata CSV is: a plain file, or a member of the official metadata zip."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    def open(self) -> io.BufferedIOBase:
        if self.member is None:
            return open(self.path, "rb")
        archive = release.open_zip(self.path)
        return archive.open(self.member)

    def stamp(self) -> tuple[str, int, int]:
        """Identity of the file's current content, for caching derived data."""
        stat = os.stat(self.path)
        return (str(self), stat.st_size, stat.st_mtime_ns)


def find_metadata(root: str | os.PathLike) -> MetadataSource:
    """Locate the metadata CSV under a release ``root``: the official path, else the official zip."""
    root = Path(os.path.expanduser(root))
    if root.is_file() and root.suffix == ".csv":
        return MetadataSource(root)
    csv_path = root / release.METADATA_RELPATH
    if csv_path.is_file():
        return MetadataSource(csv_path)
    for zip_path in (root / release.METADATA_ZIP_NAME, root / release.RELEASE_FOLDER / release.METADATA_ZIP_NAME):
        if zip_path.is_file():
            with release.open_zip(zip_path) as archive:
                for name in archive.namelist():
                    release.check_member_name(zip_path, name)
                    if name.endswith(Path(release.METADATA_RELPATH).name):
                        return MetadataSource(zip_path, name)
            raise MetadataError(f"{zip_path}: no {Path(release.METADATA_RELPATH).name} inside the metadata archive.")
    raise FileNotFoundError(
        f"No BIOSCAN-5M metadata under {root}: expected {csv_path} or {root / release.METADATA_ZIP_NAME}. "
        "Download it with `bioscan5m download ROOT` or pass the folder that contains 'bioscan5m/'."
    )


def check_max_nucleotides(max_nucleotides: int | None) -> None:
    """``None`` keeps whole barcodes; anything else must be a positive integer (0 would empty every barcode)."""
    if max_nucleotides is None:
        return
    if isinstance(max_nucleotides, bool) or not isinstance(max_nucleotides, (int, np.integer)) or max_nucleotides < 1:
        raise ValueError(f"max_nucleotides must be a positive integer, or None to keep whole barcodes; "
                         f"got {max_nucleotides!r}.")


def _check_header(source: MetadataSource) -> None:
    with source.open() as handle:
        line = handle.readline()
    try:
        header = line.decode("utf-8-sig").rstrip("\r\n").split(",")
    except UnicodeDecodeError as error:
        raise MetadataError(f"{source}, line 1: the header is not UTF-8 text ({error.reason} at byte "
                            f"{error.start}).") from None
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise MetadataError(f"{source}: column(s) {', '.join(map(repr, repeated))} appear more than once in the "
                            "header; the official CSV names each column once.")
    missing = [c for c in release.COLUMNS if c not in header]
    extra = [c for c in header if c not in release.COLUMNS]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
        if extra:
            problems.append(f"unexpected column(s) {', '.join(map(repr, extra))}")
        raise MetadataError(f"{source}: {' and '.join(problems)}; the official CSV has exactly: {', '.join(release.COLUMNS)}.")


def iter_batches(source: MetadataSource, columns: tuple[str, ...] = release.COLUMNS) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield ``(first_row, batch)`` with every requested column as text; empty fields are empty strings.

    ``first_row`` is the 0-based record number of the batch's first row (line ``first_row + 2``).
    """
    _check_header(source)
    try:
        reader = pacsv.open_csv(
            source.open(),
            read_options=pacsv.ReadOptions(block_size=BATCH_BYTES),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(columns),
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as error:
        raise _malformed_row_error(source, error) from None
    first_row = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as error:
            raise _malformed_row_error(source, error) from None
        yield first_row, batch
        first_row += batch.num_rows


def _malformed_row_error(source: MetadataSource, error: Exception) -> MetadataError:
    """pyarrow reports a malformed row without its line number; find it with the csv module (error path only)."""
    with source.open() as handle:
        # Undecodable bytes are kept as surrogates so the search itself cannot fail, then reported as such.
        rows = csv.reader(io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline=""))
        for fields in rows:
            for field in fields:
                try:
                    field.encode("utf-8")
                except UnicodeEncodeError as bad:
                    byte = ord(field[bad.start]) - 0xDC00
                    return MetadataError(f"{source}, line {rows.line_num}: not UTF-8 text (byte 0x{byte:02x} in "
                                         f"{field[:40].encode('utf-8', 'replace').decode()!r}); the official CSV "
                                         "is UTF-8.")
            if len(fields) != len(release.COLUMNS):
                text = ",".join(fields)[:120]
                return MetadataError(f"{source}, line {rows.line_num}: expected {len(release.COLUMNS)} fields, "
                                     f"found {len(fields)}: {text!r}")
    return MetadataError(f"{source}: unreadable CSV: {error}")


def typed_columns(source: MetadataSource, first_row: int, batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """Convert a text batch to the release's types: strings (empty to null), floats, integers."""
    out = {}
    for name in batch.schema.names:
        text = batch.column(name)
        empty = pc.equal(text, "")
        if name in release.STRING_COLUMNS:
            out[name] = pc.if_else(empty, pa.scalar(None, pa.string()), text)
            continue
        target = pa.float64() if name in release.FLOAT_COLUMNS else pa.int64()
        values = pc.if_else(empty, pa.scalar(None, pa.string()), pc.utf8_trim_whitespace(text))
        try:
            if target == pa.int64():
                # Integers are written as "3" or "3.0" depending on the exporter.
                as_float = pc.cast(values, pa.float64())
                if not pc.all(pc.equal(pc.floor(as_float), as_float)).as_py() in (True, None):
                    raise pa.ArrowInvalid("fractional value")
                out[name] = pc.cast(as_float, pa.int64())
            else:
                out[name] = pc.cast(values, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _value_error(source, first_row, batch, name, target) from None
        if name in release.FLOAT_COLUMNS:
            _check_range(source, first_row, batch, name, out[name])
    return out


def _check_range(source, first_row, batch, name, values: pa.Array) -> None:
    low, high = FLOAT_RANGES.get(name, (None, None))
    bad = pc.invert(pc.is_finite(values))
    if low is not None:
        bad = pc.or_(bad, pc.less(values, low))
    if high is not None:
        bad = pc.or_(bad, pc.greater(values, high))
    bad = pc.fill_null(bad, False)
    if pc.any(bad).as_py():
        i = pc.index(bad, True).as_py()
        allowed = f"between {low:g} and {high:g}" if high is not None else f"a finite number of at least {low:g}"
        raise MetadataError(f"{source}, line {first_row + i + 2} (processid {batch.column('processid')[i].as_py()!r}): "
                            f"column {name!r} is {batch.column(name)[i].as_py()!r}, expected {allowed}.")


def _value_error(source, first_row, batch, name, target) -> MetadataError:
    processids = batch.column("processid").to_pylist() if "processid" in batch.schema.names else None
    kind = "a number" if target == pa.float64() else "an integer"
    for i, value in enumerate(batch.column(name).to_pylist()):
        if value.strip() == "":
            continue
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or (target == pa.int64() and not number.is_integer()):
            record = f" (processid {processids[i]!r})" if processids else ""
            return MetadataError(f"{source}, line {first_row + i + 2}{record}: column {name!r} is {value!r}, expected {kind}.")
    return MetadataError(f"{source}: column {name!r} holds a value that is not {kind}.")


def check_records(source: MetadataSource, first_row: int, batch: pa.RecordBatch) -> None:
    """Refuse records whose ``split`` is not an official split name, or whose ``processid`` or ``chunk`` (parts of
    the image path) is not a plain name."""
    for column in ("processid", "chunk"):
        if column not in batch.schema.names:
            continue
        values = batch.column(column)
        plain = pc.match_substring_regex(values, f"^{PATH_FIELD_PATTERN}$")
        if column == "chunk":
            plain = pc.or_(plain, pc.equal(values, ""))
        if not pc.all(plain).as_py():
            i = pc.index(plain, False).as_py()
            raise MetadataError(
                f"{source}, line {first_row + i + 2}: column {column!r} is {values[i].as_py()!r}, which is not a "
                "plain name (letters, digits, '_', '.', '-'; no path separators, no leading dot); it would be "
                "joined into an image path.")
    if "dna_barcode" in batch.schema.names:
        _check_barcodes(source, first_row, batch)
    splits = batch.column("split")
    bad = pc.invert(pc.is_in(splits, value_set=pa.array(release.SPLITS)))
    if pc.any(bad).as_py():
        i = pc.index(bad, True).as_py()
        processid = batch.column("processid")[i].as_py()
        raise MetadataError(
            f"{source}, line {first_row + i + 2} (processid {processid!r}): split {splits[i].as_py()!r} "
            f"is not an official split name ({', '.join(release.SPLITS)})."
        )


def _check_barcodes(source: MetadataSource, first_row: int, batch: pa.RecordBatch) -> None:
    """Refuse an empty barcode or one with a character no nucleotide code is: every record of the release has a
    COI barcode, and text that is not one would be compared, clustered and indexed as if it were."""
    barcodes = batch.column("dna_barcode")
    width = np.int64 if pa.types.is_large_string(barcodes.type) else np.int32
    offsets = np.frombuffer(barcodes.buffers()[1], dtype=width)[barcodes.offset:barcodes.offset + len(barcodes) + 1]
    text = bytes(memoryview(barcodes.buffers()[2])[offsets[0]:offsets[-1]])
    empty = (np.diff(offsets) == 0) | barcodes.is_null().to_numpy(zero_copy_only=False)
    # The usual case in one pass over the batch's bytes: deleting every nucleotide code leaves nothing.
    if not empty.any() and not text.translate(None, BARCODE_CHARACTERS.encode()):
        return
    bad = list(np.flatnonzero(empty)[:1])
    wrong = np.flatnonzero(~_BARCODE_BYTES[np.frombuffer(text, dtype=np.uint8)])[:1]
    if len(wrong):
        bad.append(np.searchsorted(offsets, offsets[0] + wrong[0], side="right") - 1)
    i = int(min(bad))
    value = barcodes[i].as_py() or ""
    problem = "is empty" if not value else f"is {value[:40]!r}{'...' if len(value) > 40 else ''}, not a DNA barcode"
    raise MetadataError(f"{source}, line {first_row + i + 2} (processid {batch.column('processid')[i].as_py()!r}): "
                        f"column 'dna_barcode' {problem} (IUPAC nucleotide codes {BARCODE_CHARACTERS}, upper case).")


def record_table(source: MetadataSource, first_row: int, batch: pa.RecordBatch,
                 vocabularies: dict[str, tuple[str, ...]], max_nucleotides: int | None) -> pa.Table:
    """One checked text batch of the CSV as typed records: the release's types, barcodes truncated to
    ``max_nucleotides`` (``None``: whole), and a ``{rank}_index`` target per label column."""
    check_records(source, first_row, batch)
    columns = typed_columns(source, first_row, batch)
    if max_nucleotides is not None:
        columns["dna_barcode"] = pc.utf8_slice_codeunits(columns["dna_barcode"], 0, max_nucleotides)
    for column in release.TARGET_COLUMNS:
        columns[f"{column}_index"] = label_indices(columns[column], vocabularies[column])
    return pa.table(columns)


def read_metadata(
    root: str | os.PathLike,
    split: str | None = None,
    max_nucleotides: int | None = release.MAX_NUCLEOTIDES,
    reduce_repeated_barcodes: bool = False,
):
    """The metadata of ``split`` as a pandas DataFrame, with ``{rank}_index`` targets (-1 = missing).

    A convenience for analysis code; the datasets builder streams the same records without holding
    them all in memory. ``max_nucleotides=None`` keeps whole barcodes.
    """
    import pandas as pd

    from .derived import barcode_reduction_mask, label_vocabularies

    check_max_nucleotides(max_nucleotides)
    source = find_metadata(root)
    splits = release.parse_split(split)
    vocab = label_vocabularies(source)
    keep = barcode_reduction_mask(source, max_nucleotides) if reduce_repeated_barcodes else None
    frames = []
    for first_row, batch in iter_batches(source):
        rows = pc.is_in(batch.column("split"), value_set=pa.array(splits))
        if keep is not None:
            rows = pc.and_(rows, pa.array(keep[first_row:first_row + batch.num_rows]))
        frames.append(record_table(source, first_row, batch, vocab, max_nucleotides).filter(rows).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(release.COLUMNS))


def label_indices(labels: pa.Array, vocabulary: tuple[str, ...]) -> pa.Array:
    """Positions of ``labels`` in ``vocabulary`` as int64, -1 where the label is missing."""
    positions = pc.index_in(labels, value_set=pa.array(vocabulary, pa.string()))
    return pc.fill_null(pc.cast(positions, pa.int64()), -1)
