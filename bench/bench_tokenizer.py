"""Tokenizer throughput on real barcodes: our Rust-backed KmerTokenizerFast vs a pure-Python BarcodeBERT-style loop.

Both produce, for every barcode, BarcodeBERT's ids (N-padded to 660 nucleotides, non-overlapping k-mers,
[MASK]=0/[UNK]=1 vocabulary) and attention mask, as batched torch tensors (what training and embedding consume)
and as Python lists; all outputs are checked to be identical. Units: sequences per CPU-second.
Measured in the same run, so the ratio is robust to machine load.

    .venv/bin/python bench/bench_tokenizer.py --data ../shared/data/bold-insects --k 4 5 8
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch

import bioscan5m
from bioscan5m.tokenization import KmerTokenizer, KmerTokenizerFast


def barcodebert_style_encode(sequences: list[str], k: int, vocab: dict[str, int], max_len: int = 660,
                             batch_size: int = 1024, tensors: bool = True):
    """The original's per-sequence loop (``KmerTokenizer`` + ``DNADataset.__getitem__``): cut/pad with N, slice
    k-mers, look each one up, make ``torch`` tensors; then stack batches as the DataLoader's collate does."""
    batches = []
    for start in range(0, len(sequences), batch_size):
        ids, masks = [], []
        for sequence in sequences[start:start + batch_size]:
            sequence = sequence[:max_len]
            real_tokens = len(sequence) // k
            padded = sequence + "N" * (max_len - len(sequence))
            tokens = [padded[i:i + k] for i in range(0, max_len - k + 1, k)]
            token_ids = [vocab.get(token, 1) for token in tokens]
            mask = [1] * real_tokens + [0] * (len(tokens) - real_tokens)
            ids.append(torch.tensor(token_ids) if tensors else token_ids)
            masks.append(torch.tensor(mask) if tensors else mask)
        batches.append((torch.stack(ids), torch.stack(masks)) if tensors else (ids, masks))
    return batches


def timed_pair(first, second, repeats: int):
    """Best-of-``repeats`` CPU times (``time.process_time``) of two functions, run alternately. CPU time, not wall
    time, because the project machines are shared: wall time there measures the neighbours' load as much as ours.
    Both sides run on one thread (the vectorised encoder is single-threaded NumPy)."""
    best = [float("inf"), float("inf")]
    results = [None, None]
    for _ in range(repeats):
        for index, function in enumerate((first, second)):
            started = time.process_time()
            results[index] = function()
            best[index] = min(best[index], time.process_time() - started)
    return best, results


def timed(function, repeats: int):
    (seconds, _), (result, _) = timed_pair(function, lambda: None, repeats)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/bold-insects")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 5, 8])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sequences = bioscan5m.read_metadata(args.data, split="all", max_nucleotides=None).dna_barcode.tolist()[:args.records]
    torch.set_num_threads(1)
    print(f"{len(sequences):,} real barcodes, sequences per CPU-second; TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}, "
          f"{os.cpu_count()} CPUs")
    print("| k | BarcodeBERT-style loop → tensors | KmerTokenizerFast → tensors | speed-up | loop → lists | "
          "KmerTokenizerFast → lists | speed-up | Rust pipeline only → lists | KmerTokenizer (Python) → lists | "
          "KmerTokenizerFast(align_to_reference=True) → tensors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in args.k:
        vocab = {"".join(p): i + 2 for i, p in enumerate(itertools.product("ACGT", repeat=k))}
        fast = KmerTokenizerFast(k=k)
        slow = KmerTokenizer(k=k)
        aligning = KmerTokenizerFast(k=k, align_to_reference=True)
        rust = fast.backend_tokenizer
        rust.enable_truncation(fast.model_max_length)
        rust.enable_padding(length=fast.model_max_length, pad_id=fast.pad_token_id, pad_token=fast.pad_token)
        batches = [sequences[i:i + args.batch_size] for i in range(0, len(sequences), args.batch_size)]

        def ours(tensors: bool):
            kind = "pt" if tensors else None
            return [fast(batch, padding="max_length", truncation=True, return_tensors=kind) for batch in batches]

        (loop_pt, fast_pt), (reference, encoded) = timed_pair(
            lambda: barcodebert_style_encode(sequences, k, vocab, batch_size=args.batch_size), lambda: ours(True),
            args.repeats)
        (loop_list, fast_list), (reference_lists, encoded_lists) = timed_pair(
            lambda: barcodebert_style_encode(sequences, k, vocab, tensors=False, batch_size=args.batch_size),
            lambda: ours(False), args.repeats)
        subset = sequences[:5000]
        rust_s, rust_out = timed(lambda: [[e.ids for e in rust.encode_batch(b)] for b in batches], 1)
        slow_s, slow_out = timed(lambda: slow(subset, padding="max_length", truncation=True), 1)
        aligned_s, _ = timed(lambda: [aligning(b, padding="max_length", truncation=True, return_tensors="pt")
                                      for b in batches], 1)
        for (ids, masks), batch in zip(reference, encoded):
            assert torch.equal(ids, batch["input_ids"]) and torch.equal(masks, batch["attention_mask"]), k
        assert [row for ids, _ in reference_lists for row in ids] == \
            [row for batch in encoded_lists for row in batch["input_ids"]] == [row for b in rust_out for row in b]
        assert slow_out["input_ids"] == [row for ids, _ in reference_lists for row in ids][:len(subset)]
        n = len(sequences)
        print(f"| {k} | {n / loop_pt:,.0f} | {n / fast_pt:,.0f} | {loop_pt / fast_pt:.1f}× | {n / loop_list:,.0f} | "
              f"{n / fast_list:,.0f} | {loop_list / fast_list:.1f}× | {n / rust_s:,.0f} | {len(subset) / slow_s:,.0f} | "
              f"{n / aligned_s:,.0f} |")


if __name__ == "__main__":
    main()
