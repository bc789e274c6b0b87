"""Export to a Hub-native folder that stock `datasets` loads with no code of ours, streaming included."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

import bioscan5m
from bioscan5m import hub
from bioscan5m.data import export as export_module
from bioscan5m import release
from bioscan5m.cli import main


@pytest.fixture(scope="module")
def exported(sample_root, tmp_path_factory):
    return bioscan5m.export(sample_root, tmp_path_factory.mktemp("export") / "bioscan-5m", configs=["cropped_256", "dna"])


def test_card_declares_every_config_and_split(exported):
    text = (exported / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"] == "cc-by-3.0"
    configs = {c["config_name"]: c for c in header["configs"]}
    assert set(configs) == {"cropped_256", "dna"} and configs["cropped_256"].get("default") is True
    for config in configs.values():
        assert [f["split"] for f in config["data_files"]] == list(release.SPLITS)
    assert "Synthetic data" in text and "@inproceedings{gharaee2024bioscan5m" in text
    assert re.search(r"\| `species_index`\s*\| ClassLabel", text) and re.search(r"\| `coord-lat`\s*\| float64\s*\|", text)


def test_card_metadata_reads_back_through_huggingface_hub(exported, sample_root, tmp_path):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exported / "README.md")
    data = card.data.to_dict()
    info = {entry["config_name"]: {f["name"]: f for f in entry["features"]} for entry in data["dataset_info"]}
    assert set(info) == {"cropped_256", "dna"} and "image" in info["cropped_256"] and "image" not in info["dna"]
    assert info["dna"]["species_index"]["dtype"]["class_label"]["names"]  # the label names travel with the card
    assert {"image-classification", "feature-extraction"} <= set(data["task_categories"])
    assert data["source_datasets"] == ["original"] and data["license"] == "cc-by-3.0"
    assert 'load_dataset("bioscan-5m", "cropped_256"' in card.text and "<this repo" not in card.text
    for section in ("## An example record", "## How the data was collected", "## Limitations"):
        assert section in card.text
    assert "'processid': 'SYNTH" in card.text
    # A DNA-only export promises no photographs.
    dna_only = bioscan5m.export(sample_root, tmp_path / "dna-only", configs=["dna"], split="val_unseen")
    dna_card = DatasetCard.load(dna_only / "README.md")
    assert "image-classification" not in dna_card.data.task_categories and "multimodal" not in dna_card.data.tags
    assert "no images" in dna_card.text and "JPEG" not in dna_card.text


def test_stock_datasets_loads_every_config_and_split(exported, sample_root, tmp_path):
    reference = bioscan5m.load_dataset(sample_root, "cropped_256", cache_dir=str(tmp_path / "cache"))
    assert datasets.get_dataset_config_names(str(exported)) == ["cropped_256", "dna"]
    for config in ("cropped_256", "dna"):
        loaded = datasets.load_dataset(str(exported), config, cache_dir=str(tmp_path / "hub-cache"))
        assert {k: len(v) for k, v in loaded.items()} == {k: len(v) for k, v in reference.items()}
        assert loaded["train"].features["species_index"] == reference["train"].features["species_index"]
    key_unseen = datasets.load_dataset(str(exported), "cropped_256", split="key_unseen", cache_dir=str(tmp_path / "c2"))
    original = reference["key_unseen"]
    assert key_unseen["processid"] == original["processid"]
    assert key_unseen[0]["image"].tobytes() == original[0]["image"].tobytes()


def test_streaming_from_the_exported_folder(exported):
    stream = datasets.load_dataset(str(exported), "cropped_256", split="test_unseen", streaming=True)
    record = next(iter(stream))
    assert record["image"].size[1] >= 256 and record["processid"].startswith("SYNTH")
    assert stream.features["genus_index"].int2str(record["genus_index"]) == record["genus"]


def test_exported_folder_loads_in_a_process_without_our_package(exported, tmp_path):
    script = (
        "import sys; sys.modules['bioscan5m'] = None\n"  # importing our package would fail here
        "import datasets\n"
        f"ds = datasets.load_dataset({str(exported)!r}, 'dna', split='val_unseen', cache_dir={str(tmp_path)!r})\n"
        "print(len(ds), ds.features['order_index'].names[:1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 0


def test_interrupted_export_leaves_nothing_that_loads(sample_root, tmp_path, monkeypatch):
    out = tmp_path / "bioscan-5m"
    calls = {"n": 0}
    real = export_module.split_statistics

    def fail_on_third_split(dataset):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C half way
        return real(dataset)

    monkeypatch.setattr(export_module, "split_statistics", fail_on_third_split)
    with pytest.raises(KeyboardInterrupt):
        bioscan5m.export(sample_root, out, configs=["dna"])
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_export_refuses_to_overwrite(sample_root, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("somebody's export")
    with pytest.raises(FileExistsError, match="already exists"):
        bioscan5m.export(sample_root, tmp_path / "out")


@pytest.mark.slow
def test_cli_reports_errors_in_one_line(sample_root, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("somebody's export")
    result = subprocess.run([sys.executable, "-m", "bioscan5m.cli", "export", str(sample_root), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("bioscan5m export: error:") and "already exists" in result.stderr
    assert "Traceback" not in result.stderr


def test_push_to_hub_uploads_the_finished_folder(sample_root, tmp_path, monkeypatch):
    """The Hub cannot be reached from here: check what would be sent, and that it is sent only when complete."""
    import huggingface_hub

    calls = []

    class RecordingApi:
        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls.append(("create_repo", repo_id, repo_type))

        def upload_folder(self, repo_id, folder_path, repo_type, commit_message):
            calls.append(("upload_folder", repo_id, repo_type, sorted(p.name for p in Path(folder_path).iterdir())))

        def upload_large_folder(self, repo_id, folder_path, repo_type, private):
            calls.append(("upload_large_folder", repo_id, repo_type, private))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    bioscan5m.export(sample_root, tmp_path / "out", configs=["dna"], push_to_hub="me/bioscan-5m")
    assert calls == [("create_repo", "me/bioscan-5m", "dataset"),
                     ("upload_folder", "me/bioscan-5m", "dataset", ["README.md", "dna"])]
    # A large export goes through upload_large_folder (resumable), private when asked, from the command line too.
    calls.clear()
    monkeypatch.setattr(hub, "LARGE_UPLOAD_BYTES", 1)
    assert main(["export", "--data", str(sample_root), str(tmp_path / "large"), "--configs", "dna",
                 "--push-to-hub", "me/large", "--private"]) == 0
    assert calls == [("create_repo", "me/large", "dataset"), ("upload_large_folder", "me/large", "dataset", True)]
