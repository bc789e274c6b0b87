"""Contrastive fine-tuning: the supervised contrastive loss against its definition, grouped batches on real
barcodes, and the end-to-end run on the Trainer (saved encoder, probes of the saved folder, the CLI's checks)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from bioscan5m.cli import main
from bioscan5m.modeling import BarcodeBertForContrastiveLearning
from bioscan5m.modeling.modeling_barcodebert import supervised_contrastive_loss
from bioscan5m.tokenization import KmerTokenizerFast
from bioscan5m.training.collators import KmerGroupedCollator
from bioscan5m.training.contrastive import contrastive_finetune
from bioscan5m.training.data import load_barcode_sets
from bioscan5m.training.pretrain import pretrain
from bioscan5m.evaluation.encoder_probes import probe


def _loss_by_definition(z: np.ndarray, labels: list[int], temperature: float) -> float:
    """Khosla et al. (2020), eq. 2, written out term by term."""
    terms = []
    for i, label in enumerate(labels):
        positives = [p for p, other in enumerate(labels) if p != i and other == label and label >= 0]
        if not positives:
            continue
        denominator = sum(math.exp(z[i] @ z[a] / temperature) for a in range(len(labels)) if a != i)
        terms.append(-np.mean([math.log(math.exp(z[i] @ z[p] / temperature) / denominator) for p in positives]))
    return float(np.mean(terms))


def test_supervised_contrastive_loss_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(7, 5, generator=generator, dtype=torch.float64), dim=1)
    # Label 2 has a single member and -1 is unknown: both only serve as negatives.
    labels = [0, 0, 1, 1, 1, 2, -1]
    loss = supervised_contrastive_loss(z, torch.tensor(labels), temperature=0.1)
    assert loss.item() == pytest.approx(_loss_by_definition(z.numpy(), labels, 0.1), rel=1e-9)


def test_supervised_contrastive_loss_rewards_separated_taxa_and_is_zero_without_pairs():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    separated = torch.nn.functional.normalize(torch.eye(3).repeat_interleave(2, dim=0) + 0.01, dim=1)
    mixed = separated[torch.tensor([0, 2, 4, 1, 3, 5])]
    assert supervised_contrastive_loss(separated, labels, 0.1) < supervised_contrastive_loss(mixed, labels, 0.1)
    z = torch.randn(3, 4, requires_grad=True)
    no_pairs = supervised_contrastive_loss(torch.nn.functional.normalize(z, dim=1), torch.tensor([0, 1, -1]), 0.1)
    assert no_pairs.item() == 0.0
    no_pairs.backward()                                   # a batch without pairs still back-propagates (zeros)
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_grouped_collator_builds_species_groups_from_real_barcodes(bold_root):
    train = load_barcode_sets(bold_root, roles=("train",)).labelled("train", "species").iloc[:3000]
    labels = train[["genus_index", "species_index"]].to_numpy()
    tokenizer = KmerTokenizerFast(k=6, align_to_reference=True)
    collator = KmerGroupedCollator(tokenizer, train.dna_barcode.tolist(), labels, group_size=4, seed=0)
    counts = train.species_index.value_counts()
    large = train.index[train.species_index == counts.index[0]][0]
    single = train.index[train.species_index.isin(counts.index[counts == 1])][0]
    pair = train.index[train.species_index.isin(counts.index[counts == 2])][0]
    rows = [large, single, pair]
    batch = collator([{"row": row} for row in rows])
    # The lone barcode of its species comes alone (a negative only); the others bring 3 of their species, drawn
    # with replacement when the species has fewer.
    assert batch["input_ids"].shape[0] == 9 and batch["labels"].shape == (9, 2)
    sizes = [4, 1, 4]
    starts = np.cumsum([0, *sizes[:-1]])
    for start, size, row in zip(starts, sizes, rows):
        assert (batch["labels"][start:start + size] == torch.tensor(labels[row])).all()   # one species per group
    expected = tokenizer(train.dna_barcode.iloc[large], truncation=True)["input_ids"]
    assert batch["input_ids"][0, :len(expected)].tolist() == expected      # the anchor comes first, unaltered
    assert len({tuple(batch["input_ids"][i].tolist()) for i in range(4)}) == 4      # four distinct barcodes
    assert len({tuple(batch["input_ids"][i].tolist()) for i in range(5, 9)}) == 2   # both of the pair
    with pytest.raises(ValueError, match="group_size"):
        KmerGroupedCollator(tokenizer, train.dna_barcode.tolist(), labels, group_size=1)


@pytest.fixture(scope="module")
def tiny_model(sample_root, tmp_path_factory):
    return pretrain(sample_root, tmp_path_factory.mktemp("tiny") / "model", preset="tiny", max_steps=20)


def test_contrastive_finetune_saves_an_encoder_whose_probes_it_reports(tiny_model, sample_root, tmp_path):
    out = tmp_path / "contrastive"
    results = contrastive_finetune(tiny_model, sample_root, out, preset="tiny", max_steps=6, group_size=4)
    assert results["steps"] == 6 and results["ranks"] == ["genus", "species"]
    assert json.loads((out / "results.json").read_text()) == results

    files = {path.name for path in out.iterdir()}
    assert {"model.safetensors", "modeling_barcodebert.py", "tokenizer.json", "README.md"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_barcodebert.BarcodeBertModel"
    assert config["contrastive_ranks"] == ["genus", "species"]
    assert "supervised contrastive on genus, species" in (out / "README.md").read_text()
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md").data
    assert card.pipeline_tag == "feature-extraction" and card.base_model == tiny_model.name
    assert {r.metric_name: r.metric_value for r in card.eval_results} == {
        "linear probe, species accuracy": pytest.approx(results["linear_probe_species_test"]),
        "1-NN genus accuracy (open world)": pytest.approx(results["knn_genus_test_unseen"])}

    # The folder is the trained encoder: it differs from the pretrained one, and the reported probes are its own.
    barcodes = load_barcode_sets(sample_root, roles=("test",))["test"].dna_barcode.tolist()[:32]
    trained = AutoModel.from_pretrained(out).embed(barcodes, return_numpy=True)
    assert not np.allclose(trained, AutoModel.from_pretrained(tiny_model).embed(barcodes, return_numpy=True))
    again = probe(out, sample_root)
    for key in ("linear_probe_species_test", "knn_genus_test_unseen", "test_unseen_queries"):
        assert again[key] == pytest.approx(results[key])


def test_contrastive_model_loss_uses_every_rank(tiny_model, sample_root):
    model = BarcodeBertForContrastiveLearning.from_pretrained(tiny_model, contrastive_ranks=["genus", "species"],
                                                             contrastive_rank_weights=[2.0, 1.0])
    tokenizer = model.bert.tokenizer
    batch = tokenizer(["ACGTACGTTTGA" * 50, "ACGTACGTTTGC" * 50, "TTGACCAT" * 80, "TTGACCAA" * 80],
                      padding=True, return_tensors="pt")
    labels = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 2]])
    output = model(**batch, labels=labels)
    assert output.loss.item() == pytest.approx(2.0 * output.rank_losses["genus"].item()
                                               + output.rank_losses["species"].item(), rel=1e-5)
    assert torch.allclose(output.embeddings.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="contrastive_ranks"):
        BarcodeBertForContrastiveLearning.from_pretrained(tiny_model)


def test_cli_refuses_classification_options_for_the_contrastive_objective(tiny_model, sample_root, tmp_path,
                                                                          capsys):
    for option in (["--freeze-encoder"], ["--head-init", "random"]):
        assert main(["finetune", "--objective", "contrastive", "--model", str(tiny_model), "--data",
                     str(sample_root), "--out", str(tmp_path / "x"), *option]) == 2
        assert "apply to --objective classification only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_contrastive_finetune_under_torchrun_with_two_gloo_processes(tiny_model, sample_root, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
               str(Path(sys.executable).parent / "bioscan5m"), "finetune", "--objective", "contrastive",
               "--model", str(tiny_model), "--data", str(sample_root), "--out", str(out), "--preset", "tiny",
               "--max-steps", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["replicas_in_sync"] is True  # one model trained on both processes' groups, not two
