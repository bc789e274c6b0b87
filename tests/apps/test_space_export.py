"""`bioscan5m space export`: the folder is a Space on its own — started from the folder, not from this checkout, it
identifies a real barcode through gradio_client; nothing of this machine is named in it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import bioscan5m
from bioscan5m import cli
from bioscan5m.apps.space_export import export_space


@pytest.fixture(scope="module")
def real_index(bold_root, tmp_path_factory):
    return bioscan5m.build_index(bold_root, tmp_path_factory.mktemp("real") / "index", model="kmer",
                                 splits="key_unseen", calibration="val_unseen+other_heldout",
                                 max_calibration_queries=500)


def test_export_writes_a_self_contained_space(real_index, tmp_path, capsys):
    out = tmp_path / "space"
    assert cli.main(["space", "export", str(out), "--index", str(real_index)]) == 0
    assert "hf upload" in capsys.readouterr().out
    for name in ("README.md", "app.py", "requirements.txt", "LICENSE", "bioscan5m/__init__.py",
                 "bioscan5m/apps/space.py", "index/index.json", "index/keys.parquet", "index/dna.faiss"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("__pycache__"))
    readme = (out / "README.md").read_text()
    header = readme.split("---")[1]
    assert "sdk: gradio" in header and "app_file: app.py" in header and "sdk_version: " in header
    assert "4,954 reference specimens of 72 named species from the release `bold-insects`" in readme
    assert "CC-BY-3.0" in readme and "arxiv.org/abs/2406.12723" in readme and "Synthetic" not in readme
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert any(line.startswith("torch==") and "+" not in line for line in requirements)
    assert not any(line.startswith(("gradio", ".", "/")) or ".whl" in line for line in requirements)
    assert any(line.startswith("faiss-cpu") for line in requirements)
    # The page's extras are in (models, the index's search), the test tools and the package itself are not.
    assert any(line.startswith("transformers") for line in requirements)
    assert not any(line.startswith(("pytest", "selenium", "bioscan")) for line in requirements)
    for path in out.rglob("*"):  # no path of this machine in the text the Space shows or runs
        if path.suffix in (".md", ".py", ".txt", ".json"):
            assert str(tmp_path) not in path.read_text(errors="ignore"), path
    # An existing folder is left alone unless --overwrite.
    assert cli.main(["space", "export", str(out), "--index", str(real_index)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_space_takes_only_the_index_files_the_manifest_lists(real_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(real_index, index)
    (index / "notes.txt").write_text("private")            # something the user left beside the index
    out = export_space(tmp_path / "space", index)
    assert sorted(path.name for path in (out / "index").iterdir()) == sorted(path.name for path in real_index.iterdir())
    with pytest.raises(bioscan5m.staging.OutputExistsError, match="which this command copies"):
        export_space(index / "space", index)


@pytest.mark.slow
def test_the_exported_space_runs_from_its_folder_and_identifies_a_real_barcode(real_index, bold_root, tmp_path):
    from gradio_client import Client

    out = export_space(tmp_path / "space", real_index)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Started as the Space starts it: `python app.py` in the folder, nothing of this checkout on the path.
    env = {**os.environ, "PYTHONPATH": "", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=out, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        deadline = time.time() + 180
        while client is None and time.time() < deadline:
            if server.poll() is not None:
                pytest.fail(server.stdout.read()[-3000:])
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # not listening yet
                time.sleep(1)
        assert client is not None, "the Space did not start within 180 s"
        record = bioscan5m.read_metadata(bold_root, split="test_unseen").iloc[3]
        status, lineage, *_ = client.predict(record["dna_barcode"], None, None, api_name="/identify")
        assert f"Identified as *{record['species']}*" in status
        # app.py imports the package from its own folder, not the installed one.
        imported = subprocess.run([sys.executable, "-c", "import app, bioscan5m; print(bioscan5m.__file__)"],
                                  cwd=out, env=env, capture_output=True, text=True, timeout=120)
        assert imported.stdout.strip().startswith(str(out / "bioscan5m")), imported.stdout + imported.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_export_copies_the_model_of_a_model_index_and_only_its_files(sample_root, tiny_barcodebert, tmp_path):
    model_dir = tmp_path / "bb"
    shutil.copytree(tiny_barcodebert, model_dir)
    (model_dir / "training_args.bin").write_bytes(b"not for the Space")  # what a training run may leave
    index = bioscan5m.build_index(sample_root, tmp_path / "index", model=str(model_dir), splits="key_unseen",
                                  calibration=None, thumbnails=False)
    out = export_space(tmp_path / "space", index)
    copied = {path.name for path in (out / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_barcodebert.py"} <= copied
    assert "training_args.bin" not in copied
    assert '"--model", str(HERE / "model")' in (out / "app.py").read_text()
    # The copy is the model the index was built with: it loads with the index's recorded fingerprint.
    assert bioscan5m.load_index(out / "index", model=out / "model").model_dir == out / "model"
