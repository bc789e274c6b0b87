"""Non-overlapping k-mer tokenizers for DNA barcodes: a Rust-backed fast tokenizer and a pure-Python reference.

Two vocabularies:

* ``"barcodebert"`` reproduces the original BarcodeBERT tokenizer id for id: ``[MASK]=0``, ``[UNK]=1``, then the
  ``4**k`` k-mers in ``itertools.product("ACGT", repeat=k)`` order. No [CLS]/[SEP]; padding uses ``[UNK]``, which
  is what the original's ``N`` padding tokenizes to. ``tok(seqs, padding="max_length", truncation=True)`` gives
  exactly the original's ``660 // k`` ids per sequence and its attention mask.
* ``"standard"``: ``[PAD] [UNK] [CLS] [SEP] [MASK]`` then the k-mers, with ``[CLS] ... [SEP]`` around each sequence.

Input handling (both tokenizers, identical results):

* lower case is upper-cased; whitespace and alignment gaps (``-`` and ``.``) are removed before cutting k-mers;
* ``N`` and the IUPAC ambiguity codes ``RYSWKMBDHVN`` keep their place, and any k-mer holding one becomes
  ``[UNK]`` (as in BarcodeBERT, which has no ids for them); a trailing partial k-mer is dropped;
* any other character (a digit, ``X``, ``U``, punctuation) raises ``ValueError`` naming the sequence.

This module imports nothing from ``bioscan5m``: it is copied next to saved models and must run on its own.
"""

from __future__ import annotations

import itertools
import json
import os
import re

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

VOCABULARIES = ("barcodebert", "standard")
SPECIAL_TOKENS = {
    "barcodebert": ["[MASK]", "[UNK]"],
    "standard": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
}
#: BarcodeBERT's maximum barcode length: sequences are cut to this many nucleotides.
MAX_NUCLEOTIDES = 660

_SPECIAL_TOKEN_TEXT = re.compile(r"\[(?:PAD|UNK|CLS|SEP|MASK)\]")
_NOT_NUCLEOTIDE = re.compile(r"[^ACGTRYSWKMBDHVNacgtryswkmbdhvn\-.\s]")
_IGNORED = re.compile(r"[\-.\s]")
_UPPER_CASE = str.maketrans("acgt", "ACGT")


def kmer_vocabulary(k: int, vocabulary: str = "barcodebert") -> dict[str, int]:
    """Token → id: the vocabulary's special tokens, then every k-mer in ``itertools.product("ACGT")`` order."""
    if not 1 <= k <= 8:
        raise ValueError(f"k must be between 1 and 8 (got {k}); 4 to 8 are the useful range for barcodes.")
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"Unknown vocabulary {vocabulary!r}; choose one of {', '.join(VOCABULARIES)}.")
    kmers = ("".join(letters) for letters in itertools.product("ACGT", repeat=k))
    return {token: index for index, token in enumerate(itertools.chain(SPECIAL_TOKENS[vocabulary], kmers))}


def check_nucleotides(sequences) -> None:
    """Raise ``ValueError`` naming the first sequence that holds a character that is no nucleotide code."""
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise ValueError(f"Sequence {index} is a {type(sequence).__name__}, not a string of nucleotides.")
        bad = _NOT_NUCLEOTIDE.search(_SPECIAL_TOKEN_TEXT.sub("", sequence))
        if bad is not None:
            excerpt = sequence if len(sequence) <= 40 else sequence[:37] + "..."
            raise ValueError(
                f"Sequence {index} ({excerpt!r}) holds {bad.group()!r}, which is not a nucleotide: expected "
                "A, C, G, T, the IUPAC codes RYSWKMBDHVN (any case), or gaps '-'/'.'."
            )


def _special_token_kwargs(vocabulary: str, kwargs: dict) -> None:
    """Fill in the special tokens of ``vocabulary`` unless the caller (or a saved config) gave them."""
    if vocabulary == "barcodebert":
        # The original pads with N, and an N k-mer is [UNK]: padding with [UNK] gives the same ids.
        defaults = {"unk_token": "[UNK]", "pad_token": "[UNK]", "mask_token": "[MASK]"}
    else:
        defaults = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                    "mask_token": "[MASK]"}
    for name, token in defaults.items():
        kwargs.setdefault(name, token)


def _default_max_tokens(k: int, vocabulary: str, max_nucleotides: int) -> int:
    return max_nucleotides // k + (2 if vocabulary == "standard" else 0)


def build_kmer_backend(k: int, vocabulary: str = "barcodebert") -> Tokenizer:
    """The Rust ``tokenizers`` pipeline: normalise, cut non-overlapping k-mers, look them up, add [CLS]/[SEP]."""
    vocab = kmer_vocabulary(k, vocabulary)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"[\-.\s]"), "")]
        + [normalizers.Replace(lower, lower.upper()) for lower in "acgt"]
    )
    # invert=True keeps the k-letter matches and drops the rest, i.e. a trailing partial k-mer.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(f".{{{k}}}"), behavior="removed", invert=True)
    if vocabulary == "standard":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    backend.decoder = decoders.Fuse()
    return backend


class KmerTokenizerFast(PreTrainedTokenizerFast):
    """Non-overlapping k-mer tokenizer backed by the Rust ``tokenizers`` library.

    Args:
        k: k-mer length (4 to 8 in practice; BarcodeBERT used 4, 5 and 8).
        vocabulary: ``"barcodebert"`` (ids equal the original BarcodeBERT's) or ``"standard"``.
        max_nucleotides: longest barcode kept; sets ``model_max_length`` (660 as in BarcodeBERT).
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, tokenizer_object=None, tokenizer_file=None, k: int = 4, vocabulary: str = "barcodebert",
                 max_nucleotides: int = MAX_NUCLEOTIDES, **kwargs):
        if tokenizer_object is None and (tokenizer_file is None or not os.path.isfile(tokenizer_file)):
            tokenizer_object = build_kmer_backend(k, vocabulary)
        _special_token_kwargs(vocabulary, kwargs)
        kwargs.setdefault("model_max_length", _default_max_tokens(k, vocabulary, max_nucleotides))
        self.k = k
        self.vocabulary = vocabulary
        self.max_nucleotides = max_nucleotides
        super().__init__(tokenizer_object=tokenizer_object, tokenizer_file=tokenizer_file, k=k,
                         vocabulary=vocabulary, max_nucleotides=max_nucleotides, **kwargs)

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            for part in (text, text_pair):
                if part is not None:
                    check_nucleotides([part] if isinstance(part, str) else part)
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)


class KmerTokenizer(PreTrainedTokenizer):
    """Pure-Python reference of :class:`KmerTokenizerFast`: same vocabulary, same ids, slower."""

    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | None = None, k: int = 4, vocabulary: str = "barcodebert",
                 max_nucleotides: int = MAX_NUCLEOTIDES, **kwargs):
        if vocab_file is not None:
            with open(vocab_file, encoding="utf-8") as handle:
                self.vocab = json.load(handle)
        else:
            self.vocab = kmer_vocabulary(k, vocabulary)
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.k = k
        self.vocabulary = vocabulary
        self.max_nucleotides = max_nucleotides
        _special_token_kwargs(vocabulary, kwargs)
        kwargs.setdefault("model_max_length", _default_max_tokens(k, vocabulary, max_nucleotides))
        kwargs.setdefault("special_tokens_pattern", "cls_sep" if vocabulary == "standard" else "none")
        super().__init__(k=k, vocabulary=vocabulary, max_nucleotides=max_nucleotides, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        check_nucleotides([text])
        sequence = _IGNORED.sub("", text).translate(_UPPER_CASE)
        k = self.k
        return [sequence[start:start + k] for start in range(0, len(sequence) - k + 1, k)]

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab["[UNK]"])

    def _convert_id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(index, "[UNK]")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "vocab.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.vocab, handle)
        return (path,)


# Saving the fast tokenizer writes both classes into auto_map, so trust_remote_code finds either.
KmerTokenizerFast.slow_tokenizer_class = KmerTokenizer
