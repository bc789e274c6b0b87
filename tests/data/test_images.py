"""Image configs: folders and official zips, on the synthetic sample and on real BIOSCAN photographs."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

import bioscan5m
from bioscan5m import release
from bioscan5m.data.builder import MissingImageError
from bioscan5m.data.images import ImageDecodeError, decode_image


def _sample_counts(root: Path) -> dict[str, int]:
    with open(root / release.METADATA_RELPATH) as handle:
        splits = [row["split"] for row in csv.DictReader(handle)]
    return {s: splits.count(s) for s in release.SPLITS}


def test_image_config_reads_every_split_from_folders(sample_root, tmp_path):
    counts = _sample_counts(sample_root)
    data = bioscan5m.load_dataset(sample_root, "cropped_256", cache_dir=str(tmp_path))
    assert {name: len(split) for name, split in data.items()} == counts
    record = data["key_unseen"][0]
    assert isinstance(record["image"], Image.Image) and min(record["image"].size) == 256
    assert record["processid"].startswith("SYNTH")


def test_zip_archives_give_the_same_images_as_folders(sample_root, tmp_path):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for path in sample_root.glob("*.zip"):
        (zipped / path.name).symlink_to(path)  # the release exactly as downloaded: archives, nothing extracted
    (zipped / "SYNTHETIC_DATA.md").symlink_to(sample_root / "SYNTHETIC_DATA.md")
    for split in ("pretrain", "train", "test_unseen"):  # chunked (2 archives), chunked, flat
        from_zip = bioscan5m.load_dataset(zipped, "original_256", split=split, streaming=True).decode(False)
        from_folder = bioscan5m.load_dataset(sample_root, "original_256", split=split, streaming=True).decode(False)
        pairs = list(zip(from_zip, from_folder))
        assert len(pairs) == _sample_counts(sample_root)[split]
        for a, b in pairs:
            assert a["image"]["bytes"] == b["image"]["bytes"] and a["processid"] == b["processid"]
            assert a["image"]["path"] == release.image_relpath(split, a["chunk"], a["processid"])


def test_missing_package_is_a_clear_error(sample_root):
    with pytest.raises(FileNotFoundError, match="Image package 'cropped' not found.*'dna' config"):
        next(iter(bioscan5m.load_dataset(sample_root, "cropped", split="test", streaming=True)))


def _write_release(root: Path, rows: list[dict]) -> None:
    path = root / release.METADATA_RELPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=release.COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in release.COLUMNS})


def test_real_photographs_in_official_folder_and_zip_layouts(images_root, tmp_path):
    """Real BIOSCAN JPEGs arranged as original_full (zip only) and cropped (folder) packages."""
    index = list(csv.DictReader(open(images_root / "index.csv")))[:24]
    splits = ["train", "test", "pretrain", "key_unseen"]
    rows = []
    root = tmp_path / "release"
    archive = zipfile.ZipFile(root.parent / "BIOSCAN_5M_original_full_eval.zip", "w")
    root.mkdir()
    train_archive = zipfile.ZipFile(root / "BIOSCAN_5M_original_full_train.zip", "w")
    pretrain_archive = zipfile.ZipFile(root / "BIOSCAN_5M_original_full_pretrain.01.zip", "w")
    for i, item in enumerate(index):
        split = splits[i % 4]
        digest = hashlib.md5(item["processid"].encode()).hexdigest()
        chunk = {"pretrain": digest[:2], "train": digest[:1]}.get(split, "")
        rows.append({"processid": item["processid"], "split": split, "chunk": chunk, "phylum": "Arthropoda",
                     "class": "Insecta", "dna_barcode": "ACGT" * 160})
        source = images_root / item["file"]
        target = {"train": train_archive, "pretrain": pretrain_archive}.get(split, archive)
        target.write(source, f"bioscan5m/images/original_full/{release.image_relpath(split, chunk, item['processid'])}")
        folder = release.image_package_dir(root, "cropped") / release.image_relpath(split, chunk, item["processid"])
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder)
    for a in (archive, train_archive, pretrain_archive):
        a.close()
    shutil.move(str(root.parent / "BIOSCAN_5M_original_full_eval.zip"), root)
    _write_release(root, rows)

    for config in ("original_full", "cropped"):
        data = bioscan5m.load_dataset(root, config, split="all", cache_dir=str(tmp_path / "cache"))
        assert len(data) == 24
        by_id = {r["processid"]: r for r in data}
        for item in index:
            image = by_id[item["processid"]]["image"]
            original = Image.open(images_root / item["file"])
            assert image.size == original.size == (1024, 768)
            assert image.convert("RGB").getpixel((512, 384)) == original.convert("RGB").getpixel((512, 384))


def test_missing_image_names_the_record_or_is_skipped_and_counted(sample_root, tmp_path, caplog):
    root = tmp_path / "release"
    shutil.copytree(sample_root / "bioscan5m" / "metadata", root / "bioscan5m" / "metadata")
    shutil.copytree(release.image_package_dir(sample_root, "cropped_256") / "test",
                    release.image_package_dir(root, "cropped_256") / "test")
    victims = sorted((release.image_package_dir(root, "cropped_256") / "test").glob("*.jpg"))[:3]
    for path in victims:
        path.unlink()
    first_missing = victims[0].stem
    with pytest.raises(MissingImageError, match=r"record 'SYNTH\d+-24' \(split test\).*not found"):
        list(bioscan5m.load_dataset(root, "cropped_256", split="test", streaming=True))
    with caplog.at_level("WARNING"):
        kept = list(bioscan5m.load_dataset(root, "cropped_256", split="test", streaming=True, skip_missing_images=True))
    assert len(kept) == _sample_counts(sample_root)["test"] - 3
    assert first_missing not in {r["processid"] for r in kept}
    assert "Skipped 3 record(s) of split 'test'" in caplog.text


def test_truncated_jpeg_is_reported_with_its_file(sample_root, tmp_path):
    root = tmp_path / "release"
    shutil.copytree(sample_root / "bioscan5m" / "metadata", root / "bioscan5m" / "metadata")
    shutil.copytree(release.image_package_dir(sample_root, "cropped_256") / "val_unseen",
                    release.image_package_dir(root, "cropped_256") / "val_unseen")
    victim = sorted((release.image_package_dir(root, "cropped_256") / "val_unseen").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(MissingImageError, match=rf"{victim.name}: not a complete JPEG.*truncated"):
        list(bioscan5m.load_dataset(root, "cropped_256", split="val_unseen", streaming=True))


def test_image_batches_decode_real_photographs_like_pil(images_root, tmp_path):
    """iter_image_batches on real BIOSCAN JPEGs (1024x768 originals and 256-px crops): same records, same order,
    pixels identical to what datasets' PIL decoding gives."""
    files = sorted((images_root / "specimens").glob("*.jpg"))[:9] + sorted((images_root / "cropped").rglob("*.jpg"))
    root = tmp_path / "release"
    rows = []
    for i, source in enumerate(files):
        processid = f"REAL{i:03d}-24"
        rows.append({"processid": processid, "split": "test", "phylum": "Arthropoda", "dna_barcode": "ACGT" * 160})
        target = release.image_package_dir(root, "cropped_256") / release.image_relpath("test", "", processid)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    _write_release(root, rows)

    stream = bioscan5m.load_dataset(root, "cropped_256", split="test", streaming=True)
    batches = list(bioscan5m.iter_image_batches(stream, batch_size=4, num_threads=2))
    assert [len(b["image"]) for b in batches] == [4] * (len(files) // 4) + ([len(files) % 4] if len(files) % 4 else [])
    decoded = [image for batch in batches for image in batch["image"]]
    assert [p for batch in batches for p in batch["processid"]] == [row["processid"] for row in rows]
    for record, pixels in zip(stream, decoded, strict=True):
        expected = np.asarray(record["image"].convert("RGB"))
        assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
        assert np.array_equal(pixels, expected)

    prepared = bioscan5m.load_dataset(root, "cropped_256", split="test", cache_dir=str(tmp_path / "cache"))
    again = [image for batch in bioscan5m.iter_image_batches(prepared, batch_size=5) for image in batch["image"]]
    assert len(again) == len(decoded) and all(np.array_equal(a, b) for a, b in zip(again, decoded))


def test_decode_image_matches_datasets_for_png_exif_grayscale_and_cmyk(images_root):
    """The non-plain-JPEG cases take PIL's path and still give exactly what datasets.Image + convert("RGB") gives."""
    photo = Image.open(sorted((images_root / "cropped").rglob("*.jpg"))[0]).convert("RGB")
    variants = {}
    for name, kwargs in (("png", {"format": "PNG"}), ("jpeg", {"format": "JPEG", "quality": 90})):
        buffer = io.BytesIO()
        photo.save(buffer, **kwargs)
        variants[name] = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif.tobytes())
    variants["exif-rotated jpeg"] = buffer.getvalue()
    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        photo.convert(mode).save(buffer, format="JPEG")
        variants[f"{mode} jpeg"] = buffer.getvalue()
    for name, data in variants.items():
        expected = np.asarray(datasets.Image().decode_example({"bytes": data, "path": None}).convert("RGB"))
        assert np.array_equal(decode_image(data), expected), name
    assert decode_image(variants["exif-rotated jpeg"]).shape == (photo.width, photo.height, 3)


def test_image_batches_name_an_undecodable_image(sample_root):
    with pytest.raises(ImageDecodeError, match=r"image test/broken\.jpg: not a decodable image \(12 bytes\)"):
        decode_image({"bytes": b"\xff\xd8notajpeg\xff\xd9", "path": "test/broken.jpg"})
    dna = bioscan5m.load_dataset(sample_root, "dna", split="test", streaming=True)
    with pytest.raises(ValueError, match="no 'image' column"):
        next(bioscan5m.iter_image_batches(dna))
