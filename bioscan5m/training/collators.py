"""Batch builders: raw barcodes in, tensors out. Tokenizing in the collator lets every epoch see a fresh random
offset (BarcodeBERT's augmentation), at the Rust tokenizer's speed.

The random draws of a batch (offsets, masks, positives) depend only on the seed, the epoch (``set_epoch``, called
by the Trainer through ``trainer_runs.CollatorEpochCallback``) and the batch's own examples, never on how many
batches came before: a run resumed from a checkpoint, which skips the batches already trained without collating
them, draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch


class EpochSeeded:
    """``set_epoch`` and the per-batch random generators of a collator with a ``seed`` field."""

    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batch_random(self, keys) -> tuple[random.Random, torch.Generator]:
        """Python and torch generators for the batch whose examples are ``keys`` (their barcodes or rows)."""
        digest = hashlib.blake2b(repr((self.seed, self.epoch, list(keys))).encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") >> 1
        return random.Random(seed), torch.Generator().manual_seed(seed)


def random_offsets(sequences: list[str], k: int, rng: random.Random) -> list[str]:
    """Drop the first ``randint(0, k-1)`` bases of each barcode, so the k-mer frame shifts between epochs."""
    return [sequence[rng.randrange(k):] for sequence in sequences]


@dataclass
class KmerMLMCollator(EpochSeeded):
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

    def __post_init__(self):
        if self.scheme not in ("barcodebert", "standard"):
            raise ValueError(f"Unknown MLM scheme {self.scheme!r}; choose 'barcodebert' or 'standard'.")
        if self.mask_ratio is None:
            self.mask_ratio = 0.5 if self.scheme == "barcodebert" else 0.15

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [example[self.column] for example in examples]
        rng, generator = self.batch_random(sequences)
        if self.random_offset:
            sequences = random_offsets(sequences, self.tokenizer.k, rng)
        padding = "max_length" if self.scheme == "barcodebert" else "longest"
        batch = self.tokenizer(sequences, padding=padding, truncation=True, return_tensors="pt")
        input_ids = batch["input_ids"]
        # Both vocabularies put the special tokens before the k-mers. [UNK] counts as special: N-holding k-mers
        # and BarcodeBERT's padding carry nothing to predict.
        first_kmer = self.tokenizer.convert_tokens_to_ids("A" * self.tokenizer.k)
        special = input_ids < first_kmer
        masked = (torch.rand(input_ids.shape, generator=generator) < self.mask_ratio) & ~special
        labels = input_ids.clone()
        if self.scheme == "barcodebert":
            labels[special] = -100
            input_ids = input_ids.masked_fill(masked, self.tokenizer.mask_token_id)
        else:
            labels[~masked] = -100
            draw = torch.rand(input_ids.shape, generator=generator)
            input_ids = input_ids.masked_fill(masked & (draw < 0.8), self.tokenizer.mask_token_id)
            swap = masked & (draw >= 0.8) & (draw < 0.9)
            random_kmers = torch.randint(first_kmer, len(self.tokenizer), input_ids.shape, generator=generator)
            input_ids = torch.where(swap, random_kmers, input_ids)
        return {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels}


@dataclass
class KmerClassificationCollator(EpochSeeded):
    """Classification batches: tokenized barcodes and a ``(batch, n_ranks)`` label tensor from ``{rank}_index``."""

    tokenizer: object
    ranks: tuple[str, ...]
    random_offset: bool = False
    seed: int = 0
    column: str = "dna_barcode"

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [example[self.column] for example in examples]
        if self.random_offset:
            sequences = random_offsets(sequences, self.tokenizer.k, self.batch_random(sequences)[0])
        batch = self.tokenizer(sequences, padding="longest", truncation=True, return_tensors="pt")
        labels = torch.tensor([[example[f"{rank}_index"] for rank in self.ranks] for example in examples])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


@dataclass
class KmerGroupedCollator(EpochSeeded):
    """Contrastive batches in which every barcode has positives: each example (a ``row`` of ``barcodes``) brings
    ``group_size - 1`` more barcodes of its own taxon at ``labels[:, group_column]`` (the finest rank by default),
    drawn without replacement while the taxon has enough barcodes, with replacement after that. A barcode that is
    alone in its taxon (or unlabelled) comes alone: copies of it would be trivial positives; it serves as a negative.

    Works with any sampler (the Trainer's shuffling, distributed sharding): a batch of ``n`` examples becomes up to
    ``n * group_size`` barcodes, so ``per_device_train_batch_size`` counts groups.
    """

    tokenizer: object
    barcodes: list[str]
    labels: np.ndarray                     # (n_barcodes, n_ranks) class indices; negative = unknown
    group_size: int = 4
    group_column: int = -1
    random_offset: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (an anchor and a positive), not {self.group_size}.")
        self.labels = np.asarray(self.labels).reshape(len(self.barcodes), -1)
        self._members: dict[int, list[int]] = {}
        for row, label in enumerate(self.labels[:, self.group_column].tolist()):
            self._members.setdefault(label, []).append(row)

    def _group(self, row: int, rng: random.Random) -> list[int]:
        label = int(self.labels[row, self.group_column])
        others = [member for member in self._members[label] if member != row] if label >= 0 else []
        wanted = self.group_size - 1
        if not others:
            return [row]
        if len(others) >= wanted:
            return [row, *rng.sample(others, wanted)]
        return [row, *others, *rng.choices(others, k=wanted - len(others))]

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        anchors = [int(example["row"]) for example in examples]
        rng, _ = self.batch_random(anchors)
        rows = [member for row in anchors for member in self._group(row, rng)]
        sequences = [self.barcodes[row] for row in rows]
        if self.random_offset:
            sequences = random_offsets(sequences, self.tokenizer.k, rng)
        batch = self.tokenizer(sequences, padding="longest", truncation=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "labels": torch.as_tensor(self.labels[rows], dtype=torch.long)}
