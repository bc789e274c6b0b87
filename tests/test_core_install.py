"""The install's extras: without any, the dataset works (no torch, transformers, scikit-learn or gradio) and a
command that needs one names it; with `evaluation` but not `models`, species delimitation and the aligned key index
work.

Each check runs in a fresh interpreter that sees this installation's packages but the hidden ones, as if they had
never been installed (this test process has them all imported already).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from bioscan5m.cli import EXTRA_OF_MODULE

REPO = Path(__file__).resolve().parents[1]
#: Distributions whose import name differs from their own.
MODULE_OF_DISTRIBUTION = {"scikit-learn": "sklearn", "umap-learn": "umap", "faiss-cpu": "faiss"}


def hiding(view: Path, extras: tuple[str, ...]) -> dict:
    """The environment of an interpreter started with ``-S`` that sees every installed package but those of
    ``extras``, as if they had never been installed: ``view`` filled with links to the others, then this checkout."""
    modules = {module for module, extra in EXTRA_OF_MODULE.items() if extra in extras}
    # The names on disk: import names, and distribution names in ``*.dist-info``.
    on_disk = modules | {distribution.replace("-", "_") for distribution, module in MODULE_OF_DISTRIBUTION.items()
                         if module in modules}
    for site in dict.fromkeys((sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])):
        for entry in Path(site).iterdir():
            if entry.name.split("-")[0].split(".")[0].lower() not in on_disk and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    return {**os.environ, "PYTHONPATH": os.pathsep.join((str(view), str(REPO)))}


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory) -> dict:
    return hiding(tmp_path_factory.mktemp("site-without-extras"), ("models", "evaluation", "app"))


@pytest.fixture(scope="module")
def without_models(tmp_path_factory) -> dict:
    return hiding(tmp_path_factory.mktemp("site-without-models"), ("models", "app"))


def run(environment: dict, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env=environment)


def test_each_extra_declares_the_modules_the_cli_names_it_for():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    def modules(requirements):
        names = (re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower() for requirement in requirements)
        return {MODULE_OF_DISTRIBUTION.get(name, name) for name in names}

    assert not modules(project["dependencies"]) & set(EXTRA_OF_MODULE)
    for extra in ("models", "evaluation", "app"):
        declared = modules(project["optional-dependencies"][extra])
        assert declared == {module for module, named in EXTRA_OF_MODULE.items() if named == extra}, extra


@pytest.mark.slow
def test_dataset_streams_prepares_and_exports_without_extras(without_extras, tmp_path):
    probe = run(without_extras, """
import sys
import bioscan5m
from bioscan5m.cli import main
assert "torch" not in sys.modules
root = bioscan5m.make_sample(sys.argv[1] + "/release", num_records=300, packages=("cropped_256",), folders=False)
first = next(iter(bioscan5m.load_dataset(root, "cropped_256", split="test", streaming=True)))
print("image", first["image"].convert("RGB").size, first["processid"])
print("train", len(bioscan5m.load_dataset(root, "dna", split="train", cache_dir=sys.argv[1] + "/cache")))
print("metadata", len(bioscan5m.read_metadata(root, split="test")))
print("export", main(["export", "--data", str(root), "--configs", "dna", sys.argv[1] + "/parquet"]))
print("torch", "torch" in sys.modules)
""", str(tmp_path))
    assert probe.returncode == 0, probe.stderr[-3000:]
    keys = ("image", "train", "metadata", "export", "torch")
    lines = dict(line.split(" ", 1) for line in probe.stdout.splitlines() if line.startswith(keys))
    assert lines["image"].startswith("(") and int(lines["train"]) > 0 and int(lines["metadata"]) > 0
    assert lines["export"] == "0" and list((tmp_path / "parquet").rglob("*.parquet"))
    assert lines["torch"] == "False"


@pytest.mark.slow
def test_a_command_needing_an_extra_names_it(without_extras, tmp_path):
    probe = run(without_extras, """
import sys
from bioscan5m.cli import main
sys.exit(main(["pretrain", "--data", sys.argv[1], "--out", sys.argv[1] + "/model"]))
""", str(tmp_path))
    assert probe.returncode == 2
    assert probe.stderr.strip().splitlines() == [
        "bioscan5m pretrain: error: this command needs torch, which is not installed: pip install 'bioscan5m[models]' "
        "(or 'bioscan5m[all]' for every command)"]
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_delimitation_and_the_aligned_key_index_need_no_models(without_models, bold_root, tmp_path):
    probe = run(without_models, """
import sys
from bioscan5m.cli import main
root, out = sys.argv[1], sys.argv[2]
print("delimit", main(["delimit", "--data", root, "--split", "test_unseen", "--method", "single",
                       "--threshold", "0.02", "--out", out + "/delimit"]))
print("index", main(["index", "build", "--data", root, "--split", "key_unseen", "--out", out + "/index"]))
print("torch", "torch" in sys.modules or "transformers" in sys.modules)
""", str(bold_root), str(tmp_path))
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert [line for line in probe.stdout.splitlines() if line.startswith(("delimit ", "index ", "torch "))] == [
        "delimit 0", "index 0", "torch False"]
    assert (tmp_path / "delimit" / "clusters.tsv").is_file() and (tmp_path / "index").is_dir()
