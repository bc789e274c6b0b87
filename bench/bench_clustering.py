"""Zero-shot clustering time and memory: UMAP (50 dims, 30 neighbours) and Ward, per 10k points, at growing n.

    python bench/bench_clustering.py --sizes 10000 --dims 768                      # full protocol
    python bench/bench_clustering.py --sizes 10000,100000 --dims 50 --ward-only    # Ward on UMAP-sized points

Synthetic clustered float32 embeddings (species-like groups). Above `EXACT_WARD_LIMIT` points Ward runs on a
k-NN connectivity graph (exact Ward's condensed distance matrix would need ~4·n² bytes: 40 GB at 100k).
Prints seconds per stage, seconds per 10k points, AMI against the synthetic groups and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource

import numpy as np

from bioscan5m.evaluation.clustering import zero_shot_clustering


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of points")
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--points-per-group", type=int, default=17, help="average points per synthetic species")
    parser.add_argument("--ward-only", action="store_true",
                        help="skip UMAP and run Ward on --dims-dimensional points (use --dims 50, the UMAP output size)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    rows = []
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.sizes.split(",")):
        groups = max(2, n // args.points_per_group)
        centres = rng.normal(size=(groups, args.dims)).astype(np.float32)
        labels = rng.integers(0, groups, n)
        embeddings = centres[labels] + 0.7 * rng.normal(size=(n, args.dims)).astype(np.float32)
        result = zero_shot_clustering(embeddings, {"species": labels}, n_components=0 if args.ward_only else 50)
        total = sum(result.seconds.values())
        row = {"points": n, "dims": args.dims, "clusters": result.n_clusters, "ward": result.ward,
               **{f"{k}_seconds": v for k, v in result.seconds.items()}, "seconds_per_10k": total / n * 10_000,
               "ami": result.ami["species"], "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
        rows.append(row)
        print(f"{n:>7,} points x {args.dims}: UMAP {result.seconds['umap']:.1f} s, Ward ({result.ward}) "
              f"{result.seconds['ward']:.1f} s -> {row['seconds_per_10k']:.1f} s per 10k points; AMI {row['ami']:.3f}; "
              f"peak RSS {row['peak_rss_gb']:.2f} GB", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
