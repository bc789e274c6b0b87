"""DNA training: protocol data, MLM collators, pretraining/fine-tuning on the Trainer (also under torchrun with
2 gloo processes), probes and embeddings at scale. Tiny models and few steps keep it quick."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel

import bioscan5m
from bioscan5m.tokenization import KmerTokenizerFast
from bioscan5m.training.collators import KmerMLMCollator, random_offsets
from bioscan5m.training.data import load_barcode_sets, unique_barcodes
from bioscan5m.embedding import embed_dataset, embed_sequences
from bioscan5m.training.finetune import finetune, predict_ranks
from bioscan5m.training.pretrain import pretrain
from bioscan5m.evaluation.encoder_probes import probe

CLI = str(Path(sys.executable).parent / "bioscan5m")


@pytest.fixture(scope="module")
def real_barcodes(bold_root) -> list[str]:
    return bioscan5m.read_metadata(bold_root, split="val_unseen").dna_barcode.iloc[:200].tolist()


@pytest.fixture(scope="module")
def tiny_model(sample_root, tmp_path_factory) -> Path:
    """A tiny BarcodeBERT pretrained for a few steps on the synthetic release."""
    return pretrain(sample_root, tmp_path_factory.mktemp("tiny") / "model", preset="tiny", max_steps=30)


def test_protocol_uses_unique_barcodes_across_all_splits(bold_root):
    sets = load_barcode_sets(bold_root)
    seen = set()
    for role, frame in sets.frames.items():
        barcodes = set(frame.dna_barcode)
        assert len(barcodes) == len(frame), role
        assert not barcodes & seen, f"{role} repeats barcodes of an earlier role"
        assert not frame.dna_barcode.str.endswith("N").any()
        seen |= barcodes
    assert set(sets["pretrain"].split) == {"pretrain", "other_heldout"}
    # Fewer unique barcodes than records: the de-duplication is global and real.
    records = bioscan5m.read_metadata(bold_root, split="test")
    assert len(sets["test"]) < len(records)
    # The first occurrence in file order is kept, as in BarcodeBERT's data_split.py.
    frame = records.iloc[:50].assign(dna_barcode=["ACGTN"] * 25 + ["ACGT"] * 25)
    assert unique_barcodes(frame).processid.tolist() == [records.processid.iloc[0]]


def test_barcodebert_masking_scheme(real_barcodes):
    tokenizer = KmerTokenizerFast(k=4)
    collator = KmerMLMCollator(tokenizer, scheme="barcodebert", random_offset=False, seed=1)
    batch = collator([{"dna_barcode": s} for s in real_barcodes])
    original = tokenizer(real_barcodes, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    special = original < 2
    masked = batch["input_ids"] == tokenizer.mask_token_id
    assert not (masked & special).any()
    assert 0.47 < masked[~special].float().mean() < 0.53
    # Loss over every non-special token, masked or not, with the original ids as targets.
    assert torch.equal(batch["labels"] != -100, ~special)
    assert torch.equal(batch["labels"][~special], original[~special])
    assert torch.equal(batch["input_ids"][~masked], original[~masked])


def test_standard_masking_scheme(real_barcodes):
    tokenizer = KmerTokenizerFast(k=4, vocabulary="standard")
    collator = KmerMLMCollator(tokenizer, scheme="standard", random_offset=False, seed=2)
    batch = collator([{"dna_barcode": s} for s in real_barcodes])
    original = tokenizer(real_barcodes, padding="longest", truncation=True, return_tensors="pt")["input_ids"]
    scored = batch["labels"] != -100
    candidates = original > tokenizer.mask_token_id        # k-mers only; specials and [UNK] are never scored
    assert not (scored & ~candidates).any()
    assert 0.13 < scored[candidates].float().mean() < 0.17
    assert torch.equal(batch["labels"][scored], original[scored])
    replaced_by_mask = (batch["input_ids"] == tokenizer.mask_token_id)[scored].float().mean()
    assert 0.75 < replaced_by_mask < 0.85


def test_random_offset_drops_fewer_than_k_bases():
    import random

    shifted = random_offsets(["ACGTACGTAC"] * 400, 5, random.Random(0))
    assert {10 - len(s) for s in shifted} == {0, 1, 2, 3, 4}
    assert all("ACGTACGTAC".endswith(s) for s in shifted)


def test_pretraining_learns_and_saves_a_complete_folder(tiny_model):
    files = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "modeling_barcodebert.py"} <= files
    assert not any(name.endswith((".bin", ".pt")) for name in files)
    summary = json.loads((tiny_model / "pretraining.json").read_text())
    assert summary["steps"] == 30
    assert summary["train_loss"] < math.log(4 ** 4)            # better than guessing k-mers uniformly
    card = (tiny_model / "README.md").read_text()
    assert f"{summary['pretrain_barcodes']:,} unique barcodes" in card
    # Results are in percent everywhere: the summary's MLM accuracy is the card's.
    # Twice uniform guessing among the 4**4 k-mers, in percent (as a fraction it would be far below), and on the card.
    assert summary["mlm_accuracy"] > 2 * 100 / 4 ** 4 and f"{summary['mlm_accuracy']:.1f} %" in card
    assert 'from_pretrained("model", trust_remote_code=True)' in card and ".partial" not in card  # its final name
    assert not any(path.name.startswith(".") for path in tiny_model.iterdir())  # no staging marker left


def test_finetune_reports_the_accuracy_of_the_saved_model(tiny_model, sample_root, tmp_path):
    results = finetune(tiny_model, sample_root, tmp_path / "ft", ranks=("genus", "species"), preset="tiny",
                       max_steps=10, align_to_reference=True)
    saved = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert saved["species_test_accuracy"] == results["species_test_accuracy"]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # Switched on for fine-tuning, the reference alignment is saved with the model (and named on its card).
    assert not AutoTokenizer.from_pretrained(tiny_model).align_to_reference
    assert AutoTokenizer.from_pretrained(tmp_path / "ft").align_to_reference
    assert "COI-5P reference coordinates" in (tmp_path / "ft" / "README.md").read_text()
    # The card's metadata, read back by huggingface_hub: the pipeline of the head, the base model, and the measured
    # accuracies in a model-index, each with its split, in percent.
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "ft" / "README.md").data
    assert card.pipeline_tag == "text-classification" and card.base_model == tiny_model.name
    assert card.library_name == "transformers" and card.datasets == ["bioscan-ml/BIOSCAN-5M"]
    measured = {result.metric_name: (result.dataset_split, result.metric_value) for result in card.eval_results}
    assert measured["species accuracy (closed world)"] == ("test", pytest.approx(results["species_test_accuracy"]))
    pretrained_card = ModelCard.load(tiny_model / "README.md").data
    assert pretrained_card.pipeline_tag == "fill-mask" and pretrained_card.base_model is None

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft")
    test = load_barcode_sets(sample_root, roles=("test",))["test"]
    predicted = predict_ranks(model, test.dna_barcode.tolist(), batch_size=64)["species"]
    truth = test.species_index.to_numpy()
    assert results["species_test_accuracy"] == pytest.approx(100 * np.mean(predicted[truth >= 0] == truth[truth >= 0]))
    assert model.config.rank_labels["species"][0] == load_barcode_sets(sample_root, ("test",)).label_names["species"][0]


def test_probe_end_to_end_on_the_sample(tiny_model, sample_root, tmp_path):
    results = probe(tiny_model, sample_root, out_path=tmp_path / "probe.json", batch_size=64)
    assert json.loads((tmp_path / "probe.json").read_text()) == results
    sets = load_barcode_sets(sample_root, roles=("test_unseen",))
    assert results["test_unseen_queries"] == int((sets["test_unseen"].genus_index >= 0).sum())
    # The 1-NN genus figure, recomputed by hand: cosine nearest train key of each test_unseen barcode.
    model = AutoModel.from_pretrained(tiny_model)
    keys = load_barcode_sets(sample_root, roles=("train",)).labelled("train", "genus")
    queries = sets.labelled("test_unseen", "genus")
    key_x, query_x = (model.embed(frame["dna_barcode"].tolist(), return_numpy=True) for frame in (keys, queries))
    key_x /= np.linalg.norm(key_x, axis=1, keepdims=True)
    query_x /= np.linalg.norm(query_x, axis=1, keepdims=True)
    nearest = keys["genus_index"].to_numpy()[(query_x @ key_x.T).argmax(axis=1)]
    expected = 100 * np.mean(nearest == queries["genus_index"].to_numpy())
    assert results["knn_genus_test_unseen"] == pytest.approx(expected, abs=100 / len(queries) + 1e-9)


def test_embed_sequences_to_disk_and_with_datasets_map(tiny_model, real_barcodes, tmp_path):
    model = AutoModel.from_pretrained(tiny_model)
    expected = model.embed(real_barcodes[:40], return_numpy=True)
    written = embed_sequences(tiny_model, real_barcodes[:40], batch_size=8, dtype=np.float16,
                              out_path=tmp_path / "emb.npy", progress=False)
    on_disk = np.load(tmp_path / "emb.npy")
    assert on_disk.dtype == np.float16 and on_disk.shape == expected.shape
    np.testing.assert_allclose(on_disk, expected, rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(np.asarray(written), on_disk)
    # The helper takes a loaded model with a head as well as a folder.
    from transformers import AutoModelForMaskedLM

    via_head = embed_sequences(AutoModelForMaskedLM.from_pretrained(tiny_model), real_barcodes[:40], progress=False)
    np.testing.assert_allclose(via_head, expected, rtol=1e-5, atol=1e-5)

    dataset = datasets.Dataset.from_dict({"dna_barcode": real_barcodes[:40]})
    mapped = embed_dataset(dataset, tiny_model, batch_size=8, num_proc=2)
    np.testing.assert_allclose(np.array(mapped["embedding"]), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_pretrain_under_accelerate_launch_with_two_cpu_processes(sample_root, tmp_path):
    # The flags of docs/training.md: --multi_gpu picks accelerate's distributed launcher (on CPU too; --cpu would
    # start one process whatever --num_processes says), and the package sets use_cpu and gloo itself.
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "29517", CLI, "pretrain", "--data", str(sample_root), "--out", str(out), "--preset", "tiny",
               "--max-steps", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "pretraining.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["replicas_in_sync"] is True  # gradients were averaged (DDP over gloo), not two separate runs
    assert "find_unused_parameters" not in result.stderr  # DDP skips the unused-parameter search: none are unused
    assert result.stdout.count("pretrained model written to") == 1  # one process reports
    assert AutoModel.from_pretrained(out).embed(["ACGT" * 100]).shape == (1, 32)


@pytest.mark.parametrize("arguments", [["sample", "{tmp}/sample", "--records", "200"],
                                       ["info", "{tmp}/missing"]], ids=["finished", "failed"])
@pytest.mark.slow
def test_cli_closes_the_torchrun_process_group_before_exiting(arguments, tmp_path):
    """An open gloo group can abort a process at exit, so every command, finished or failed, closes it."""
    script = ("import torch.distributed as dist\n"
              f"dist.init_process_group('gloo', init_method='file://{tmp_path}/store', rank=0, world_size=1)\n"
              "from bioscan5m.cli import main\n"
              f"code = main({[a.format(tmp=tmp_path) for a in arguments]!r})\n"
              "print(code, dist.is_initialized())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    code, still_open = result.stdout.split()[-2:]
    assert (code, still_open) == ("0" if arguments[0] == "sample" else "2", "False")
