"""The Space (bioscan5m.apps.space, run by spaces/app.py) through ``gradio_client`` against a server on 127.0.0.1: a full identification with
photographs and map data, and every kind of bad input answered with a message in the page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import bioscan5m
from bioscan5m import release

APP_PATH = Path(__file__).resolve().parents[2] / "spaces" / "app.py"


@pytest.fixture(scope="module")
def app():
    from bioscan5m.apps import space

    return space


def test_space_entry_point_runs_the_package_page():
    """The Space's app.py is the package's page: its --help is the page's own command line."""
    done = subprocess.run([sys.executable, str(APP_PATH), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--index" in done.stdout and "identification" in done.stdout


@pytest.fixture(scope="module")
def client(app, space_demo_index):
    from gradio_client import Client

    demo = app.serve(space_demo_index, host="127.0.0.1", port=None, prevent_thread_lock=True, quiet=True)
    assert demo.local_url.startswith("http://127.0.0.1:")
    yield Client(demo.local_url, verbose=False)
    demo.close()


def identify(client, dna=None, fasta=None, photo=None):
    from gradio_client import handle_file

    files = [handle_file(str(p)) if p is not None else None for p in (fasta, photo)]
    return client.predict(dna, *files, api_name="/identify")


def test_page_identifies_a_barcode_with_lineage_photos_table_and_map(client, sample_root):
    record = bioscan5m.read_metadata(sample_root, split="test").iloc[5]
    status, lineage, species, gallery, neighbours, where, details = identify(client, dna=record["dna_barcode"])
    assert f"Identified as *{record['species']}*" in status
    assert [row[:2] for row in lineage["data"]] == [[rank, record[rank]] for rank in ("order", "family", "genus", "species")]
    assert species["label"] == record["species"]
    assert len(gallery) == 10 and all(Path(item["image"]).is_file() for item in gallery)
    first = details["neighbours"][0]
    assert gallery[0]["caption"].startswith(f"{first['species']} · {first['dna_bin']} · {first['country']}")
    assert [row[1] for row in neighbours["data"]] == [n["processid"] for n in details["neighbours"]]
    with Image.open(where) as drawn:  # the sites over the world outline, drawn on the server
        assert drawn.size == (840, 420)
    assert details["novelty"]["possibly_undescribed"] is False


def test_page_flags_a_specimen_of_a_held_out_genus(client, sample_root):
    record = bioscan5m.read_metadata(sample_root, split="other_heldout").iloc[0]
    status, lineage, *_, details = identify(client, dna=f">{record['processid']}\n{record['dna_barcode']}")
    assert "Possibly undescribed species" in status
    assert lineage["data"][3][1] == f"possibly undescribed (nearest: {details['ranks'][3]['label']})"
    assert details["query"]["record_id"] == record["processid"]
    assert details["novelty"]["similarity"] < details["novelty"]["threshold"]


def test_page_identifies_a_photograph_with_the_trained_clibd(client, sample_root):
    """The embedded default is a CLIBD trained on the synthetic release: a photograph alone is identified."""
    record = bioscan5m.read_metadata(sample_root, split="test").iloc[3]
    photo = release.image_package_dir(sample_root, "cropped_256") / release.image_relpath("test", None, record["processid"])
    status, lineage, species, gallery, neighbours, where, details = identify(client, photo=photo)
    assert status.startswith(("### Identified as", "### 🟠 Possibly undescribed")), status
    assert details["query"]["modalities"] == ["image"]
    assert [row[0] for row in lineage["data"]] == ["order", "family", "genus", "species"]
    assert len(gallery) == 10 and len(details["neighbours"]) == 10


def test_page_answers_bad_input_with_a_message(client, sample_root, tmp_path):
    barcode = bioscan5m.read_metadata(sample_root, split="test")["dna_barcode"].iloc[0]
    multi = tmp_path / "two.fasta"
    multi.write_text(f">first\n{barcode}\n>second\n{barcode}\n")
    not_image = tmp_path / "specimen.jpg"
    not_image.write_text("this is text, not a JPEG")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    cases = [
        (dict(), "Nothing to identify"),
        (dict(dna="ACGTACGTNNXX" + barcode), "'X' at position 11"),
        (dict(dna=barcode * 4), "2,632 nucleotides long"),
        (dict(fasta=multi), "FASTA holds 2 records (first, second)"),
        (dict(dna=barcode, fasta=multi), "Both a pasted barcode and a FASTA file"),
        (dict(photo=not_image), "not an image"),
        (dict(photo=bomb), "9000x9000 pixels"),
    ]
    for inputs, message in cases:
        status, lineage, species, gallery, neighbours, where, details = identify(client, **inputs)
        assert status.startswith("### ⚠️ Cannot identify") and message in status, (inputs, status)
        assert "Traceback" not in status and details is None and gallery == []
