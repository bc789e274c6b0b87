"""Per-position pooling: the vector against its definition on real aligned barcodes (missing bases agree with
nothing, one substitution moves one position), and contrastive fine-tuning that trains, saves and reloads such an
encoder with fewer layers, in the package and as remote code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModel

import bioscan5m
from bioscan5m.cli import main
from bioscan5m.modeling import BarcodeBertConfig, BarcodeBertModel
from bioscan5m.tokenization import KmerTokenizerFast
from bioscan5m.training.contrastive import contrastive_finetune
from bioscan5m.training.pretrain import pretrain

TINY = dict(k_mer=6, hidden_size=32, num_attention_heads=2, intermediate_size=64, pooling="per_position",
            per_position_size=4)
POSITIONS = 660 // 6
COMPLEMENT = {"A": "C", "C": "G", "G": "T", "T": "A"}


@pytest.fixture(scope="module")
def barcodes(bold_root) -> list[str]:
    frame = bioscan5m.read_metadata(bold_root, split="val_unseen")
    return [s for s in frame.dna_barcode.iloc[::25] if "N" not in s and len(s) > 600][:6]


def _encoder(layers: int) -> BarcodeBertModel:
    torch.manual_seed(0)
    model = BarcodeBertModel(BarcodeBertConfig(num_hidden_layers=layers, **TINY)).eval()
    model.tokenizer = KmerTokenizerFast(k=6, align_to_reference=True)
    return model


def test_per_position_vectors_are_the_projected_states_of_the_positions_holding_kmers(barcodes):
    model = _encoder(layers=2)
    with_gap = barcodes[2][:200] + "N" * 30 + barcodes[2][230:]
    sequences = [barcodes[0], barcodes[1][:400], with_gap, barcodes[2]]
    embedded = model.embed(sequences, batch_size=3)
    assert embedded.shape == (4, POSITIONS * 4) and model.config.embedding_size == POSITIONS * 4
    for row, sequence in zip(embedded, sequences):
        encoded = model.tokenizer([sequence], truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0]
        expected = torch.zeros(POSITIONS, 4)
        for position, token in enumerate(encoded["input_ids"][0].tolist()):
            if token >= 2:  # a k-mer; [MASK]=0 and [UNK]=1 (N, the reference before the barcode) hold no bases
                expected[position] = torch.nn.functional.normalize(
                    model.per_position_projection(hidden[position]), dim=0)
        torch.testing.assert_close(row.view(POSITIONS, 4), expected)
    filled = (embedded.view(4, POSITIONS, 4).norm(dim=2) > 0).sum(dim=1)
    assert filled[2] <= filled[3] - 5          # 30 N touch at least 5 six-mers, which then agree with nothing
    assert filled[1] < filled[0] - 30          # the cut barcode leaves its last positions empty


def test_without_layers_the_cosine_is_the_share_of_agreeing_positions(barcodes):
    # With no layer each position's vector depends on its own k-mer only, so similarity is counted like identical
    # bases of aligned barcodes: one substitution changes one position, an N empties one.
    model = _encoder(layers=0)
    sequence = barcodes[3]
    substituted = sequence[:300] + COMPLEMENT[sequence[300]] + sequence[301:]
    masked = sequence[:300] + "N" + sequence[301:]
    original, changed, missing = model.embed([sequence, substituted, masked]).view(3, POSITIONS, 4)
    moved = (original != changed).any(dim=1)
    assert moved.sum() == 1
    kmers = (original.norm(dim=1) > 0).sum().item()
    cosine = torch.nn.functional.cosine_similarity
    torch.testing.assert_close(cosine(original.flatten(), changed.flatten(), dim=0),
                               (kmers - 1 + original[moved] @ changed[moved].T).squeeze() / kmers)
    torch.testing.assert_close(cosine(original.flatten(), missing.flatten(), dim=0),
                               torch.tensor(((kmers - 1) / kmers) ** 0.5))


def test_per_position_pooling_refuses_barcodes_read_without_the_reference(barcodes):
    model = _encoder(layers=1)
    model.tokenizer = KmerTokenizerFast(k=6)
    with pytest.raises(ValueError, match="align_to_reference"):
        model.embed(barcodes[:2])
    with pytest.raises(ValueError, match="pooling must be one of"):
        BarcodeBertConfig(pooling="max")


@pytest.fixture(scope="module")
def aligned_tiny_model(sample_root, tmp_path_factory):
    return pretrain(sample_root, tmp_path_factory.mktemp("aligned") / "model", preset="tiny",
                    align_to_reference=True, max_steps=10)


def test_contrastive_finetune_with_per_position_pooling_and_fewer_layers(aligned_tiny_model, sample_root,
                                                                          tmp_path):
    out = tmp_path / "per-position"
    results = contrastive_finetune(aligned_tiny_model, sample_root, out, preset="tiny", max_steps=4,
                                   pooling="per_position", per_position_size=4, num_hidden_layers=1)
    config = json.loads((out / "config.json").read_text())
    assert (config["pooling"], config["per_position_size"], config["num_hidden_layers"]) == ("per_position", 4, 1)
    # The run's figures are those of the saved encoder: probing the folder again gives them back.
    from bioscan5m.evaluation.encoder_probes import probe

    again = probe(out, sample_root, batch_size=64)
    assert again["knn_genus_test_unseen"] == pytest.approx(results["knn_genus_test_unseen"])
    assert again["linear_probe_species_test"] == pytest.approx(results["linear_probe_species_test"], abs=1e-6)
    card = (out / "README.md").read_text()
    assert re.search(r"\| encoder\s*\| 1 layer,", card) and "per k-mer position, projected" in card and "660 values" in card

    # The saved encoder starts from the pretrained first layer, trained since; it embeds with per-position pooling.
    model = AutoModel.from_pretrained(out)
    assert len(model.encoder.layer) == 1 and model.config.embedding_size == (660 // 4) * 4
    sequences = ["ACGT" * 150, "TTGACCATGA" * 60]
    expected = model.embed(sequences, return_numpy=True)
    assert expected.shape == (2, (660 // 4) * 4)

    # And loads as remote code where the package is absent, with identical vectors.
    script = textwrap.dedent(f"""
        import sys, json
        sys.modules["bioscan5m"] = None
        import numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)
        np.save({str(tmp_path / "remote.npy")!r}, model.embed({sequences!r}, return_numpy=True))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), expected)


def test_contrastive_finetune_checks_the_pooling_settings(aligned_tiny_model, sample_root, tmp_path, capsys):
    unaligned = pretrain(sample_root, tmp_path / "unaligned", preset="tiny", max_steps=1)
    with pytest.raises(ValueError, match="aligned to the COI-5P reference"):
        contrastive_finetune(unaligned, sample_root, tmp_path / "x", preset="tiny", max_steps=1,
                             pooling="per_position")
    with pytest.raises(ValueError, match="per_position_size must be an integer of at least 1"):
        contrastive_finetune(aligned_tiny_model, sample_root, tmp_path / "y", preset="tiny", max_steps=1,
                             pooling="per_position", per_position_size=0)
    with pytest.raises(ValueError, match="keeps the first N of .* 2 encoder layers; 99 is not one of 1-2"):
        contrastive_finetune(aligned_tiny_model, sample_root, tmp_path / "w", preset="tiny", max_steps=1,
                             num_hidden_layers=99)
    with pytest.raises(ValueError, match="Unknown rank 'bogus'"):
        contrastive_finetune(aligned_tiny_model, sample_root, tmp_path / "v", preset="tiny", max_steps=1,
                             ranks=("bogus",))
    for options in (["--layers", "1"], ["--temperature", "0.1"]):      # contrastive options, classification run
        assert main(["finetune", "--model", str(aligned_tiny_model), "--data", str(sample_root), "--out",
                     str(tmp_path / "z"), *options]) == 2
        assert f"{options[0]}: for --objective contrastive only" in capsys.readouterr().err
    assert not {"z", "w", "v"} & {path.name for path in tmp_path.iterdir()}
