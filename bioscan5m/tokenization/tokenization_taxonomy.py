"""A word-level tokenizer over taxonomy strings, for CLIBD's text encoder.

CLIBD's text input is the space-joined string ``"order family genus species"`` with the literal ``not_classified``
for a missing rank (see :func:`taxonomy_string`). The paper tokenizes it with bert-small's WordPiece vocabulary,
which needs a Hub download; here the vocabulary is the words of the training taxonomy strings, built with
:func:`build_taxonomy_tokenizer`:

* ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``, then the words by decreasing frequency (ties alphabetical);
* input is lower-cased and split on whitespace; a word not in the vocabulary (e.g. a species name never seen in
  training) becomes ``[UNK]``; every string is wrapped as ``[CLS] ... [SEP]``;
* ``model_max_length`` is 20, CLIBD's ``max_length``.

The result is a plain ``PreTrainedTokenizerFast`` whose whole pipeline lives in ``tokenizer.json``, so a saved
tokenizer loads with ``AutoTokenizer.from_pretrained`` without any custom code.

This module imports nothing from ``bioscan5m``: it may be copied next to saved models and must run on its own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

#: Ranks of CLIBD's taxonomy string, in order.
TAXONOMY_RANKS = ("order", "family", "genus", "species")
#: CLIBD's filler for a missing rank.
NOT_CLASSIFIED = "not_classified"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: CLIBD tokenizes the taxonomy string with ``max_length=20``.
MAX_TEXT_TOKENS = 20


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def taxonomy_string(record: Mapping | None = None, **ranks) -> str:
    """CLIBD's text for one specimen: ``"order family genus species"``, ``not_classified`` for missing ranks.

    Pass a record (any mapping with the rank columns, e.g. a dataset row) or the ranks as keywords:
    ``taxonomy_string(order="Diptera", family="Culicidae", genus=None, species=None)``
    gives ``"Diptera Culicidae not_classified not_classified"``.
    """
    values = dict(record or {})
    values.update(ranks)
    unknown = set(ranks) - set(TAXONOMY_RANKS)
    if unknown:
        raise ValueError(f"Unknown rank(s) {sorted(unknown)}; the taxonomy string uses {', '.join(TAXONOMY_RANKS)}.")
    return " ".join(NOT_CLASSIFIED if _missing(values.get(rank)) else str(values[rank]).strip() for rank in TAXONOMY_RANKS)


def taxonomy_vocabulary(texts: Iterable[str], min_count: int = 1) -> dict[str, int]:
    """Word → id: the special tokens, then the (lower-cased) words of ``texts`` seen at least ``min_count`` times."""
    counts = Counter(word for text in texts for word in str(text).lower().split())
    counts[NOT_CLASSIFIED] += 0  # always present, even when no training record misses a rank
    words = sorted((w for w, c in counts.items() if c >= min_count or w == NOT_CLASSIFIED), key=lambda w: (-counts[w], w))
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocabulary.setdefault(word, len(vocabulary))
    return vocabulary


def build_taxonomy_tokenizer(texts: Iterable[str] | None = None, vocabulary: Mapping[str, int] | None = None,
                             min_count: int = 1, model_max_length: int = MAX_TEXT_TOKENS) -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer for taxonomy strings, from training ``texts`` or a ready ``vocabulary``."""
    if (texts is None) == (vocabulary is None):
        raise ValueError("Pass exactly one of texts (taxonomy strings to build the vocabulary from) or vocabulary.")
    vocabulary = dict(vocabulary) if vocabulary is not None else taxonomy_vocabulary(texts, min_count=min_count)
    missing = [token for token in SPECIAL_TOKENS if token not in vocabulary]
    if missing:
        raise ValueError(f"vocabulary lacks the special tokens {missing}.")
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length,
                                   model_input_names=["input_ids", "attention_mask"])


__all__ = ["TAXONOMY_RANKS", "NOT_CLASSIFIED", "MAX_TEXT_TOKENS", "taxonomy_string", "taxonomy_vocabulary",
           "build_taxonomy_tokenizer"]
