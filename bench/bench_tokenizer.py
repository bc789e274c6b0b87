"""Tokenizer throughput on real barcodes: our Rust-backed KmerTokenizerFast vs a pure-Python BarcodeBERT-style loop.

Both produce, for every barcode, BarcodeBERT's ids (N-padded to 660 nucleotides, non-overlapping k-mers,
[MASK]=0/[UNK]=1 vocabulary) and attention mask as Python lists, and the outputs are checked to be identical.
Measured in the same run, so the ratio is robust to machine load.

    .venv/bin/python bench/bench_tokenizer.py --data ../shared/data/bold-insects --k 4 5 8
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import bioscan5m
from bioscan5m.tokenization import KmerTokenizer, KmerTokenizerFast


def barcodebert_style_encode(sequences: list[str], k: int, vocab: dict[str, int], max_len: int = 660):
    """The original's per-sequence loop: cut/pad with N, slice k-mers, look each one up."""
    all_ids, all_masks = [], []
    for sequence in sequences:
        sequence = sequence[:max_len]
        real_tokens = len(sequence) // k
        padded = sequence + "N" * (max_len - len(sequence))
        tokens = [padded[i:i + k] for i in range(0, max_len - k + 1, k)]
        all_ids.append([vocab.get(token, 1) for token in tokens])
        all_masks.append([1] * real_tokens + [0] * (len(tokens) - real_tokens))
    return all_ids, all_masks


def timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/bold-insects")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 5, 8])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sequences = bioscan5m.read_metadata(args.data, split="all", max_nucleotides=None).dna_barcode.tolist()[:args.records]
    print(f"{len(sequences):,} real barcodes; TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}, "
          f"{os.cpu_count()} CPUs")
    print("| k | pure-Python loop (seq/s) | KmerTokenizer, Python backend (seq/s) | KmerTokenizerFast (seq/s) | "
          "fast / loop |")
    print("|---|---|---|---|---|")
    for k in args.k:
        vocab = {"".join(p): i + 2 for i, p in enumerate(itertools.product("ACGT", repeat=k))}
        fast = KmerTokenizerFast(k=k)
        slow = KmerTokenizer(k=k)

        def run_fast():
            ids, masks = [], []
            for start in range(0, len(sequences), args.batch_size):
                encoded = fast(sequences[start:start + args.batch_size], padding="max_length", truncation=True)
                ids += encoded["input_ids"]
                masks += encoded["attention_mask"]
            return ids, masks

        loop_s, reference = timed(lambda: barcodebert_style_encode(sequences, k, vocab), args.repeats)
        fast_s, ours = timed(run_fast, args.repeats)
        subset = sequences[:5000]
        slow_s, slow_out = timed(lambda: slow(subset, padding="max_length", truncation=True), 1)
        assert ours == reference, f"k={k}: fast tokenizer differs from the BarcodeBERT-style loop"
        assert slow_out["input_ids"] == reference[0][:len(subset)], f"k={k}: Python backend differs"
        n = len(sequences)
        print(f"| {k} | {n / loop_s:,.0f} | {len(subset) / slow_s:,.0f} | {n / fast_s:,.0f} | "
              f"{loop_s / fast_s:.1f}× |")


if __name__ == "__main__":
    main()
