"""Barcodes placed in COI-5P reference coordinates: offsets found on real barcodes, frame-consistent k-mers,
unplaceable input left alone, and the tokenizer option saved, reloaded and run as remote code."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import bioscan5m
from bioscan5m.modeling import BarcodeBertConfig, BarcodeBertForMaskedLM
from bioscan5m.tokenization import (
    COI_5P_REFERENCE,
    KmerTokenizer,
    KmerTokenizerFast,
    align_to_reference,
    reference_offsets,
)
from bioscan5m.tokenization.reference_frame import place_bases


@pytest.fixture(scope="module")
def barcodes(bold_root) -> list[str]:
    frame = bioscan5m.read_metadata(bold_root, split="test_unseen", max_nucleotides=None)
    return frame.dna_barcode.iloc[::10].tolist()


@pytest.fixture(scope="module")
def full_length(barcodes) -> list[str]:
    """Real barcodes that start at the first base of the reference region (most of them do)."""
    offsets, identity = reference_offsets(barcodes)
    chosen = [b for b, d, s in zip(barcodes, offsets, identity) if d == 0 and s > 0.8 and len(b) >= 600]
    assert len(chosen) > 50
    return chosen


def test_real_barcodes_match_the_reference_at_high_identity(barcodes):
    offsets, identity = reference_offsets(barcodes)
    assert len(COI_5P_REFERENCE) == 658
    # Insect COI-5P: the true placement is ~85-90 % identical to the consensus; a wrong one ~30 %.
    assert np.median(identity) > 0.8 and (identity > 0.6).mean() > 0.98
    assert (offsets == 0).mean() > 0.4 and (offsets != 0).any()   # real starts vary: that is the point


def test_known_shifts_are_recovered(full_length):
    rng = random.Random(0)
    cut = [rng.randrange(1, 40) for _ in full_length]
    upstream = ["".join(rng.choice("ACGT") for _ in range(rng.randrange(1, 300))) for _ in full_length]
    offsets, _ = reference_offsets([b[c:] for b, c in zip(full_length, cut)])
    assert offsets.tolist() == cut
    offsets, _ = reference_offsets([u + b for u, b in zip(upstream, full_length)])
    assert offsets.tolist() == [-len(u) for u in upstream]
    # Lower case and leading N (placeholders for missing bases) do not move a barcode.
    offsets, _ = reference_offsets([b.lower() for b in full_length] + ["NNN" + b[3:] for b in full_length])
    assert (offsets == 0).all()


def test_bases_after_an_insertion_or_deletion_stay_in_place(barcodes, full_length):
    whole = np.array([[("ACGT".index(c) if c in "ACGT" else 4) for c in b[:660].ljust(660, "N")]
                      for b in align_to_reference(barcodes)], dtype=np.uint8)
    # Barcodes without indels are placed as a whole (here all but a few Tetrastichus, whose barcodes lack six bases
    # of the reference near position 530: the bases after that now sit at their reference positions).
    assert (place_bases(barcodes) == whole).all(axis=1).mean() > 0.95
    rng = random.Random(1)
    source = place_bases(full_length)
    for n, (barcode, placed) in enumerate(zip(full_length, source)):
        at = rng.randrange(200, 450)
        indel = barcode[:at] + barcode[at + 2:] if n % 2 else barcode[:at] + "AC" + barcode[at:]
        moved = place_bases([indel])[0]
        # Before the stretch holding the indel nothing moves (but for the two positions an insertion's stretch,
        # moved back by two, writes over); after it the bases are back in place, where placing the barcode as a
        # whole would misplace every one of them.
        before = (at // 100) * 100 - 2
        assert (moved[:before] == placed[:before]).all()
        after = slice((at // 100 + 1) * 100, len(barcode))
        present = placed[after] < 4
        assert (moved[after][present] == placed[after][present]).mean() > 0.98
        shifted = align_to_reference([indel])[0][after].ljust(len(barcode) - after.start, "N")
        assert np.mean([a == "ACGT"[b] for a, b in zip(shifted, placed[after]) if b < 4]) < 0.5
    assert place_bases([]).shape == (0, 660) and (place_bases(["", "NNNN"]) == 4).all()


def test_aligned_barcodes_share_kmers_whatever_their_start(full_length):
    tokenizer = KmerTokenizerFast(k=6)
    aligning = KmerTokenizerFast(k=6, align_to_reference=True)
    for shift in (1, 4, 11):
        shifted = [b[shift:] for b in full_length]
        assert align_to_reference(shifted) == ["N" * shift + b for b in shifted]
        first_whole = -(-shift // 6)    # tokens from here on are the same gene positions in both
        same = np.array(aligning(full_length, padding="max_length", truncation=True)["input_ids"])[:, first_whole:]
        moved = np.array(aligning(shifted, padding="max_length", truncation=True)["input_ids"])[:, first_whole:]
        assert (same == moved).mean() > 0.97        # all but the last token, cut by the 660-nt limit
        plain = np.array(tokenizer(shifted, padding="max_length", truncation=True)["input_ids"])[:, first_whole:]
        assert (same == plain).mean() < 0.2      # unaligned: the shift changes almost every k-mer


def test_unplaceable_sequences_are_left_unchanged():
    rng = random.Random(1)
    unrelated = "".join(rng.choice("ACGT") for _ in range(600))       # not COI
    short = COI_5P_REFERENCE[100:180]                                 # too short to judge (< 100 bases)
    unknown = "N" * 400
    assert align_to_reference([unrelated, short, unknown]) == [unrelated, short, unknown]
    assert align_to_reference([]) == []
    _, identity = reference_offsets([unrelated, short, unknown])
    assert identity[0] < 0.5 and identity[1] == identity[2] == 0


def test_fast_and_python_tokenizers_align_alike(barcodes):
    fast = KmerTokenizerFast(k=5, align_to_reference=True)
    slow = KmerTokenizer(k=5, align_to_reference=True)
    sample = barcodes[:40] + ["acgt-" + barcodes[0][7:].lower()]   # gaps and lower case: cleaned, then placed
    assert fast(sample)["input_ids"] == slow(sample)["input_ids"]
    assert fast(sample[0])["input_ids"] == slow(sample[0])["input_ids"]
    with pytest.raises(ValueError, match="not a nucleotide"):
        fast(["ACGT1" + barcodes[0]])


def test_saved_aligning_model_runs_as_remote_code_with_identical_vectors(barcodes, tmp_path):
    torch.manual_seed(0)
    BarcodeBertForMaskedLM(BarcodeBertConfig(k_mer=5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64)).save_pretrained(tmp_path / "model")
    KmerTokenizerFast(k=5, align_to_reference=True).save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "reference_frame.py").is_file()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert tokenizer.align_to_reference
    model = AutoModel.from_pretrained(tmp_path / "model")
    expected = model.embed(barcodes[:6], return_numpy=True)
    # The frame is fixed by the tokenizer, so a shifted barcode gets nearly the same vector without extra frames.
    shifted = model.embed([b[2:] for b in barcodes[:6]], return_numpy=True)
    cosine = (expected * shifted).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(shifted, axis=1)
    assert (cosine > 0.99).all()
    with pytest.raises(ValueError, match="reading_frames=1"):
        model.embed(barcodes[:2], reading_frames=5)

    script = textwrap.dedent(f"""
        import sys, json
        sys.modules["bioscan5m"] = None          # the package cannot be imported in this process
        import numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert model.tokenizer.align_to_reference
        sequences = json.load(open({str(tmp_path / "seqs.json")!r}))
        np.save({str(tmp_path / "remote.npy")!r}, model.embed(sequences, return_numpy=True))
    """)
    (tmp_path / "seqs.json").write_text(json.dumps(barcodes[:6]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), expected)


def test_switching_alignment_on_a_loaded_tokenizer_is_saved(tmp_path):
    KmerTokenizerFast(k=6).save_pretrained(tmp_path / "plain")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "plain")
    assert not tokenizer.align_to_reference
    tokenizer.align_to_reference = True
    tokenizer.save_pretrained(tmp_path / "aligned")
    assert AutoTokenizer.from_pretrained(tmp_path / "aligned").align_to_reference
