"""k-mer tokenizers: ids equal to the original BarcodeBERT's, fast == pure Python, input handling, save/load."""

from __future__ import annotations

import itertools

import pytest
from transformers import AutoTokenizer

import bioscan5m  # noqa: F401  (registers the Auto classes)
from bioscan5m.tokenization import KmerTokenizer, KmerTokenizerFast, kmer_vocabulary

TRICKY = [
    "acgtACGTTTTTGG",            # lower case, trailing partial k-mer
    "ACGTNNNNACG-T.AC GTRYAC",   # N, gaps, whitespace, IUPAC codes
    "ACGT[MASK]TTTTGGGGCCCC",    # a special token written in the text
    "",
    "A",
    "nnnnnnnnacgtacgtacgtacgtacgtacgtacgtacgt",
]


def original_barcodebert_encode(sequence: str, k: int, max_len: int = 660) -> tuple[list[int], list[int]]:
    """BarcodeBERT's KmerTokenizer + DNADataset, written from its description: cut/pad with N to max_len,
    non-overlapping k-mers, vocab [MASK], [UNK], product('ACGT'); unknown k-mers -> [UNK]."""
    vocab = {"".join(p): i + 2 for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    sequence = sequence[:max_len]
    real_tokens = len(sequence) // k
    padded = sequence + "N" * (max_len - len(sequence))
    ids = [vocab.get(padded[i:i + k], 1) for i in range(0, max_len - k + 1, k)]
    mask = [1 if i < real_tokens else 0 for i in range(len(ids))]
    return ids, mask


@pytest.fixture(scope="module")
def real_barcodes(bold_root) -> list[str]:
    frame = bioscan5m.read_metadata(bold_root, split="test_unseen", max_nucleotides=None)
    # Longest and shortest ones too, so truncation at 660 and heavy padding are both exercised.
    by_length = frame.dna_barcode.str.len().sort_values()
    chosen = list(by_length.index[:20]) + list(by_length.index[-20:]) + list(frame.index[::50])
    return frame.dna_barcode.loc[chosen].tolist()


@pytest.mark.parametrize("k", [4, 5, 8])
def test_barcodebert_ids_equal_original_on_real_barcodes(real_barcodes, k):
    tokenizer = KmerTokenizerFast(k=k, vocabulary="barcodebert")
    encoded = tokenizer(real_barcodes, padding="max_length", truncation=True)
    assert any(len(s) > 660 for s in real_barcodes) and any(len(s) < 600 for s in real_barcodes)
    for sequence, ids, mask in zip(real_barcodes, encoded["input_ids"], encoded["attention_mask"]):
        expected_ids, expected_mask = original_barcodebert_encode(sequence, k)
        assert ids == expected_ids
        assert mask == expected_mask
    assert len(encoded["input_ids"][0]) == (660 - k) // k + 1


@pytest.mark.parametrize("vocabulary", ["barcodebert", "standard"])
def test_vectorised_encoder_equals_the_rust_pipeline(real_barcodes, vocabulary):
    tokenizer = KmerTokenizerFast(k=5, vocabulary=vocabulary)
    rust = [encoding.ids for encoding in tokenizer.backend_tokenizer.encode_batch(real_barcodes)]
    assert tokenizer(real_barcodes)["input_ids"] == rust
    tensors = tokenizer(real_barcodes, padding=True, return_tensors="pt")
    assert tensors["input_ids"].shape == (len(real_barcodes), max(map(len, rust)))
    assert tensors["attention_mask"].sum(1).tolist() == [len(ids) for ids in rust]


@pytest.mark.parametrize("vocabulary", ["barcodebert", "standard"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8])
def test_fast_and_python_tokenizers_agree(vocabulary, k):
    fast = KmerTokenizerFast(k=k, vocabulary=vocabulary)
    slow = KmerTokenizer(k=k, vocabulary=vocabulary)
    long = "acgtn" * 150  # 750 nucleotides: truncated at 660 when asked
    gapped_past_the_cut = "ACGTR" * 132 + "-. " + "acgt" * 40  # gaps past 660 still count in the untruncated length
    # With special-token text the fast tokenizer runs the Rust pipeline; without, its vectorised encoder.
    for batch in (TRICKY + [long], [s for s in TRICKY if "[" not in s] + [long, gapped_past_the_cut]):
        for padding, truncation in ((False, False), ("longest", True), ("max_length", True), (True, False)):
            a = fast(batch, padding=padding, truncation=truncation)
            b = slow(batch, padding=padding, truncation=truncation)
            assert a["input_ids"] == b["input_ids"], (padding, truncation)
            assert a["attention_mask"] == b["attention_mask"], (padding, truncation)
    assert fast.get_vocab() == slow.get_vocab() == kmer_vocabulary(k, vocabulary)


def test_vocabularies_and_input_handling():
    barcodebert = KmerTokenizerFast(k=4, vocabulary="barcodebert")
    assert (barcodebert.mask_token_id, barcodebert.unk_token_id, barcodebert.pad_token_id) == (0, 1, 1)
    assert barcodebert.convert_ids_to_tokens([2, 3, 257]) == ["AAAA", "AAAC", "TTTT"]
    assert barcodebert.cls_token is None
    # Case, gaps and whitespace do not change the k-mers; N and IUPAC codes give [UNK] at their place.
    assert barcodebert("acgt-ac.gt tttt")["input_ids"] == barcodebert("ACGTACGTTTTT")["input_ids"]
    assert barcodebert("ACGTACGRTTTT")["input_ids"][1] == barcodebert.unk_token_id
    assert barcodebert("ACGTACG")["input_ids"] == barcodebert("ACGT")["input_ids"]  # partial k-mer dropped

    standard = KmerTokenizerFast(k=4, vocabulary="standard")
    ids = standard("ACGTTTTT")["input_ids"]
    assert [standard.pad_token_id, standard.unk_token_id, standard.cls_token_id, standard.sep_token_id,
            standard.mask_token_id] == [0, 1, 2, 3, 4]
    assert ids[0] == standard.cls_token_id and ids[-1] == standard.sep_token_id and len(ids) == 4
    assert standard.decode(ids, skip_special_tokens=True) == "ACGTTTTT"


@pytest.mark.parametrize("tokenizer_class", [KmerTokenizerFast, KmerTokenizer])
def test_non_nucleotides_raise_naming_the_sequence(tokenizer_class):
    tokenizer = tokenizer_class(k=4)
    with pytest.raises(ValueError, match=r"Sequence \d+ \('ACGTXACGT'\) holds 'X'"):
        tokenizer(["ACGTACGT", "ACGTXACGT"])
    with pytest.raises(ValueError, match="'U'"):
        tokenizer("ACGUACGU")
    with pytest.raises(ValueError, match="'X'"):  # past the 660-nucleotide cut, still refused
        tokenizer(["ACGT" * 200 + "X"], truncation=True, padding="max_length")


def test_long_sequences_are_cut_at_660_nucleotides():
    tokenizer = KmerTokenizerFast(k=5, vocabulary="standard")
    ids = tokenizer("ACGTA" * 200, truncation=True)["input_ids"]
    assert len(ids) == 660 // 5 + 2 == tokenizer.model_max_length


@pytest.mark.parametrize("vocabulary", ["barcodebert", "standard"])
def test_saved_tokenizer_loads_with_auto_tokenizer(tmp_path, vocabulary):
    KmerTokenizerFast(k=6, vocabulary=vocabulary).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, KmerTokenizerFast)
    assert (loaded.k, loaded.vocabulary) == (6, vocabulary)
    reference = KmerTokenizerFast(k=6, vocabulary=vocabulary)
    assert loaded(TRICKY, padding=True)["input_ids"] == reference(TRICKY, padding=True)["input_ids"]
    with pytest.raises(ValueError, match="not a nucleotide"):
        loaded("ACGT1")
