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
* any other character (a digit, ``X``, ``U``, punctuation) raises ``ValueError`` naming the sequence;
* with ``align_to_reference=True`` each barcode is first placed in the coordinates of a reference COI-5P barcode
  (``reference_frame.align_to_reference``), so that every barcode's k-mers are cut at the same gene positions.

Speed: the Rust pipeline (``tokenizer.json``) defines the tokenizer and serves every general call (pairs, offsets,
special-token text, ...). Plain batches of barcodes, the hot path of training and embedding, are encoded by
``encode_kmers``, a vectorised NumPy encoder that gives identical ids and masks tens of times faster, because the
Rust pipeline spends most of its time building per-token strings and offsets that k-mer models never use.

This module imports nothing from ``bioscan5m`` but its sibling ``reference_frame``: both are copied next to saved
models and must run on their own.
"""

from __future__ import annotations

import itertools
import json
import os
import re

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BatchEncoding, PreTrainedTokenizer, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

from .reference_frame import align_to_reference

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


# Byte translation table for the vectorised encoder, applied with ``bytes.translate`` (a C loop, faster than a
# NumPy gather): A, C, G, T = 0..3 (any case), the ambiguity codes RYSWKMBDHVN = 4, gaps and whitespace = 5 (removed
# on the careful path), anything else = 6 (invalid, or special-token text such as "[MASK]").
_AMBIGUOUS = 4
_CLASS_OF_BYTE = bytes(
    "ACGT".index(chr(byte).upper()) if chr(byte) in "ACGTacgt"
    else _AMBIGUOUS if chr(byte) in "RYSWKMBDHVNryswkmbdhvn"
    else 5 if chr(byte) in "-. \t\n\r\x0b\x0c"
    else 6
    for byte in range(256)
)


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


def encode_kmers(sequences: list[str], k: int, vocabulary: str = "barcodebert", max_tokens: int | None = None,
                 pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised k-mer encoding of plain barcodes: ``(input_ids, attention_mask)`` as ``(n, length)`` int64
    arrays, identical to the tokenizers' output (padded to the longest, or to ``pad_to``); ``None`` when a
    sequence needs the general path (non-ASCII text, special-token text such as ``[MASK]``). Invalid characters
    raise ``ValueError`` naming the sequence.

    Args:
        max_tokens: truncate to this many tokens, [CLS]/[SEP] included (None: no truncation).
        pad_to: pad to this length (``padding="max_length"``).
    """
    specials = 2 if vocabulary == "standard" else 0
    kmers = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences)) // k
    if max_tokens is not None:
        kmers = np.minimum(kmers, max(max_tokens - specials, 0))
    width = int(kmers.max(initial=0))
    if pad_to is not None:
        width = max(width, pad_to - specials)
    # Every sequence cut or N-padded to the same span: row i, column j, letter l of the (n, width, k) grid is letter
    # l of k-mer j of sequence i, so the k-mers are read with k strided passes and no gather.
    span = width * k
    try:
        grid = "".join([sequence[:span].ljust(span, "N") for sequence in sequences]).encode("ascii")
        tails = "".join([sequence[span:] for sequence in sequences if len(sequence) > span]).encode("ascii")
    except UnicodeEncodeError:
        return None
    classes = np.frombuffer(grid.translate(_CLASS_OF_BYTE), dtype=np.uint8).reshape(len(sequences), width, k)
    tail_classes = np.frombuffer(tails.translate(_CLASS_OF_BYTE), dtype=np.uint8)
    if classes.max(initial=0) > _AMBIGUOUS or tail_classes.max(initial=0) > _AMBIGUOUS:
        if b"[" in grid or b"[" in tails:
            return None
        check_nucleotides(sequences)  # raises, naming the first bad sequence
        # Only gaps and whitespace are left; they are rare: clean those sequences and start again.
        return encode_kmers([_IGNORED.sub("", s) for s in sequences], k, vocabulary, max_tokens, pad_to)
    codes = np.zeros((len(sequences), width), dtype=np.uint16)  # 4**8 codes fit in 16 bits
    seen = np.zeros((len(sequences), width), dtype=np.uint8)    # OR of the letters' classes: bit 2 = ambiguous
    for letter in range(k):
        column = classes[:, :, letter]
        codes <<= 2
        codes |= column & 3
        seen |= column
    valid = np.arange(width)[None, :] < kmers[:, None]
    unk_id, pad_id = 1, (1 if vocabulary == "barcodebert" else 0)
    ids = codes.astype(np.int64)
    ids += len(SPECIAL_TOKENS[vocabulary])
    ids[seen >= _AMBIGUOUS] = unk_id
    ids[~valid] = pad_id
    if specials:
        rows = np.arange(len(ids))
        ids = np.concatenate([np.full((len(ids), 1), 2), ids, np.full((len(ids), 1), pad_id)], axis=1)
        valid = np.concatenate([np.ones((len(ids), 1), bool), valid, np.zeros((len(ids), 1), bool)], axis=1)
        ids[rows, kmers + 1] = 3            # [SEP] right after the last k-mer
        valid[rows, kmers + 1] = True
    return ids, valid.astype(np.int64)


def _aligned(text, align: bool):
    """``text`` (one barcode or a list) placed in reference coordinates when ``align``; checked and gap-free first.
    Text holding special tokens (``[MASK]`` ...) is left as it is: it is not a barcode to place."""
    if not align or text is None:
        return text
    single = isinstance(text, str)
    sequences = [text] if single else list(text)
    if not all(isinstance(s, str) for s in sequences) or any("[" in s for s in sequences):
        return text
    check_nucleotides(sequences)
    placed = align_to_reference([_IGNORED.sub("", s) for s in sequences])
    return placed[0] if single else placed


class _ReferenceAlignmentSetting:
    """``align_to_reference`` lives in ``init_kwargs``, so switching it on a loaded tokenizer is saved with it."""

    @property
    def align_to_reference(self) -> bool:
        return bool(getattr(self, "init_kwargs", {}).get("align_to_reference", False))

    @align_to_reference.setter
    def align_to_reference(self, value: bool) -> None:
        self.init_kwargs["align_to_reference"] = bool(value)


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


class KmerTokenizerFast(_ReferenceAlignmentSetting, PreTrainedTokenizerFast):
    """Non-overlapping k-mer tokenizer backed by the Rust ``tokenizers`` library.

    Args:
        k: k-mer length (4 to 8 in practice; BarcodeBERT used 4, 5 and 8).
        vocabulary: ``"barcodebert"`` (ids equal the original BarcodeBERT's) or ``"standard"``.
        max_nucleotides: longest barcode kept; sets ``model_max_length`` (660 as in BarcodeBERT).
        align_to_reference: place each barcode in COI-5P reference coordinates before cutting k-mers
            (``reference_frame``); saved with the tokenizer, so a model trained on aligned barcodes reads them so.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, tokenizer_object=None, tokenizer_file=None, k: int = 4, vocabulary: str = "barcodebert",
                 max_nucleotides: int = MAX_NUCLEOTIDES, align_to_reference: bool = False, **kwargs):
        if tokenizer_object is None and (tokenizer_file is None or not os.path.isfile(tokenizer_file)):
            tokenizer_object = build_kmer_backend(k, vocabulary)
        _special_token_kwargs(vocabulary, kwargs)
        kwargs.setdefault("model_max_length", _default_max_tokens(k, vocabulary, max_nucleotides))
        self.k = k
        self.vocabulary = vocabulary
        self.max_nucleotides = max_nucleotides
        super().__init__(tokenizer_object=tokenizer_object, tokenizer_file=tokenizer_file, k=k,
                         vocabulary=vocabulary, max_nucleotides=max_nucleotides,
                         align_to_reference=align_to_reference, **kwargs)

    def _encode_plus(self, text, text_pair=None, add_special_tokens: bool = True,
                     padding_strategy=PaddingStrategy.DO_NOT_PAD, truncation_strategy=TruncationStrategy.DO_NOT_TRUNCATE,
                     max_length: int | None = None, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            text, text_pair = _aligned(text, self.align_to_reference), _aligned(text_pair, self.align_to_reference)
            fast = self._encode_plain_barcodes(text, text_pair, add_special_tokens, padding_strategy,
                                               truncation_strategy, max_length, kwargs)
            if fast is not None:
                return fast
            for part in (text, text_pair):
                if part is not None:
                    check_nucleotides([part] if isinstance(part, str) else part)
        return super()._encode_plus(text, text_pair, add_special_tokens=add_special_tokens,
                                    padding_strategy=padding_strategy, truncation_strategy=truncation_strategy,
                                    max_length=max_length, is_split_into_words=is_split_into_words, **kwargs)

    def _encode_plain_barcodes(self, text, text_pair, add_special_tokens, padding_strategy, truncation_strategy,
                               max_length, options) -> BatchEncoding | None:
        """``encode_kmers`` for the common call (a batch of plain barcodes, ids and mask only); None otherwise."""
        general = ("stride", "pad_to_multiple_of", "return_overflowing_tokens", "return_special_tokens_mask",
                   "return_offsets_mapping", "return_length", "return_token_type_ids")
        if (text_pair is not None or not add_special_tokens or not isinstance(text, (list, tuple)) or not text
                or not all(isinstance(s, str) for s in text) or any(options.get(name) for name in general)
                or (options.get("padding_side") or self.padding_side) != "right" or self.truncation_side != "right"
                or options.get("split_special_tokens")):
            return None
        truncate = truncation_strategy != TruncationStrategy.DO_NOT_TRUNCATE and max_length is not None
        pad_to = max_length if padding_strategy == PaddingStrategy.MAX_LENGTH else None
        encoded = encode_kmers(list(text), self.k, self.vocabulary, max_tokens=max_length if truncate else None,
                               pad_to=pad_to)
        if encoded is None:
            return None
        ids, mask = encoded
        ragged = padding_strategy == PaddingStrategy.DO_NOT_PAD and len(set(mask.sum(axis=1).tolist())) > 1
        if ragged and options.get("return_tensors") is not None:
            return None  # the general path raises transformers' usual "unequal lengths" error
        data = {"input_ids": ids}
        if options.get("return_attention_mask") is not False:
            data["attention_mask"] = mask
        return_tensors = options.get("return_tensors")
        if return_tensors is None:
            if padding_strategy == PaddingStrategy.DO_NOT_PAD:
                lengths = mask.sum(axis=1)
                data = {name: [row[:n] for row, n in zip(array.tolist(), lengths.tolist())] for name, array in data.items()}
            else:
                data = {name: array.tolist() for name, array in data.items()}
        elif return_tensors == "pt":
            import torch

            # BatchEncoding's own conversion goes through nested lists; from_numpy shares the memory instead.
            data = {name: torch.from_numpy(array) for name, array in data.items()}
        elif return_tensors != "np":
            return BatchEncoding(data, tensor_type=return_tensors)
        return BatchEncoding(data)


class KmerTokenizer(_ReferenceAlignmentSetting, PreTrainedTokenizer):
    """Pure-Python reference of :class:`KmerTokenizerFast`: same vocabulary, same ids, slower."""

    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | None = None, k: int = 4, vocabulary: str = "barcodebert",
                 max_nucleotides: int = MAX_NUCLEOTIDES, align_to_reference: bool = False, **kwargs):
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
        super().__init__(k=k, vocabulary=vocabulary, max_nucleotides=max_nucleotides,
                         align_to_reference=align_to_reference, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        check_nucleotides([text])
        sequence = _IGNORED.sub("", text)
        if self.align_to_reference:
            sequence = align_to_reference([sequence])[0]
        sequence = sequence.translate(_UPPER_CASE)
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
KmerTokenizer.register_for_auto_class("AutoTokenizer")
KmerTokenizerFast.register_for_auto_class("AutoTokenizer")
