"""CLIBD contrastive training on the synthetic paired sample: learning, saving, baselines, CLI, pretrained DNA start."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch


# The 2 project cores are shared: CLIBD steps run on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(sample_root, tmp_path_factory):
    from bioscan5m.training.train_clibd import train_clibd

    out = tmp_path_factory.mktemp("clibd")
    summary = train_clibd(sample_root, out, preset="tiny", max_steps=30, logging_steps=5, augment=False,
                          disable_tqdm=True, seed=0)
    return out, summary


def test_training_lowers_the_contrastive_loss(trained):
    out, summary = trained
    losses = [entry["loss"] for entry in summary["log_history"]]
    assert summary["steps"] == 30 and len(losses) == 6
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2]), losses
    saved = json.loads((out / "training.json").read_text())
    assert saved["modalities"] == ["image", "dna", "text"] and saved["split"] == "pretrain+train"
    for name in ("model.safetensors", "config.json", "modeling_clibd.py", "modeling_barcodebert.py",
                 "image_processing_clibd.py", "processing_clibd.py", "processor_config.json", "tokenizer.json",
                 "dna_tokenizer/tokenizer_config.json", "no_alignment/model.safetensors"):
        assert (out / name).is_file(), name
    assert not (out / "training_args.bin").exists()
    from transformers import AutoProcessor

    assert type(AutoProcessor.from_pretrained(out, trust_remote_code=True)).__name__ == "ClibdProcessor"
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "clibd" in card.data.tags
    assert "AutoProcessor.from_pretrained" in card.text and re.search(r"\|\s*steps\s*\|\s*30\s*\|", card.text)


def test_alignment_beats_the_no_alignment_baseline(trained, sample_root):
    from transformers import AutoModel

    from bioscan5m.evaluation.clibd_retrieval import load_retrieval_sets, retrieval_for_model

    out, _ = trained
    sets = load_retrieval_sets(sample_root)
    pairs = ("image->dna", "image->image")
    aligned = retrieval_for_model(AutoModel.from_pretrained(out), sets, pairs=pairs, top_k=(1, 5))
    baseline = retrieval_for_model(AutoModel.from_pretrained(out / "no_alignment"), sets, pairs=pairs, top_k=(1, 5))
    for rank in ("order", "family"):
        # Image queries against DNA keys are at chance without alignment; training must lift them clearly.
        gain = aligned["image->dna"][rank]["seen"]["micro_top1"] - baseline["image->dna"][rank]["seen"]["micro_top1"]
        assert gain > 0.15, (rank, aligned["image->dna"][rank]["seen"], baseline["image->dna"][rank]["seen"])


def test_cli_trains_from_a_pretrained_barcodebert_with_frozen_dna(sample_root, tmp_path):
    from safetensors.torch import load_file

    from bioscan5m import cli
    from bioscan5m.modeling import BarcodeBertConfig
    from bioscan5m.modeling.modeling_barcodebert import BarcodeBertForMaskedLM
    from bioscan5m.tokenization import KmerTokenizerFast

    bb = tmp_path / "bb"
    torch.manual_seed(1)
    mlm = BarcodeBertForMaskedLM(BarcodeBertConfig(k_mer=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=64))
    mlm.save_pretrained(bb)
    KmerTokenizerFast(k=4).save_pretrained(bb)
    out = tmp_path / "clibd"
    code = cli.main(["train-clip", "--data", str(sample_root), "--dna-model", str(bb), "--out", str(out),
                     "--preset", "tiny", "--max-steps", "3", "--freeze", "dna", "--modalities", "image,dna",
                     "--metadata", "geo"])
    assert code == 0
    encoder = {k.removeprefix("bert."): v for k, v in load_file(bb / "model.safetensors").items() if k.startswith("bert.")}
    for folder in (out / "no_alignment", out):       # starts from BarcodeBERT, and frozen stays there
        weights = load_file(folder / "model.safetensors")
        dna = {k.removeprefix("dna_model."): v for k, v in weights.items() if k.startswith("dna_model.")}
        assert dna.keys() == encoder.keys()
        assert all(torch.equal(dna[k], encoder[k]) for k in encoder)
    before, after = load_file(out / "no_alignment" / "model.safetensors"), load_file(out / "model.safetensors")
    assert not torch.equal(before["image_projection.weight"], after["image_projection.weight"])
    config = json.loads((out / "config.json").read_text())
    assert config["metadata_features"] == ["geo"] and config["dna_config"]["hidden_size"] == 32
    summary = json.loads((out / "training.json").read_text())
    assert summary["modalities"] == ["image", "dna"] and summary["freeze"] == {"dna": 0}

    # `retrieve` recognises the CLIBD folder and runs the multimodal protocol, the no-alignment model beside it.
    assert cli.main(["retrieve", "--model", str(out), "--data", str(sample_root), "--pairs", "image->dna",
                     "--max-records-per-split", "40", "--out", str(tmp_path / "retrieval")]) == 0
    report = json.loads((tmp_path / "retrieval" / "retrieval_clibd.json").read_text())
    assert set(report["results"]) == {"aligned", "no_alignment"}
    assert set(report["results"]["aligned"]) == {"image->dna"}


def test_bad_training_requests_fail_clearly(sample_root, tmp_path):
    from bioscan5m.training.train_clibd import ClibdCollator, train_clibd

    with pytest.raises(ValueError, match="at least two modalities"):
        train_clibd(sample_root, tmp_path / "x", preset="tiny", modalities=("image",))
    with pytest.raises(ValueError, match="Unknown metadata"):
        train_clibd(sample_root, tmp_path / "x", preset="tiny", metadata_features=("altitude",))
    with pytest.raises(ValueError, match="no specimen size"):
        from bioscan5m.training.train_clibd import size_statistics

        size_statistics([None, float("nan")])
    collator = ClibdCollator(processor=None, modalities=("dna",))
    with pytest.raises(ValueError, match="no DNA barcode"):
        collator([{"dna_barcode": None}])


@pytest.mark.slow
def test_train_clip_under_torchrun_with_two_gloo_processes(sample_root, tmp_path):
    """The same command under torchrun: two CPU processes (gloo) whose gradients are averaged."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
               "-m", "bioscan5m.cli", "train-clip", "--data", str(sample_root), "--out", str(out), "--preset", "tiny",
               "--max-steps", "2", "--max-records", "200"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "training.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert summary["replicas_in_sync"] is True
