"""BarcodeBERT models: Auto classes, save/load (in-package and trust_remote_code in a fresh process), embed,
multi-rank classification and conversion of original-format checkpoints."""

from __future__ import annotations

import argparse
import fractions
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
)

import bioscan5m
from bioscan5m.modeling import (
    BarcodeBertConfig,
    BarcodeBertForMaskedLM,
    BarcodeBertForSequenceClassification,
    BarcodeBertModel,
)
from bioscan5m.modeling.convert_barcodebert import convert_barcodebert
from bioscan5m.tokenization import KmerTokenizerFast

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def barcodes(bold_root) -> list[str]:
    frame = bioscan5m.read_metadata(bold_root, split="val_unseen")
    return frame.dna_barcode.iloc[::25].tolist()


@pytest.fixture(scope="module")
def saved_mlm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-barcodebert")
    torch.manual_seed(0)
    BarcodeBertForMaskedLM(BarcodeBertConfig(k_mer=5, **TINY)).save_pretrained(folder)
    KmerTokenizerFast(k=5).save_pretrained(folder)
    return folder


def test_saved_folder_is_complete_and_loads_with_every_auto_class(saved_mlm, barcodes):
    files = {path.name for path in saved_mlm.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "configuration_barcodebert.py", "modeling_barcodebert.py", "tokenization_kmer.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    auto_map = json.loads((saved_mlm / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"}

    assert isinstance(AutoConfig.from_pretrained(saved_mlm), BarcodeBertConfig)
    assert isinstance(AutoTokenizer.from_pretrained(saved_mlm), KmerTokenizerFast)
    mlm = AutoModelForMaskedLM.from_pretrained(saved_mlm).eval()
    base = AutoModel.from_pretrained(saved_mlm).eval()
    assert isinstance(base, BarcodeBertModel)
    encoded = KmerTokenizerFast(k=5)(barcodes[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(mlm.bert(**encoded).last_hidden_state, base(**encoded).last_hidden_state)


def test_embed_is_the_mask_aware_mean_in_input_order(saved_mlm, barcodes):
    model = AutoModel.from_pretrained(saved_mlm)
    # Mixed lengths in unsorted order, batch size smaller than the set: exercises length sorting and scatter-back.
    sequences = [barcodes[0][:300], barcodes[1], barcodes[2][:450], barcodes[3][:120], barcodes[4]]
    embedded = model.embed(sequences, batch_size=2)
    assert embedded.shape == (5, 32)
    tokenizer = KmerTokenizerFast(k=5)
    for row, sequence in zip(embedded, sequences):
        # One at a time and with N-padding to 660 like the original: the same vector (padding is masked out).
        encoded = tokenizer([sequence], padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0]
        real = encoded["attention_mask"][0].bool()
        torch.testing.assert_close(row, hidden[real].mean(0), atol=1e-5, rtol=1e-4)
    assert isinstance(model.embed(sequences[:2], return_numpy=True), np.ndarray)
    with pytest.raises(ValueError, match="list of sequences"):
        model.embed(sequences[0])


def test_reading_frames_average_the_start_offsets_and_tolerate_shifted_barcodes(saved_mlm, barcodes):
    model = AutoModel.from_pretrained(saved_mlm)
    sequences = barcodes[:6]
    averaged = model.embed(sequences, reading_frames=5)
    by_hand = torch.stack([model.embed([s[offset:] for s in sequences]) for offset in range(5)]).mean(0)
    torch.testing.assert_close(averaged, by_hand)
    # A real barcode and the same barcode one nucleotide later share no k-mer in one frame; over all k frames they
    # share k - 1 of them, so the two vectors become near-identical.
    shifted = [s[1:] for s in sequences]
    one_frame = torch.nn.functional.cosine_similarity(model.embed(sequences), model.embed(shifted))
    all_frames = torch.nn.functional.cosine_similarity(averaged, model.embed(shifted, reading_frames=5))
    assert (all_frames > one_frame).all() and (all_frames > 0.95).all()
    for frames in (0, 6):
        with pytest.raises(ValueError, match="reading_frames must be between 1 and k_mer=5"):
            model.embed(sequences, reading_frames=frames)


def test_trust_remote_code_in_a_fresh_process_without_the_package(saved_mlm, barcodes, tmp_path):
    expected = AutoModel.from_pretrained(saved_mlm).embed(barcodes[:6], return_numpy=True)
    script = textwrap.dedent(f"""
        import sys, json
        sys.modules["bioscan5m"] = None          # the package cannot be imported in this process
        import numpy as np
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
        folder = {str(saved_mlm)!r}
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
        sequences = json.load(open({str(tmp_path / "seqs.json")!r}))
        np.save({str(tmp_path / "remote.npy")!r}, model.embed(sequences, return_numpy=True))
        print(type(tokenizer).__module__, type(model).__module__)
    """)
    (tmp_path / "seqs.json").write_text(json.dumps(barcodes[:6]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout and "bioscan5m" not in result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), expected)


def test_multi_rank_classifier_ignores_missing_labels_and_round_trips(tmp_path, barcodes):
    config = BarcodeBertConfig(k_mer=4, classifier_ranks=["genus", "species"],
                               rank_labels={"genus": ["g0", "g1"], "species": ["s0", "s1", "s2"]}, **TINY)
    model = BarcodeBertForSequenceClassification(config).eval()
    encoded = KmerTokenizerFast(k=4)(barcodes[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**encoded, labels=torch.tensor([[0, -1], [1, 2], [0, 0]]))
        genus_only = model(**encoded, labels=torch.tensor([[0, -1], [1, -1], [0, -1]]))
    assert out.rank_logits["species"].shape == (3, 3) and out.logits.shape == (3, 2)
    by_hand = (torch.nn.functional.cross_entropy(out.rank_logits["genus"], torch.tensor([0, 1, 0]))
               + torch.nn.functional.cross_entropy(out.rank_logits["species"][1:], torch.tensor([2, 0])))
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(genus_only.loss, torch.nn.functional.cross_entropy(out.rank_logits["genus"],
                                                                                  torch.tensor([0, 1, 0])))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.rank_labels["species"] == ["s0", "s1", "s2"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(**encoded).rank_logits["species"], out.rank_logits["species"])
    # The encoder alone loads from the classifier folder (1-NN probes, embeddings): same weights, the heads are
    # expected to go unused rather than reported as unexpected.
    encoder, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"]
    assert not info["missing_keys"]
    torch.testing.assert_close(encoder.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)


def test_classifier_folders_name_their_classes_for_pipelines_and_the_hub(tmp_path, saved_mlm, barcodes):
    from transformers import pipeline

    config = BarcodeBertConfig(k_mer=5, classifier_ranks=["species", "genus"],
                               rank_labels={"species": ["Aedes aegypti", "Culex pipiens"], "genus": ["Aedes", "Culex"]},
                               **TINY)
    assert config.num_labels == 2 and config.id2label == {0: "Aedes aegypti", 1: "Culex pipiens"}
    assert config.label2id == {"Aedes aegypti": 0, "Culex pipiens": 1}
    folder = tmp_path / "classifier"
    BarcodeBertForSequenceClassification(config).save_pretrained(folder)
    KmerTokenizerFast(k=5).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["id2label"] == {"0": "Aedes aegypti", "1": "Culex pipiens"} and saved["rank_labels"]["genus"] == ["Aedes", "Culex"]
    classify = pipeline("text-classification", model=str(folder), trust_remote_code=True, top_k=None)
    answer = classify([barcodes[0]])[0]  # one list of {label, score} per input
    assert sorted(item["label"] for item in answer) == ["Aedes aegypti", "Culex pipiens"]
    assert sum(item["score"] for item in answer) == pytest.approx(1.0, abs=1e-5)
    # The usual recipe: a new head of N classes on a pretrained encoder.
    model = AutoModelForSequenceClassification.from_pretrained(saved_mlm, num_labels=5).eval()
    assert list(model.classifiers) == ["label"] and model.config.num_labels == 5
    encoded = KmerTokenizerFast(k=5)(barcodes[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**encoded, labels=torch.tensor([4, 0]))
    assert out.logits.shape == (2, 5) and torch.isfinite(out.loss)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight,
                               BarcodeBertModel.from_pretrained(saved_mlm).embeddings.word_embeddings.weight)


def test_config_rejects_inconsistent_vocabulary():
    with pytest.raises(ValueError, match="does not match k_mer=5"):
        BarcodeBertConfig(k_mer=5, vocab_size=258)
    with pytest.raises(ValueError, match="rank_labels"):
        BarcodeBertConfig(classifier_ranks=["species"])


def _original_model(k: int, seed: int = 0) -> BertForTokenClassification:
    """An original-format BarcodeBERT: BertForTokenClassification over [MASK], [UNK] + 4**k k-mers."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=4 ** k + 2, num_labels=4 ** k, output_hidden_states=True,
                        max_position_embeddings=max(512, -(-1536 // k)), **TINY)
    return BertForTokenClassification(config).eval()


@pytest.mark.parametrize("k", [4, 5, 8])
def test_conversion_reproduces_original_outputs(tmp_path, barcodes, k):
    original = _original_model(k)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": original.state_dict(), "epoch": 3,
                "config": argparse.Namespace(k_mer=k, n_heads=2, n_layers=2, max_len=660)}, checkpoint)
    converted = convert_barcodebert(checkpoint, out_dir=tmp_path / "converted")

    encoded = KmerTokenizerFast(k=k)(barcodes[:5], padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        reference = original(**encoded)
        ours = converted(**encoded)
        reloaded = AutoModel.from_pretrained(tmp_path / "converted").eval()(**encoded)
    torch.testing.assert_close(ours.logits[..., 2:], reference.logits)
    torch.testing.assert_close(reloaded.last_hidden_state, reference.hidden_states[-1])
    # The special rows never win, so the softmax over the vocabulary is the original's over k-mers.
    torch.testing.assert_close(ours.logits.softmax(-1)[..., 2:], reference.logits.softmax(-1))
    assert (tmp_path / "converted" / "README.md").read_text().startswith("---")


def _hub_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_hugging_face_format_from_a_folder_and_by_repo_id(tmp_path, barcodes, hub):
    # bioscan-ml/BarcodeBERT's layout: a BERT config.json (BertForTokenClassification) beside its weights.
    original = _original_model(5, seed=2)
    original.save_pretrained(tmp_path / "hf")
    assert {"config.json", "model.safetensors"} <= set(_hub_files(tmp_path / "hf"))
    encoded = KmerTokenizerFast(k=5)(barcodes[:4], padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        reference = original(**encoded)
        from_folder = convert_barcodebert(tmp_path / "hf")(**encoded)   # heads read from config.json
    torch.testing.assert_close(from_folder.logits[..., 2:], reference.logits)

    for name, data in _hub_files(tmp_path / "hf").items():
        hub.files[("bioscan-ml/BarcodeBERT", "v1", name)] = data
    convert_barcodebert("bioscan-ml/BarcodeBERT", revision="v1", out_dir=tmp_path / "converted")
    with torch.no_grad():
        ours = AutoModel.from_pretrained(tmp_path / "converted").eval()(**encoded)
    torch.testing.assert_close(ours.last_hidden_state, reference.hidden_states[-1])
    asked = {path for method, path, _, _ in hub.requests if method == "GET"}
    assert "/bioscan-ml/BarcodeBERT/resolve/v1/model.safetensors" in asked
    assert "`bioscan-ml/BarcodeBERT@v1`" in (tmp_path / "converted" / "README.md").read_text()

    # One checkpoint file of a repo by name, as the BIOSCAN-5M .pth files under ckpt/.
    buffer = io.BytesIO()
    torch.save({"model": original.state_dict(), "config": argparse.Namespace(n_heads=2)}, buffer)
    hub.files[("bioscan-ml/clibd", "main", "ckpt/BarcodeBERT/5m/model.pth")] = buffer.getvalue()
    single = convert_barcodebert("bioscan-ml/clibd", filename="ckpt/BarcodeBERT/5m/model.pth")
    with torch.no_grad():
        torch.testing.assert_close(single(**encoded).logits[..., 2:], reference.logits)
    with pytest.raises(FileNotFoundError, match="neither a local path nor a Hub repo id"):
        convert_barcodebert(tmp_path / "missing" / "model.pt")


def test_conversion_accepts_safetensors_and_refuses_pickled_code(tmp_path):
    from safetensors.torch import save_file

    original = _original_model(4, seed=1)
    save_file({name: tensor.contiguous() for name, tensor in original.state_dict().items()},
              tmp_path / "original.safetensors")
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert_barcodebert(tmp_path / "original.safetensors")
    converted = convert_barcodebert(tmp_path / "original.safetensors", num_attention_heads=2)
    assert converted.config.k_mer == 4 and converted.config.num_hidden_layers == 2

    torch.save({"model": original.state_dict(), "config": fractions.Fraction(1, 3)}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError, match="weights-only"):
        convert_barcodebert(tmp_path / "unsafe.pt")


def test_broken_torchvision_is_named_when_a_model_loads(tmp_path):
    """A torchvision built for another torch (hf-conventions §5) gets an error that says what to install."""
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    script = ("import bioscan5m.modeling as m\n"
              "try:\n    m.BarcodeBertModel\nexcept ImportError as error:\n    print('ImportError:', error)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchvision is installed but does not import (operator torchvision::nms does not exist)" in done.stdout
    assert "pip install torch==" in done.stdout
