"""The package's promises about the user's files and about untrusted data, one section each:

nothing overwritten · nothing deleted · no escape from a folder · no silent change · no bomb · one clear line.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import datasets
import pandas as pd
import pytest
from PIL import Image

import bioscan5m
from bioscan5m import cli, release
from bioscan5m.apps.demo import DEMO_MARKER, DemoFolder
from bioscan5m.data.download import ChecksumError, fetch
from bioscan5m.identification import MAX_FASTA_BYTES, InputError, KeyIndexError, open_photo, read_fasta_file
from bioscan5m.data.image_package import ImageTooLargeError, UnsafeImagePathError
from bioscan5m.data.images import ImageDecodeError, decode_image
from bioscan5m.data.metadata import MetadataError
from bioscan5m.data.release import RemoteFile
from bioscan5m.staging import OutputExistsError, check_output, clean_stale_staging, staged_folder
from tests.processes import kill_when
from tests.test_bad_input import HEADER, _release, _row


def _tiny_jpeg(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(_tiny_jpeg())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1-pixel PNG whose header (with a valid CRC) claims ``width`` x ``height`` pixels."""
    png = io.BytesIO()
    Image.new("RGB", (1, 1)).save(png, format="PNG")
    data = bytearray(png.getvalue())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _one_clear_line(err: str, *words: str) -> None:
    # Progress bars of the work done before the problem was found may precede the error line.
    lines = [line for line in err.splitlines() if line.startswith("bioscan5m ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def _bioscan5m(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bioscan5m.cli", *map(str, argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ============================================================================================== nothing overwritten
def test_sample_refuses_a_folder_that_holds_a_release(tmp_path, capsys):
    root = _release(tmp_path / "real", [_row()])
    csv_path = root / release.METADATA_RELPATH
    before = csv_path.read_bytes()
    code, err = _cli(capsys, "sample", root, "--records", 200)
    assert code == 2
    _one_clear_line(err, str(root), "already exists", "--overwrite")
    assert csv_path.read_bytes() == before and not (root / "SYNTHETIC_DATA.md").exists()


def test_sample_overwrite_replaces_only_when_asked(tmp_path):
    root = _release(tmp_path / "old", [_row()])
    bioscan5m.make_sample(root, num_records=200, packages=(), overwrite=True)
    assert (root / "SYNTHETIC_DATA.md").is_file()
    assert len(bioscan5m.read_metadata(root, split="all")) == 200
    assert [p.name for p in tmp_path.iterdir()] == ["old"]  # no staging or moved-aside folder left behind


@pytest.mark.parametrize("command", [
    ["pretrain", "--data", "{data}", "--out", "{out}", "--preset", "tiny"],
    ["finetune", "--model", "{model}", "--data", "{data}", "--out", "{out}", "--preset", "tiny"],
    ["finetune", "--objective", "contrastive", "--model", "{model}", "--data", "{data}", "--out", "{out}"],
    ["train-clip", "--data", "{data}", "--out", "{out}", "--preset", "tiny"],
    ["index", "build", "--data", "{data}", "--out", "{out}"],
    ["benchmark", "--data", "{data}", "--out", "{out}"],
    ["cluster", "--embeddings", "kmer", "--data", "{data}", "--out", "{out}"],
    ["retrieve", "--model", "kmer", "--data", "{data}", "--out", "{out}"],
], ids=lambda command: "-".join(word for word in command[:3] if not word.startswith(("-", "{"))))
def test_every_command_that_writes_a_folder_refuses_an_existing_one(command, sample_root, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my work")
    code, err = _cli(capsys, *[word.format(data=sample_root, out=out, model=tmp_path / "model") for word in command])
    assert code == 2
    _one_clear_line(err, str(out), "already exists", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "my work"


@pytest.mark.parametrize("command", [
    ["export", "{root}", "{root}"], ["export", "{root}", "{parent}"], ["export", "{root}", "{root}/bioscan5m"],
    ["pretrain", "--data", "{root}", "--out", "{root}"],
    ["index", "build", "--data", "{root}", "--model", "{model}", "--out", "{model}"],
    ["delimit", "--data", "{root}", "--method", "upgma", "--threshold", "0.02", "--out", "{root}/bioscan5m"],
    ["embed", "--model", "{model}", "--data", "{root}", "--split", "train", "--out", "{model}/config.json"],
    ["identify", "--index", "{model}", "--fasta", "{fasta}", "--out", "{fasta}"],
    ["convert-barcodebert", "{model}", "--out", "{model}"],
], ids=["export-into-itself", "export-over-its-parent", "export-over-part-of-it", "pretrain", "index-build",
        "delimit-over-part-of-its-data", "embed-over-its-model", "identify-over-its-fasta",
        "convert-over-its-checkpoint"])
def test_overwrite_never_replaces_the_commands_own_input(command, tmp_path, capsys):
    root = _release(tmp_path / "parent" / "release", [_row()])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    fasta = tmp_path / "queries.tsv"              # a FASTA file named like a hit table
    fasta.write_text(">q\nACGT\n")
    argv = [word.format(root=root, parent=tmp_path / "parent", model=model, fasta=fasta) for word in command]
    code, err = _cli(capsys, *argv, "--overwrite")
    assert code == 2
    _one_clear_line(err, "this command's input")
    assert (root / release.METADATA_RELPATH).is_file() and (model / "config.json").read_text() == "{}"
    assert fasta.read_text() == ">q\nACGT\n"


def test_outputs_kept_under_a_release_root_are_replaced_as_usual_but_not_what_it_reads(tmp_path):
    root = _release(tmp_path / "release", [_row()])
    mine = root / "runs" / "cluster"
    mine.mkdir(parents=True)
    (mine / "clustering.json").write_text("{}")
    assert check_output(mine, overwrite=True, inputs=(root,)) == mine
    with pytest.raises(OutputExistsError, match="replacing it would change the input"):
        check_output(root / "bioscan5m" / "metadata", overwrite=True, inputs=(root,))


def test_new_outputs_may_go_inside_an_input_but_never_into_a_folder_they_copy(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    assert check_output(model / "probe.json", inputs=(model,)) == model / "probe.json"
    with pytest.raises(OutputExistsError, match="which this command copies"):
        check_output(model / "space", inputs=(model,), copies_inputs=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputExistsError, match="file is not a folder"):
        check_output(tmp_path / "file" / "out")


def test_file_outputs_are_refused_too(sample_root, tmp_path, capsys):
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    code, err = _cli(capsys, "probe", "--model", tmp_path, "--data", sample_root, "--out", existing)
    assert code == 2 and existing.read_text() == "{}"
    _one_clear_line(err, "already exists")


def test_staged_folder_keeps_the_old_output_when_the_new_one_fails(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(out, overwrite=True) as staging:
            (staging / "weights").write_text("half")
            raise RuntimeError("killed")
    assert (out / "weights").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model"]
    with staged_folder(out, overwrite=True) as staging:
        (staging / "weights").write_text("new")
    assert (out / "weights").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]


# ============================================================================================== nothing deleted
def test_demo_refuses_a_workdir_it_did_not_make(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "bioscan-5m").mkdir(parents=True)
    (workdir / "bioscan-5m" / "README.md").write_text("my export")
    with pytest.raises(OutputExistsError, match="was not made by the demo"):
        bioscan5m.apps.demo.run_demo(workdir, num_records=200, models=False)
    assert (workdir / "bioscan-5m" / "README.md").read_text() == "my export"


def test_demo_replaces_only_outputs_it_recorded(tmp_path):
    folder = DemoFolder(tmp_path / "demo")
    path, made_before = folder.output("bioscan-5m")
    assert not made_before and json.loads((folder.path / DEMO_MARKER).read_text())["created"] == ["bioscan-5m"]
    path.mkdir()
    (folder.path / "clibd").mkdir()  # somebody's folder put into the demo's workdir
    again = DemoFolder(folder.path)
    assert again.output("bioscan-5m") == (path, True)
    with pytest.raises(OutputExistsError, match="clibd was not made by the demo"):
        again.output("clibd")


def test_demo_dataset_steps_run_twice_in_the_same_workdir(tmp_path, capsys):
    workdir = tmp_path / "demo"
    bioscan5m.apps.demo.run_demo(workdir, num_records=200, models=False)
    first = (workdir / "bioscan-5m" / "README.md").stat().st_mtime_ns
    bioscan5m.apps.demo.run_demo(workdir, num_records=200, models=False)  # replaces its own export, asks nothing
    assert (workdir / "bioscan-5m" / "README.md").stat().st_mtime_ns != first
    assert sorted(p.name for p in workdir.iterdir()) == sorted([DEMO_MARKER, "release", "bioscan-5m"])


@pytest.mark.slow
def test_export_killed_mid_way_leaves_nothing_that_loads_and_is_cleaned_next_time(sample_root, tmp_path):
    out = tmp_path / "bioscan-5m"
    process = _bioscan5m("export", sample_root, out, "--configs", "cropped_256")
    kill_when(process, lambda: any(tmp_path.glob(".bioscan-5m.partial-*/.cache/*")))
    stale = list(tmp_path.glob(".bioscan-5m.partial-*"))
    assert not out.exists() and len(stale) == 1
    bioscan5m.export(sample_root, out, configs=["dna"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bioscan-5m"]  # the killed run's staging is gone
    assert datasets.get_dataset_config_names(str(out)) == ["dna"]


def test_a_kill_between_the_two_renames_of_an_overwrite_restores_the_old_output(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    aside = tmp_path / f".out.replaced-{dead}"  # the old output, moved aside by a run killed right after
    aside.mkdir()
    (aside / "weights").write_text("old")
    staging = tmp_path / f".out.partial-{os.uname().nodename}-{dead}-0badc0de"  # the new one, never put in place
    staging.mkdir()
    (staging / ".bioscan5m-staging").write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename}))
    half = tmp_path / f".emb.npy.partial-{os.uname().nodename}-{dead}-0badc0de"  # a killed run's staging file
    half.write_bytes(b"\0" * 100)
    with pytest.raises(OutputExistsError, match="already exists"):  # the old output is back, so it is refused
        with staged_folder(out):
            pass
    assert (out / "weights").read_text() == "old" and not aside.exists() and not staging.exists()
    clean_stale_staging(tmp_path / "emb.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cleaning_never_touches_staging_of_a_live_run_or_of_another_program(tmp_path):
    out = tmp_path / "out"
    live = tmp_path / ".out.partial-live"
    live.mkdir()
    (live / ".bioscan5m-staging").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    foreign = tmp_path / ".out.partial-foreign"
    foreign.mkdir()
    (foreign / "data").write_text("not ours")
    assert clean_stale_staging(out) == [] and live.is_dir() and (foreign / "data").is_file()


# ============================================================================================== no escape
@pytest.mark.parametrize("field, value", [("processid", "../../../etc/x"), ("processid", "/abs"),
                                          ("processid", ".."), ("chunk", "../.."), ("chunk", "a/b")])
def test_path_fields_from_the_csv_are_plain_names(tmp_path, field, value):
    row = _row("PID2-24")
    fields = row.split(",")
    fields[release.COLUMNS.index(field)] = value
    root = _release(tmp_path, [_row(), ",".join(fields)])
    with pytest.raises(MetadataError, match=rf"line 3: column '{field}' is '{value}', which is not a plain name"):
        bioscan5m.read_metadata(root, split="all")
    with pytest.raises(MetadataError, match=rf"line 3: column '{field}'"):
        next(iter(bioscan5m.load_dataset(root, "dna", split="train", streaming=True)))


def test_an_image_path_that_leaves_the_package_folder_by_a_link_is_refused(tmp_path):
    root = _release(tmp_path / "root", [_row()])
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_tiny_jpeg())
    folder = release.image_package_dir(root, "cropped_256") / "train"
    folder.mkdir(parents=True)
    (folder / "PID1-24.jpg").symlink_to(outside)
    with pytest.raises(UnsafeImagePathError, match="outside the image folder"):
        next(iter(bioscan5m.load_dataset(root, "cropped_256", split="train", streaming=True)))


@pytest.fixture(scope="module")
def kmer_index(sample_root, tmp_path_factory):
    return bioscan5m.build_index(sample_root, tmp_path_factory.mktemp("index") / "kmer", model="kmer",
                                 calibration=None)


def _tampered_copy(index: Path, tmp_path: Path, edit_keys) -> Path:
    """A copy of ``index`` whose key table was edited, with the manifest's file sizes updated to match: an index
    crafted by someone, not one damaged by accident."""
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    keys = pd.read_parquet(copy / "keys.parquet")
    edit_keys(keys, copy).to_parquet(copy / "keys.parquet", index=False)
    manifest = json.loads((copy / "index.json").read_text())
    manifest["files"]["keys.parquet"] = (copy / "keys.parquet").stat().st_size
    (copy / "index.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("thumbnail", ["/etc/passwd", "../../../etc/passwd", "thumbnails/../../secret.jpg"])
def test_thumbnails_named_by_the_index_stay_inside_it(kmer_index, tmp_path, thumbnail):
    def edit(keys, _):
        keys.loc[0, "thumbnail"] = thumbnail
        return keys

    with pytest.raises(KeyIndexError, match=r"row 0: thumbnail .* refusing to serve it"):
        bioscan5m.load_index(_tampered_copy(kmer_index, tmp_path, edit))


def test_a_thumbnail_that_is_a_link_out_of_the_index_is_refused(kmer_index, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(kmer_index, copy)
    name = pd.read_parquet(copy / "keys.parquet")["thumbnail"].iloc[0]
    (copy / name).unlink()
    (copy / name).symlink_to("/etc/hostname")
    with pytest.raises(KeyIndexError, match="refusing to serve it"):
        bioscan5m.load_index(copy)


def test_the_index_finds_its_model_from_any_working_directory_and_checks_it(space_demo_index, tmp_path,
                                                                            monkeypatch):
    manifest = json.loads((space_demo_index / "index.json").read_text())
    assert not Path(manifest["encoder"]["model"]).is_absolute() and len(manifest["encoder"]["model_sha256"]) == 64
    monkeypatch.chdir(tmp_path)
    assert bioscan5m.load_index(space_demo_index).encoder.kind == "clibd"
    model = (space_demo_index / manifest["encoder"]["model"]).resolve()
    other = tmp_path / "other-model"
    shutil.copytree(model, other, ignore=shutil.ignore_patterns("index", "no_alignment"))
    config = json.loads((other / "config.json").read_text())
    config["logit_scale_init_value"] = 1.0
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(KeyIndexError, match="not the one this index was built with"):
        bioscan5m.load_index(space_demo_index, model=other)


# ============================================================================================== no silent change
def test_max_nucleotides_none_keeps_whole_barcodes_everywhere(sample_root, tmp_path):
    whole = bioscan5m.read_metadata(sample_root, split="train", max_nucleotides=None)["dna_barcode"]
    longest = whole.str.len().max()
    assert longest > 660  # the sample has reads longer than the 660 the loaders keep by default
    prepared = bioscan5m.load_dataset(sample_root, "dna", split="train", max_nucleotides=None,
                                      cache_dir=str(tmp_path / "cache"))
    streamed = bioscan5m.load_dataset(sample_root, "dna", split="train", max_nucleotides=None, streaming=True)
    assert prepared["dna_barcode"] == whole.tolist() == [r["dna_barcode"] for r in streamed]
    builder = bioscan5m.Bioscan5M(config_name="dna", data_dir=str(sample_root), max_nucleotides=None)
    assert builder.config.max_nucleotides is None
    default = bioscan5m.load_dataset(sample_root, "dna", split="train", streaming=True)
    assert max(len(r["dna_barcode"]) for r in default) == 660
    out = bioscan5m.export(sample_root, tmp_path / "export", configs=["dna"], split="train", max_nucleotides=None)
    exported = datasets.load_dataset(str(out), "dna", split="train", cache_dir=str(tmp_path / "cache3"))
    assert max(len(b) for b in exported["dna_barcode"]) == longest
    assert "full length (no truncation)" in (out / "README.md").read_text()


@pytest.mark.parametrize("value", [0, -5, True, 6.5, "660"])
def test_meaningless_max_nucleotides_are_refused_everywhere(sample_root, tmp_path, value):
    message = "max_nucleotides must be a positive integer, or None"
    with pytest.raises(ValueError, match=message):
        bioscan5m.read_metadata(sample_root, split="train", max_nucleotides=value)
    with pytest.raises(ValueError, match=message):
        bioscan5m.load_dataset(sample_root, "dna", split="train", max_nucleotides=value, streaming=True)
    with pytest.raises(ValueError, match=message):
        bioscan5m.Bioscan5MConfig(name="dna", image_package=None, max_nucleotides=value)
    with pytest.raises(ValueError, match=message):
        bioscan5m.export(sample_root, tmp_path / "out", configs=["dna"], max_nucleotides=value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_index_build_killed_mid_way_leaves_the_old_index_whole(kmer_index, sample_root, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(kmer_index, index)
    process = _bioscan5m("index", "build", "--data", sample_root, "--out", index, "--splits", "all",
                         "--calibration", "none", "--overwrite")
    kill_when(process, lambda: any(tmp_path.glob(".index.partial-*/dna.faiss")))
    old = bioscan5m.load_index(index)
    assert len(old.keys) == old.manifest["keys"] == len(bioscan5m.read_metadata(sample_root, "train+key_unseen"))
    bioscan5m.build_index(sample_root, index, model="kmer", splits="all", calibration=None, overwrite=True)
    assert len(bioscan5m.load_index(index).keys) == len(bioscan5m.read_metadata(sample_root, "all"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_an_index_file_the_manifest_does_not_list_is_never_read(kmer_index, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(kmer_index, copy)
    outside = tmp_path / "elsewhere.parquet"
    (copy / "keys.parquet").rename(outside)
    (copy / "keys.parquet").symlink_to(outside)          # a link out of the folder, left out of the manifest
    manifest = json.loads((copy / "index.json").read_text())
    del manifest["files"]["keys.parquet"]
    (copy / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(KeyIndexError, match="keys.parquet: not a file the manifest lists"):
        bioscan5m.load_index(copy)


def test_an_index_whose_keys_disagree_with_its_manifest_is_refused(kmer_index, tmp_path):
    with pytest.raises(KeyIndexError, match="key rows but the manifest records"):
        bioscan5m.load_index(_tampered_copy(kmer_index, tmp_path, lambda keys, _: keys.iloc[1:]))
    damaged = tmp_path / "damaged"
    shutil.copytree(kmer_index, damaged)
    with open(damaged / "dna.faiss", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(KeyIndexError, match="dna.faiss: missing or not the file the manifest records"):
        bioscan5m.load_index(damaged)


# ============================================================================================== no bomb
def test_iter_image_batches_refuses_a_pixel_bomb_from_its_header():
    bomb = _jpeg_claiming(20000, 20000)
    dataset = datasets.Dataset.from_dict({"processid": ["BOMB1-24"], "image": [{"bytes": bomb, "path": "bomb.jpg"}]},
                                         features=datasets.Features({"processid": datasets.Value("string"),
                                                                     "image": datasets.Image()}))
    with pytest.raises(ImageDecodeError, match=r"record 'BOMB1-24' \(bomb.jpg\): 20000x20000 pixels .* over the limit"):
        next(bioscan5m.iter_image_batches(dataset, batch_size=1))
    with pytest.raises(ImageDecodeError, match=r"<bytes>: 5000x5000 pixels .* over the limit of 10 MP"):
        decode_image(_png_claiming(5000, 5000), max_pixels=10_000_000)
    assert decode_image(_tiny_jpeg(), max_pixels=None).shape == (16, 16, 3)


def test_corrupt_jpeg_data_behind_intact_markers_names_the_record():
    data = bytearray(_tiny_jpeg((64, 64)))
    start = data.find(b"\xff\xda") + 20
    data[start:-2] = b"\xff" * (len(data) - 2 - start)
    dataset = datasets.Dataset.from_dict({"processid": ["BAD1-24"], "image": [{"bytes": bytes(data), "path": "b.jpg"}]},
                                         features=datasets.Features({"processid": datasets.Value("string"),
                                                                     "image": datasets.Image()}))
    with pytest.raises(ImageDecodeError, match=r"record 'BAD1-24'"):
        next(bioscan5m.iter_image_batches(dataset, batch_size=1))


def test_a_zip_member_larger_than_the_cap_is_never_read(tmp_path):
    root = _release(tmp_path, [_row()])
    with zipfile.ZipFile(root / "BIOSCAN_5M_cropped_256_train.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bioscan5m/images/cropped_256/train/PID1-24.jpg", b"\0" * (40 << 20))
    assert (root / "BIOSCAN_5M_cropped_256_train.zip").stat().st_size < 200_000
    with pytest.raises(ImageTooLargeError, match=r"PID1-24\.jpg: 41,943,040 bytes .* over the 33,554,432-byte limit"):
        next(iter(bioscan5m.load_dataset(root, "cropped_256", split="train", streaming=True)))
    with pytest.raises(bioscan5m.data.builder.MissingImageError, match="not a complete JPEG"):  # None: no cap, so read
        next(iter(bioscan5m.load_dataset(root, "cropped_256", split="train", streaming=True, max_image_bytes=None)))
    with pytest.raises(ValueError, match="max_image_bytes must be a positive integer or None"):
        bioscan5m.load_dataset(root, "cropped_256", split="train", streaming=True, max_image_bytes=0)


def test_fasta_size_is_capped_by_the_bytes_read_so_devices_are_capped_too():
    with pytest.raises(InputError, match=f"over {MAX_FASTA_BYTES / 1e6:.0f} MB"):
        read_fasta_file("/dev/zero")


def test_a_photograph_with_too_many_pixels_gets_the_pixel_limit_message(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(20000, 20000))
    with pytest.raises(InputError, match="too many pixels"):
        open_photo(path)


def test_a_download_without_a_checksum_is_checked_before_it_is_marked_verified(tmp_path):
    import http.server
    import threading

    page = b"<html>503 Service Unavailable</html>"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.zip"
        with pytest.raises(ChecksumError, match="not a usable zip archive"):
            fetch(RemoteFile("archive.zip", (url,), md5=None), tmp_path)
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(ChecksumError, match=f"{len(page)} bytes, but the release file has 1,000"):
            fetch(RemoteFile("archive.zip", (url,), md5=None, size=1000), tmp_path)
    finally:
        server.shutdown()
    placed = tmp_path / "placed.zip"
    with zipfile.ZipFile(placed, "w") as archive:
        archive.writestr("bioscan5m/images/cropped_256/val/A.jpg", _tiny_jpeg())
    assert fetch(RemoteFile("placed.zip", ("http://127.0.0.1:9/",), md5=None), tmp_path) == placed
    assert (tmp_path / "placed.zip.verified").is_file()


# ============================================================================================== one clear line
def test_cli_bad_inputs_get_one_line_and_status_2(sample_root, tmp_path, capsys):
    bad = _release(tmp_path / "bad", [_row(), _row("PID2-24", lat="north")])
    code, err = _cli(capsys, "export", bad, tmp_path / "out1", "--configs", "dna", "--splits", "train")
    assert code == 2
    _one_clear_line(err, "line 3", "'PID2-24'", "'coord-lat'", "'north'")

    missing = _release(tmp_path / "missing", [_row()])
    release.image_package_dir(missing, "cropped_256").mkdir(parents=True)
    code, err = _cli(capsys, "export", missing, tmp_path / "out2", "--configs", "cropped_256", "--splits", "train")
    assert code == 2
    _one_clear_line(err, "PID1-24", "not found")

    corrupt = _release(tmp_path / "corrupt", [_row()])
    (corrupt / "BIOSCAN_5M_cropped_256_train.zip").write_bytes(b"PK\x03\x04 not really a zip")
    code, err = _cli(capsys, "info", corrupt)
    assert code == 2
    _one_clear_line(err, "BIOSCAN_5M_cropped_256_train.zip", "not a valid zip archive")

    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x00" * 64)
    code, err = _cli(capsys, "convert-barcodebert", fake, "--out", tmp_path / "converted")
    assert code == 2 and not (tmp_path / "converted").exists()
    _one_clear_line(err, "model.safetensors", "not a readable safetensors file")

    assert not any(tmp_path.glob("out*"))
    for argv in (["export", sample_root, tmp_path / "out3", "--max-shard-mb", "0"],
                 ["identify", "--index", tmp_path, "--dna", "ACGT", "--top", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([str(a) for a in argv])
        assert exit_.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


def test_options_that_would_do_nothing_or_nothing_sensible_are_refused(sample_root, tmp_path, capsys):
    for argv, words in [
        (["export", sample_root, tmp_path / "e1", "--private"], ["private applies to the Hub repo"]),
        (["export", sample_root, tmp_path / "e2", "--push-to-hub", "bad repo name!!"], ["bad repo name!!"]),
        (["download", tmp_path / "d", "--split", "train"], ["no image package is asked for"]),
        (["delimit", "--data", sample_root, "--method", "upgma", "--threshold", "0.02", "--min-overlap", "5000",
          "--out", tmp_path / "d1"], ["min_overlap must be", "from 1 to 660"]),
    ]:
        code, err = _cli(capsys, *argv)
        assert code == 2, argv
        _one_clear_line(err, *words)
    assert list(tmp_path.iterdir()) == []                      # refused before anything was written
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cluster", "--embeddings", "kmer", "--data", str(sample_root), "--distance-threshold", "-1"])
    assert exit_.value.code == 2 and "expected a positive finite number" in capsys.readouterr().err


def test_embeddings_that_are_pickled_objects_are_refused_by_name(sample_root, tmp_path, capsys):
    import numpy as np

    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    code, err = _cli(capsys, "cluster", "--embeddings", pickled, "--data", sample_root, "--split", "test",
                     "--out", tmp_path / "c")
    assert code == 2 and "allow_pickle" not in err
    _one_clear_line(err, "objects.npy", "pickled data", "never loaded")


def test_cli_identify_on_a_photograph_bomb(space_demo_index, tmp_path, capsys):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(_jpeg_claiming(20000, 20000))
    code, err = _cli(capsys, "identify", "--index", space_demo_index, "--image", bomb)
    assert code == 2
    _one_clear_line(err, "too many pixels")
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        bioscan5m.identify(space_demo_index, dna="ACGT" * 50, top_k=-1)


def test_the_page_answers_a_pixel_bomb_with_the_limit_and_cleans_uploads(space_demo_index, tmp_path):
    from bioscan5m.apps import space

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(20000, 20000))
    index = bioscan5m.load_index(space_demo_index)
    message = space.run_identification(index, None, None, str(bomb))[0]
    assert "Cannot identify" in message and "too many pixels" in message
    assert space.build_demo(index).delete_cache == (space.UPLOAD_LIFETIME_SECONDS, space.UPLOAD_LIFETIME_SECONDS)


def test_an_empty_split_names_the_file(tmp_path):
    root = _release(tmp_path, [])
    with pytest.raises(MetadataError, match=r"metadata\.csv: split 'train' is empty"):
        bioscan5m.load_dataset(root, "dna", split="train", cache_dir=str(tmp_path / "cache"))


def test_a_byte_that_is_not_utf8_is_reported_with_its_line(tmp_path):
    root = _release(tmp_path, [_row(), _row("PID2-24")])
    path = root / release.METADATA_RELPATH
    path.write_bytes(path.read_bytes().replace(b"Aus bus", b"Aus b\xe9s", 1))
    with pytest.raises(MetadataError, match=r"line 2: not UTF-8 text \(byte 0xe9"):
        bioscan5m.read_metadata(root, split="all")


def test_a_column_named_twice_is_refused(tmp_path):
    with pytest.raises(MetadataError, match=r"column\(s\) 'species' appear more than once"):
        bioscan5m.read_metadata(_release(tmp_path, [_row() + ","], header=HEADER + ",species"), split="all")


@pytest.mark.parametrize("lat", ["nan", "inf", "999", "-90.5"])
def test_coordinates_out_of_range_are_refused(tmp_path, lat):
    with pytest.raises(MetadataError, match=rf"line 3 \(processid 'PID2-24'\): column 'coord-lat' is '{lat}', "
                                            r"expected between -90 and 90"):
        bioscan5m.read_metadata(_release(tmp_path, [_row(), _row("PID2-24", lat=lat)]), split="all")


@pytest.mark.parametrize("barcode, problem", [
    ("HELLO WORLD", "is 'HELLO WORLD', not a DNA barcode"), ("", "is empty"),
    ("ACGT<script>", "is .ACGT<script>., not a DNA barcode"), ("acgt", "is 'acgt', not"),
    ("ACGT\u212a", "is 'ACGT\u212a', not"),
])
def test_a_barcode_that_is_not_dna_is_refused(tmp_path, barcode, problem):
    good = bioscan5m.read_metadata(_release(tmp_path / "good", [_row(barcode="ACGTNRY-ACGT")]), split="all")
    assert good["dna_barcode"].tolist() == ["ACGTNRY-ACGT"]          # IUPAC codes and gaps
    rows = [_row(), _row("PID2-24", barcode=barcode), _row("PID3-24")]    # the bad record between good ones
    with pytest.raises(MetadataError, match=rf"line 3 \(processid 'PID2-24'\): column 'dna_barcode' {problem}"):
        bioscan5m.read_metadata(_release(tmp_path / "bad", rows), split="all")


def test_the_smallest_documented_sample_fills_every_split(tmp_path):
    root = bioscan5m.make_sample(tmp_path / "s", num_records=200, packages=())
    counts = bioscan5m.read_metadata(root, split="all")["split"].value_counts()
    assert all(counts.get(split, 0) > 0 for split in release.SPLITS), counts


@pytest.mark.parametrize("field, value, words", [("k_mer", "six", "k_mer must be an integer of at least 1"),
                                                 ("classifier_ranks", "species", "classifier_ranks must be a list"),
                                                 ("num_hidden_layers", -1, "num_hidden_layers must be an integer")])
def test_a_config_json_with_wrong_types_is_refused(tmp_path, field, value, words):
    from transformers import AutoConfig

    from bioscan5m.modeling import BarcodeBertConfig

    BarcodeBertConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=words):
        AutoConfig.from_pretrained(tmp_path)


def test_a_clibd_folder_is_refused_where_a_barcodebert_is_read(tmp_path):
    from bioscan5m.embedding import load_encoder

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clibd"}))
    with pytest.raises(ValueError, match="is a CLIBD model; this reads BarcodeBERT models"):
        load_encoder(tmp_path)


@pytest.mark.parametrize("freeze, message", [({"text": 0}, "not one of the modalities trained"),
                                             ({"image": -1}, "a whole number of at least 0")])
def test_freezing_what_is_not_trained_is_refused_before_any_work(tmp_path, freeze, message):
    from bioscan5m.training.train_clibd import train_clibd

    with pytest.raises(ValueError, match=message):
        train_clibd(tmp_path / "no-release", tmp_path / "out", modalities=("image", "dna"), freeze=freeze)
    assert not (tmp_path / "out").exists()
