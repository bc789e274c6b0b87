"""BarcodeBERT configuration: a BERT encoder over non-overlapping DNA k-mers.

This module imports nothing from ``bioscan5m``: it is copied next to saved models and must run on its own.
"""

from __future__ import annotations

from transformers import BertConfig

SPECIAL_TOKENS_PER_VOCABULARY = {"barcodebert": 2, "standard": 5}
#: Special tokens around every barcode ([CLS] ... [SEP] in the standard vocabulary; none in BarcodeBERT's).
FRAMING_TOKENS_PER_VOCABULARY = {"barcodebert": 0, "standard": 2}
POOLINGS = ("mean", "per_position")
#: Integer fields and their least value (no encoder layers: the embeddings alone, a model of its own).
_INTEGER_MINIMUMS = {"k_mer": 1, "max_nucleotides": 1, "hidden_size": 1, "num_hidden_layers": 0,
                     "num_attention_heads": 1, "intermediate_size": 1, "max_position_embeddings": 1,
                     "per_position_size": 1}


class BarcodeBertConfig(BertConfig):
    r"""Configuration of BarcodeBERT models; BERT's fields plus what is needed to tokenize and classify barcodes.

    Defaults are a small k=4 model with the BarcodeBERT vocabulary. The paper model "8-4-4" is
    ``k_mer=8, num_hidden_layers=4, num_attention_heads=4`` with BERT-base width (768 hidden, 3072 intermediate).

    Args:
        k_mer: k-mer length of the tokenizer.
        tokenizer_vocabulary: ``"barcodebert"`` (``[MASK]=0, [UNK]=1``, then k-mers; no [CLS]) or ``"standard"``
            (``[PAD] [UNK] [CLS] [SEP] [MASK]``, then k-mers). ``vocab_size`` follows from it and ``k_mer``.
        max_nucleotides: barcodes are cut to this many nucleotides (660 in BarcodeBERT).
        classifier_ranks: taxonomic ranks predicted by ``BarcodeBertForSequenceClassification``, e.g.
            ``["species"]`` or ``["genus", "species"]``.
        rank_labels: for each of ``classifier_ranks``, the class names in label-index order.
        contrastive_ranks: taxonomic ranks whose labels ``BarcodeBertForContrastiveLearning`` pulls together, e.g.
            ``["genus", "species"]`` (one supervised contrastive term per rank).
        contrastive_rank_weights: weight of each rank's term (default: 1 for every rank).
        contrastive_temperature: temperature of the supervised contrastive loss.
        pooling: how ``embed`` turns token states into one vector. ``"mean"``: their mean (BarcodeBERT).
            ``"per_position"``: each token position's state projected to ``per_position_size`` values and
            L2-normalised, the positions concatenated in order (``embedding_size`` values), so that the cosine of
            two barcodes is the mean agreement of their states position by position. Made for barcodes aligned
            to the COI-5P reference (``align_to_reference``), where a token position is a gene position.
        per_position_size: values per token position with ``pooling="per_position"``.
    """

    model_type = "barcodebert"

    k_mer: int = 4
    tokenizer_vocabulary: str = "barcodebert"
    max_nucleotides: int = 660
    vocab_size: int = 0  # 0: derived from k_mer and tokenizer_vocabulary
    pad_token_id: int | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 3072
    # The original sets max(512, ceil(1536 / k)) positions; 512 covers every k >= 3 at 660 nucleotides.
    max_position_embeddings: int = 512
    # The MLM head is a separate linear layer over k-mers, as in the original (not tied to the embeddings).
    tie_word_embeddings: bool = False
    classifier_ranks: list[str] | None = None
    rank_labels: dict[str, list[str]] | None = None
    contrastive_ranks: list[str] | None = None
    contrastive_rank_weights: list[float] | None = None
    contrastive_temperature: float = 0.1
    pooling: str = "mean"
    per_position_size: int = 16

    def __post_init__(self, **kwargs):
        self._check_types()
        if self.tokenizer_vocabulary not in SPECIAL_TOKENS_PER_VOCABULARY:
            raise ValueError(f"tokenizer_vocabulary must be one of {', '.join(SPECIAL_TOKENS_PER_VOCABULARY)}, "
                             f"not {self.tokenizer_vocabulary!r}.")
        if not 1 <= self.k_mer <= 8:
            raise ValueError(f"k_mer must be between 1 and 8, not {self.k_mer}.")
        expected_vocab = 4 ** self.k_mer + SPECIAL_TOKENS_PER_VOCABULARY[self.tokenizer_vocabulary]
        if not self.vocab_size:
            self.vocab_size = expected_vocab
        elif self.vocab_size != expected_vocab:
            raise ValueError(f"vocab_size {self.vocab_size} does not match k_mer={self.k_mer} with the "
                             f"{self.tokenizer_vocabulary!r} vocabulary, which has {expected_vocab} tokens.")
        if self.pad_token_id is None:
            # BarcodeBERT pads with N, which is [UNK] (id 1); the standard vocabulary has [PAD] at id 0.
            self.pad_token_id = 1 if self.tokenizer_vocabulary == "barcodebert" else 0
        max_tokens = self.max_nucleotides // self.k_mer + 2
        if max_tokens > self.max_position_embeddings:
            raise ValueError(f"{self.max_nucleotides} nucleotides at k={self.k_mer} need {max_tokens} positions, "
                             f"more than max_position_embeddings={self.max_position_embeddings}.")
        self.classifier_ranks = list(self.classifier_ranks or [])
        self.rank_labels = {rank: list(names) for rank, names in (self.rank_labels or {}).items()}
        missing = [rank for rank in self.classifier_ranks if rank not in self.rank_labels]
        if missing:
            raise ValueError(f"rank_labels has no class names for the classifier ranks {missing}.")
        self.contrastive_ranks = list(self.contrastive_ranks or [])
        self.contrastive_rank_weights = list(self.contrastive_rank_weights or [1.0] * len(self.contrastive_ranks))
        if len(self.contrastive_rank_weights) != len(self.contrastive_ranks):
            raise ValueError(f"contrastive_rank_weights has {len(self.contrastive_rank_weights)} weights for "
                             f"{len(self.contrastive_ranks)} contrastive_ranks {self.contrastive_ranks}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}.")
        if self.contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be positive, not {self.contrastive_temperature}.")
        super().__post_init__(**kwargs)
        if self.classifier_ranks:
            # The standard fields carry the first rank, so pipelines and the Hub name its classes; rank_labels
            # keeps every rank's.
            names = self.rank_labels[self.classifier_ranks[0]]
            self.id2label = dict(enumerate(names))
            self.label2id = {name: index for index, name in enumerate(names)}

    def _check_types(self) -> None:
        """A config.json is data: refuse values of the wrong type before they are used (a string of rank names
        would be iterated letter by letter, a negative layer count would build an empty encoder)."""
        for name, least in _INTEGER_MINIMUMS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"BarcodeBertConfig: {name} must be an integer of at least {least}, not {value!r}.")
        for name in ("classifier_ranks", "contrastive_ranks"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (list, tuple))
                                      or not all(isinstance(rank, str) for rank in value)):
                raise ValueError(f"BarcodeBertConfig: {name} must be a list of rank names, not {value!r}.")
        labels = self.rank_labels
        if labels is not None and (not isinstance(labels, dict) or not all(
                isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names) for names in labels.values())):
            raise ValueError("BarcodeBertConfig: rank_labels must map each rank to a list of class names.")
        weights = self.contrastive_rank_weights
        if weights is not None and (not isinstance(weights, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)):
            raise ValueError(f"BarcodeBertConfig: contrastive_rank_weights must be a list of numbers, not {weights!r}.")
        for name in ("pooling", "tokenizer_vocabulary"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"BarcodeBertConfig: {name} must be a string, not {getattr(self, name)!r}.")
        if not isinstance(self.contrastive_temperature, (int, float)) or isinstance(self.contrastive_temperature, bool):
            raise ValueError(f"BarcodeBertConfig: contrastive_temperature must be a number, not "
                             f"{self.contrastive_temperature!r}.")

    @property
    def max_tokens(self) -> int:
        """Tokens of the longest barcode (``max_nucleotides`` cut into k-mers, with [CLS]/[SEP] where used)."""
        return self.max_nucleotides // self.k_mer + FRAMING_TOKENS_PER_VOCABULARY[self.tokenizer_vocabulary]

    @property
    def embedding_size(self) -> int:
        """Length of the vector ``embed`` returns for each barcode."""
        if self.pooling == "per_position":
            return self.max_tokens * self.per_position_size
        return self.hidden_size

    @property
    def num_labels_per_rank(self) -> dict[str, int]:
        return {rank: len(self.rank_labels[rank]) for rank in self.classifier_ranks}


# save_pretrained copies this file next to config.json (trust_remote_code loading).
BarcodeBertConfig.register_for_auto_class()
