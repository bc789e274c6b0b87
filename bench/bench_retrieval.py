"""Retrieval speed and memory: FAISS (flat exact, IVF approximate) against brute-force NumPy in the same run.

    python bench/bench_retrieval.py --keys 100000 --queries 10000 --dims 768

Embeddings are synthetic clustered vectors (species-like groups), float32, L2-normalised by `search`.
Prints queries/s per method, the FAISS/NumPy ratio, IVF recall@1 against the exact result and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from bioscan5m.evaluation.retrieval import faiss_index, l2_normalize, search


def clustered_vectors(n: int, dims: int, groups: int, rng) -> np.ndarray:
    centres = rng.normal(size=(groups, dims)).astype(np.float32)
    return centres[rng.integers(0, groups, n)] + 0.5 * rng.normal(size=(n, dims)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--groups", type=int, default=5_000, help="number of synthetic clusters")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    keys = clustered_vectors(args.keys, args.dims, args.groups, rng)
    queries = clustered_vectors(args.queries, args.dims, args.groups, rng)
    results = {"keys": args.keys, "queries": args.queries, "dims": args.dims, "k": args.k}
    found = {}
    start = time.perf_counter()
    _, found["numpy"] = search(queries, keys, k=args.k, method="numpy")
    results["numpy_queries_per_second"] = args.queries / (time.perf_counter() - start)
    print(f"numpy brute force   {results['numpy_queries_per_second']:>10,.0f} queries/s")
    unit_keys, unit_queries = l2_normalize(keys), l2_normalize(queries)
    for name, index, nprobe in (("faiss_flat", "flat", 0), ("faiss_ivf", "ivf", 16), ("faiss_ivf_nprobe64", "ivf", 64)):
        start = time.perf_counter()
        key_index = faiss_index(unit_keys, index=index, nprobe=nprobe)
        results[f"{name}_build_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        _, found[name] = key_index.search(unit_queries, args.k)
        results[f"{name}_queries_per_second"] = args.queries / (time.perf_counter() - start)
        print(f"{name:<19} {results[f'{name}_queries_per_second']:>10,.0f} queries/s  "
              f"(index built in {results[f'{name}_build_seconds']:.1f} s)")
    for name in ("faiss_ivf", "faiss_ivf_nprobe64"):
        results[f"{name}_recall_at_1"] = float((found[name][:, 0] == found["faiss_flat"][:, 0]).mean())
    results["faiss_flat_vs_numpy"] = results["faiss_flat_queries_per_second"] / results["numpy_queries_per_second"]
    results["faiss_ivf_vs_numpy"] = results["faiss_ivf_queries_per_second"] / results["numpy_queries_per_second"]
    results["flat_equals_numpy_top1"] = float((found["faiss_flat"][:, 0] == found["numpy"][:, 0]).mean())
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"FAISS flat / NumPy: {results['faiss_flat_vs_numpy']:.1f}x   IVF(16) / NumPy: {results['faiss_ivf_vs_numpy']:.1f}x   "
          f"IVF recall@1 vs exact: {results['faiss_ivf_recall_at_1']:.3f} (nprobe 16), "
          f"{results['faiss_ivf_nprobe64_recall_at_1']:.3f} (nprobe 64)   flat == NumPy top-1: {results['flat_equals_numpy_top1']:.4f}   "
          f"peak RSS {results['peak_rss_gb']:.2f} GB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
