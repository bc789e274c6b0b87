"""The compact member index of the official image archives: the same bytes as ``zipfile``, only the archives a split
needs, a cache on disk, and every check ``zipfile`` makes (on small generated archives, never the 8 GB fixture)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioscan5m import release
from bioscan5m.data.image_package import ImagePackage, ImageTooLargeError, MissingImageError
from bioscan5m.data.release import UnsafeArchiveError
from bioscan5m.data.zip_index import ZipIndex

PACKAGE = "cropped_256"


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _member(split: str, processid: str) -> str:
    return f"bioscan5m/images/{PACKAGE}/{split}/{processid}.jpg"


def _archive(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED, force_zip64=False) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            with archive.open(name, "w", force_zip64=force_zip64) as handle:
                handle.write(data)
    return path


@pytest.fixture
def grouped_release(tmp_path) -> Path:
    """A package as the official split-group archives: pretrain.01/.02, train, eval."""
    layout = {"pretrain.01": ["pretrain"], "pretrain.02": ["pretrain"], "train": ["train"],
              "eval": ["val", "test", "key_unseen"]}
    for group, splits in layout.items():
        members = {_member(split, f"{group}-{split}-{i}"): _jpeg(hash((group, split, i)) % 1000)
                   for split in splits for i in range(5)}
        _archive(tmp_path / f"BIOSCAN_5M_{PACKAGE}_{group}.zip", members)
    return tmp_path


@pytest.mark.parametrize("compression, force_zip64", [(zipfile.ZIP_DEFLATED, False), (zipfile.ZIP_STORED, False),
                                                      (zipfile.ZIP_DEFLATED, True)])
def test_members_read_by_offset_equal_zipfiles(tmp_path, compression, force_zip64):
    members = {_member("test", f"P{i}"): _jpeg(i) for i in range(40)}
    members["bioscan5m/images/original_256/test/P0.jpg"] = b"another package"
    members["README.txt"] = b"not an image"
    path = _archive(tmp_path / "a.zip", members, compression, force_zip64)
    index = ZipIndex.parse(path, PACKAGE)
    assert len(index) == 40 and list(index.names) == sorted(index.names)
    import os

    descriptor = os.open(path, os.O_RDONLY)
    try:
        for name, data in members.items():
            row = index.find(name.split(f"images/{PACKAGE}/", 1)[-1])
            if name.startswith(f"bioscan5m/images/{PACKAGE}/"):
                assert index.read(row, descriptor) == data
            else:
                assert row is None
    finally:
        os.close(descriptor)


def test_only_the_archives_of_the_requested_splits_are_opened(grouped_release):
    store = ImagePackage(grouped_release, PACKAGE, splits=("test",))
    assert [p.name for p in store.archives] == [f"BIOSCAN_5M_{PACKAGE}_eval.zip"]
    assert store.read("test/eval-test-3.jpg")[1][:2] == b"\xff\xd8"
    with pytest.raises(MissingImageError, match="not found"):
        store.read("pretrain/pretrain.01-pretrain-0.jpg")  # not a split this reader was made for
    every = ImagePackage(grouped_release, PACKAGE)
    every.read("pretrain/pretrain.02-pretrain-4.jpg")
    assert sorted(p.name for p in every._indexes) == [f"BIOSCAN_5M_{PACKAGE}_pretrain.01.zip",
                                                       f"BIOSCAN_5M_{PACKAGE}_pretrain.02.zip"]  # no train, no eval
    assert every.count_per_split() == {"pretrain": 10, "train": 5, "val": 5, "test": 5, "key_unseen": 5}
    store.close(), every.close()


def test_the_index_is_cached_on_disk_and_rebuilt_when_the_archive_changes(tmp_path):
    path = _archive(tmp_path / "a.zip", {_member("test", "P1"): _jpeg(1)})
    cache = tmp_path / "cache"
    first = ZipIndex.open(path, PACKAGE, cache)
    assert not isinstance(first.names, np.memmap) and len(list(cache.iterdir())) == 1
    again = ZipIndex.open(path, PACKAGE, cache)
    assert isinstance(again.names, np.memmap) and list(again.names) == list(first.names)
    _archive(path, {_member("test", "P1"): _jpeg(1), _member("test", "P2"): _jpeg(2)})
    assert len(ZipIndex.open(path, PACKAGE, cache)) == 2


def test_a_member_that_escapes_refuses_the_archive(tmp_path):
    path = _archive(tmp_path / "a.zip", {_member("test", "P1"): _jpeg(1), "../../escape.jpg": b"x"})
    with pytest.raises(UnsafeArchiveError, match=r"member '\.\./\.\./escape\.jpg' escapes"):
        ZipIndex.parse(path, PACKAGE)


def test_a_corrupt_member_is_named_and_an_oversized_one_is_not_inflated(tmp_path):
    data = _jpeg(1)
    path = _archive(tmp_path / f"BIOSCAN_5M_{PACKAGE}_eval.zip", {_member("test", "P1"): data,
                                                                   _member("test", "BIG"): b"\0" * 5000},
                    zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    at = raw.find(data)
    raw[at + 100] ^= 0xFF  # one flipped byte: the CRC no longer matches
    path.write_bytes(bytes(raw))
    store = ImagePackage(tmp_path, PACKAGE, max_image_bytes=4096, cache_dir=tmp_path / "cache")
    with pytest.raises(MissingImageError, match=r"eval\.zip!test/P1\.jpg: unreadable zip member .*CRC-32"):
        store.read("test/P1.jpg")
    with pytest.raises(ImageTooLargeError, match="5,000 bytes"):
        store.read("test/BIG.jpg")


def test_a_name_holding_the_directory_signature_and_data_before_the_archive(tmp_path):
    members = {_member("test", "PK\x01\x02odd"): _jpeg(1), _member("test", "P2"): _jpeg(2)}
    path = _archive(tmp_path / "a.zip", members)
    shifted = tmp_path / "shifted.zip"
    shifted.write_bytes(b"#!prepended stub\n" * 10 + path.read_bytes())
    index = ZipIndex.parse(shifted, PACKAGE)
    import os

    descriptor = os.open(shifted, os.O_RDONLY)
    assert index.read(index.find("test/PK\x01\x02odd.jpg"), descriptor) == members[_member("test", "PK\x01\x02odd")]
    os.close(descriptor)


def test_a_truncated_archive_is_named(tmp_path):
    path = _archive(tmp_path / "a.zip", {_member("test", "P1"): _jpeg(1)})
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(zipfile.BadZipFile, match=r"a\.zip: not a valid zip archive"):
        ZipIndex.parse(path, PACKAGE)


def test_release_archive_splits_follow_the_official_grouping():
    assert release.archive_splits(f"BIOSCAN_5M_{PACKAGE}_pretrain.02.zip", PACKAGE) == ("pretrain",)
    assert release.archive_splits(f"BIOSCAN_5M_{PACKAGE}_eval.zip", PACKAGE) == release.SPLIT_GROUPS["eval"]
    assert release.archive_splits(f"BIOSCAN_5M_{PACKAGE}.zip", PACKAGE) == release.SPLITS


def test_zip64_records_written_below_the_32_bit_limits_are_read(tmp_path, monkeypatch):
    # CPython switches to zip64 at 2 GiB while the classic record still holds real values; mimic it on a small file.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    members = {_member("test", f"P{i}"): _jpeg(i) for i in range(3)}
    path = _archive(tmp_path / "a.zip", members, force_zip64=True)
    monkeypatch.undo()
    assert b"PK\x06\x06" in path.read_bytes()[-200:]
    index = ZipIndex.parse(path, PACKAGE)
    import os

    descriptor = os.open(path, os.O_RDONLY)
    assert [index.read(index.find(n.split("cropped_256/")[1]), descriptor) for n in members] == list(members.values())
    os.close(descriptor)


def _patch_directory(path: Path, offset_in_entry: int, fmt: str, value: int, entry: int = 0) -> None:
    import struct

    raw = bytearray(path.read_bytes())
    at = -1
    for _ in range(entry + 1):
        at = raw.find(b"PK\x01\x02", at + 1)
    struct.pack_into(fmt, raw, at + offset_in_entry, value)
    path.write_bytes(bytes(raw))


def test_a_lying_compressed_size_is_refused_before_it_is_read(tmp_path):
    path = _archive(tmp_path / f"BIOSCAN_5M_{PACKAGE}_eval.zip", {_member("test", "P1"): _jpeg(1)})
    _patch_directory(path, 20, "<L", 0xFFFFFFF0)
    store = ImagePackage(tmp_path, PACKAGE, cache_dir=tmp_path / "cache")
    with pytest.raises(MissingImageError, match="compressed bytes .* corrupt directory"):
        store.read("test/P1.jpg")


def test_entries_beyond_a_wrong_count_and_repeated_names_are_read_as_zipfile_does(tmp_path):
    import struct

    path = _archive(tmp_path / "a.zip", {"readme": b"x", _member("test", "A"): b"first"})
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(_member("test", "A"), b"second")  # an update of the archive: the later member wins
    raw = bytearray(path.read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", raw, end + 8, 1, 1)  # a count stored modulo 65,536 by some writers
    path.write_bytes(bytes(raw))
    index = ZipIndex.parse(path, PACKAGE)
    import os

    descriptor = os.open(path, os.O_RDONLY)
    assert len(index) == 1 and index.read(index.find("test/A.jpg"), descriptor) == b"second"
    os.close(descriptor)
