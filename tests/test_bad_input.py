"""Malformed releases give clear errors that name the file, line, record and field; nothing is altered silently."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import bioscan5m
from bioscan5m import release
from bioscan5m.data.metadata import MetadataError
from bioscan5m.data.release import UnsafeArchiveError

HEADER = ",".join(release.COLUMNS)


def _row(processid="PID1-24", split="train", lat="10.5", inferred="0", barcode="ACGTACGT") -> str:
    values = {c: "" for c in release.COLUMNS}
    values.update({"processid": processid, "split": split, "coord-lat": lat, "inferred_ranks": inferred,
                   "dna_barcode": barcode, "phylum": "Arthropoda", "species": "Aus bus"})
    return ",".join(values[c] for c in release.COLUMNS)


def _release(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / release.METADATA_RELPATH
    path.parent.mkdir(parents=True)
    path.write_text("\n".join([header, *lines]) + "\n")
    return tmp_path


def _load(root, split="train"):
    return bioscan5m.read_metadata(root, split=split)


def test_good_rows_load(tmp_path):
    frame = _load(_release(tmp_path, [_row(), _row("PID2-24", lat="")]))
    assert list(frame["coord-lat"].isna()) == [False, True]
    assert frame["coord-lat"][0] == 10.5 and frame["species_index"].tolist() == [0, 0]


def test_missing_column(tmp_path):
    header = HEADER.replace(",coord-lon", "")
    with pytest.raises(MetadataError, match=r"BIOSCAN_5M_Insect_Dataset_metadata\.csv: missing column\(s\) 'coord-lon'"):
        _load(_release(tmp_path, [], header=header))


def test_extra_column(tmp_path):
    with pytest.raises(MetadataError, match=r"unexpected column\(s\) 'notes'"):
        _load(_release(tmp_path, [_row() + ",x"], header=HEADER + ",notes"))


def test_row_with_wrong_number_of_fields(tmp_path):
    with pytest.raises(MetadataError, match=r"metadata\.csv, line 3: expected 23 fields, found 22: 'PID2-24"):
        _load(_release(tmp_path, [_row(), _row("PID2-24").rsplit(",", 1)[0], _row("PID3-24")]))


def test_non_numeric_value_names_line_record_and_column(tmp_path):
    with pytest.raises(MetadataError, match=r"line 3 \(processid 'PID2-24'\): column 'coord-lat' is 'north', expected a number"):
        _load(_release(tmp_path, [_row(), _row("PID2-24", lat="north")]))


def test_fractional_integer_is_refused(tmp_path):
    with pytest.raises(MetadataError, match=r"line 2 \(processid 'PID1-24'\): column 'inferred_ranks' is '1.5', expected an integer"):
        _load(_release(tmp_path, [_row(inferred="1.5")]))


def test_unknown_split_in_csv_names_the_record(tmp_path):
    with pytest.raises(MetadataError, match=r"line 3 \(processid 'PID2-24'\): split 'training' is not an official split"):
        _load(_release(tmp_path, [_row(), _row("PID2-24", split="training")]))


def test_unknown_split_requested(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown split 'valid'"):
        _load(_release(tmp_path, [_row()]), split="valid")


def test_missing_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="No BIOSCAN-5M metadata under"):
        _load(tmp_path)


def test_metadata_read_from_the_official_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / release.METADATA_ZIP_NAME, "w") as archive:
        archive.writestr(release.METADATA_RELPATH, "\n".join([HEADER, _row(), _row("PID2-24", split="test")]))
    assert list(_load(tmp_path, split="all")["processid"]) == ["PID1-24", "PID2-24"]


def test_hostile_zip_member_is_refused(tmp_path):
    root = _release(tmp_path, [_row()])
    with zipfile.ZipFile(root / "BIOSCAN_5M_cropped_256_train.zip", "w") as archive:
        archive.writestr("bioscan5m/images/cropped_256/train/PID1-24.jpg", b"\xff\xd8 \xff\xd9")
        archive.writestr("../../escape.jpg", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"BIOSCAN_5M_cropped_256_train\.zip: member '\.\./\.\./escape\.jpg' escapes"):
        list(bioscan5m.load_dataset(root, "cropped_256", split="train", streaming=True))
    with zipfile.ZipFile(root / release.METADATA_ZIP_NAME, "w") as archive:
        archive.writestr("/etc/passwd", b"x")
    (root / release.METADATA_RELPATH).unlink()
    with pytest.raises(UnsafeArchiveError, match="member '/etc/passwd' escapes"):
        _load(root)


def test_truncated_archive_names_the_file(tmp_path):
    root = _release(tmp_path, [_row()])
    archive = root / "BIOSCAN_5M_cropped_256_train.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("bioscan5m/images/cropped_256/train/PID1-24.jpg", b"\xff\xd8" + b"\x00" * 4000 + b"\xff\xd9")
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(zipfile.BadZipFile, match=r"BIOSCAN_5M_cropped_256_train\.zip: not a valid zip archive"):
        list(bioscan5m.load_dataset(root, "cropped_256", split="train", streaming=True))
