"""Batch builders: raw barcodes in, tensors out. Tokenizing in the collator lets every epoch see a fresh random
offset (BarcodeBERT's augmentation), at the Rust tokenizer's speed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch


def random_offsets(sequences: list[str], k: int, rng: random.Random) -> list[str]:
    """Drop the first ``randint(0, k-1)`` bases of each barcode, so the k-mer frame shifts between epochs."""
    return [sequence[rng.randrange(k):] for sequence in sequences]


@dataclass
class KmerMLMCollator:
    """Masked-language-model batches.

    ``scheme="barcodebert"``: mask 50 % of the non-special tokens (replaced by [MASK] only) and compute the loss
    over *all* non-special tokens, masked or not, as in BarcodeBERT. ``scheme="standard"``: BERT's 15 % with
    80/10/10 replacement and the loss on masked tokens only. ``mask_ratio`` overrides the scheme's ratio.
    """

    tokenizer: object
    scheme: str = "barcodebert"
    mask_ratio: float | None = None
    random_offset: bool = True
    seed: int = 0
    column: str = "dna_barcode"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self):
        if self.scheme not in ("barcodebert", "standard"):
            raise ValueError(f"Unknown MLM scheme {self.scheme!r}; choose 'barcodebert' or 'standard'.")
        if self.mask_ratio is None:
            self.mask_ratio = 0.5 if self.scheme == "barcodebert" else 0.15
        self._rng = random.Random(self.seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [example[self.column] for example in examples]
        if self.random_offset:
            sequences = random_offsets(sequences, self.tokenizer.k, self._rng)
        padding = "max_length" if self.scheme == "barcodebert" else "longest"
        batch = self.tokenizer(sequences, padding=padding, truncation=True, return_tensors="pt")
        input_ids = batch["input_ids"]
        # Both vocabularies put the special tokens before the k-mers. [UNK] counts as special: N-holding k-mers
        # and BarcodeBERT's padding carry nothing to predict.
        first_kmer = self.tokenizer.convert_tokens_to_ids("A" * self.tokenizer.k)
        special = input_ids < first_kmer
        masked = (torch.rand(input_ids.shape, generator=self._generator) < self.mask_ratio) & ~special
        labels = input_ids.clone()
        if self.scheme == "barcodebert":
            labels[special] = -100
            input_ids = input_ids.masked_fill(masked, self.tokenizer.mask_token_id)
        else:
            labels[~masked] = -100
            draw = torch.rand(input_ids.shape, generator=self._generator)
            input_ids = input_ids.masked_fill(masked & (draw < 0.8), self.tokenizer.mask_token_id)
            swap = masked & (draw >= 0.8) & (draw < 0.9)
            random_kmers = torch.randint(first_kmer, len(self.tokenizer), input_ids.shape, generator=self._generator)
            input_ids = torch.where(swap, random_kmers, input_ids)
        return {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels}


@dataclass
class KmerClassificationCollator:
    """Classification batches: tokenized barcodes and a ``(batch, n_ranks)`` label tensor from ``{rank}_index``."""

    tokenizer: object
    ranks: tuple[str, ...]
    random_offset: bool = False
    seed: int = 0
    column: str = "dna_barcode"

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [example[self.column] for example in examples]
        if self.random_offset:
            sequences = random_offsets(sequences, self.tokenizer.k, self._rng)
        batch = self.tokenizer(sequences, padding="longest", truncation=True, return_tensors="pt")
        labels = torch.tensor([[example[f"{rank}_index"] for rank in self.ranks] for example in examples])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
