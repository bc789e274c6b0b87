"""Species delimitation on real BOLD barcodes, every method in the same run, and the sparse path at scale.

    python bench/bench_delimitation.py --data ../shared/data/bold-insects             # the comparison (≈3 min)
    python bench/bench_delimitation.py --data ../shared/data/bold-insects --scale 100000   # + 100k barcodes

Records: ``test+test_unseen`` (not deduplicated, as the zero-shot clustering protocol). Thresholds are calibrated
on ``val+val_unseen`` (never on the records delimited). Rows: BOLD's BINs; UPGMA at the textbook 2 %; UPGMA and
single linkage calibrated; the learned linkage (merges accepted by a model fitted on ``--fit-on``, by default
``val+val_unseen+train``); the paper's protocol (6-mer counts → UMAP 50 → Ward with the true number of species),
and the same protocol on each BarcodeBERT folder given with ``--encoders`` (its embeddings as `bioscan5m cluster`
makes them).
Every AMI is scikit-learn's, in percent. ``--scale N`` delimits N barcodes (all real barcodes of every split,
repeated to N) on the sparse graph in a fresh process, by single linkage and by the learned linkage (its model fitted on
``val+val_unseen``, outside the timing), and reports seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

SCALE_RUN = """
import json, resource, sys, time
from bioscan5m import read_metadata
from bioscan5m.delimitation import LearnedLinkage, delimit_barcodes
barcodes = read_metadata(sys.argv[1], split="all")["dna_barcode"].tolist()
n = int(sys.argv[2]); real = len(barcodes)
barcodes = (barcodes * (n // real + 1))[:n]
if sys.argv[3] == "learned":
    labelled = read_metadata(sys.argv[1], split="val+val_unseen")
    model = LearnedLinkage().fit(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy())
    started = time.time()
    clusters = model.delimit(barcodes, sparse=True, progress=True)
else:
    started = time.time()
    clusters = delimit_barcodes(barcodes, float(sys.argv[3]), sparse=True, progress=True)
print(json.dumps({"method": sys.argv[3], "barcodes": n, "real_barcodes": min(n, real),
                  "seconds": round(time.time() - started, 1), "clusters": int(clusters.max() + 1),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="release root with real barcodes (../shared/data/bold-insects)")
    parser.add_argument("--split", default="test+test_unseen")
    parser.add_argument("--calibrate-on", default="val+val_unseen")
    parser.add_argument("--fit-on", default="val+val_unseen+train", help="labelled splits the merge model is fitted on")
    parser.add_argument("--encoders", nargs="*", default=[], help="BarcodeBERT folders to run the protocol on")
    parser.add_argument("--scale", type=int, default=0, help="also delimit this many barcodes on the sparse graph")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    from bioscan5m import read_metadata
    from bioscan5m.delimitation import LearnedLinkage, calibrate_threshold, delimit_barcodes, delimitation_summary
    from bioscan5m.embedding import embed_sequences, kmer_embeddings
    from bioscan5m.evaluation.clustering import zero_shot_clustering
    from bioscan5m.evaluation.scoring import clustering_agreement

    records = read_metadata(args.data, split=args.split)
    labelled = read_metadata(args.data, split=args.calibrate_on)
    barcodes = records["dna_barcode"].tolist()
    ranks = {rank: records[rank].to_numpy() for rank in ("species", "genus", "family")}
    rows = []

    def add(name, clusters, seconds, threshold=None):
        summary = delimitation_summary(clusters, ranks)
        rows.append({"method": name, "threshold_percent": None if threshold is None else round(100 * threshold, 2),
                     "putative_species": summary["clusters"], "named_species": summary["species"]["named"],
                     **{f"{rank}_ami": round(summary[rank]["ami"], 2) for rank in ranks},
                     "species_split": len(summary["species_split"]),
                     "clusters_merging_species": len(summary["clusters_merging_species"]),
                     "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)

    bins = records["dna_bin"].fillna("").astype(str).to_numpy()
    add("BOLD BINs (records without a BIN as one group)", np.unique(bins, return_inverse=True)[1], 0.0)
    alone = np.where(bins == "", np.char.add("no BIN ", np.arange(len(bins)).astype(str)), bins)
    add("BOLD BINs (records without a BIN each alone)", np.unique(alone, return_inverse=True)[1], 0.0)
    started = time.time()
    add("UPGMA, 2 %", delimit_barcodes(barcodes, 0.02, method="upgma"), time.time() - started, 0.02)
    for method in ("upgma", "single"):
        started = time.time()
        calibration = calibrate_threshold(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy(), method)
        clusters = delimit_barcodes(barcodes, calibration.threshold, method=method, sparse=False)
        add(f"{'UPGMA' if method == 'upgma' else 'single linkage'}, calibrated on {args.calibrate_on}", clusters,
            time.time() - started, calibration.threshold)
        if method == "single":
            started = time.time()
            sparse = delimit_barcodes(barcodes, calibration.threshold, method="single", sparse=True)
            sparse_seconds = time.time() - started
            same = bool(np.array_equal(sparse, clusters))
            print(f"sparse graph: {sparse_seconds:.1f} s, same clusters as the dense matrix: {same}", flush=True)
            threshold = calibration.threshold
    fit_on = read_metadata(args.data, split=args.fit_on)
    started = time.time()
    model = LearnedLinkage().fit(fit_on["dna_barcode"].tolist(), fit_on["species"].to_numpy())
    learned = model.delimit(barcodes, sparse=False)
    add(f"learned linkage, fitted on {args.fit_on} ({model.merges:,} merges)", learned, time.time() - started)
    started = time.time()
    learned_sparse = model.delimit(barcodes, sparse=True)
    learned_same = bool(np.array_equal(learned_sparse, learned))
    print(f"learned linkage on the sparse graph: {time.time() - started:.1f} s, same clusters as the dense "
          f"matrix: {learned_same}", flush=True)
    started = time.time()
    protocol = zero_shot_clustering(kmer_embeddings(barcodes, k=6, svd_dims=256), {"species": ranks["species"]})
    add("6-mer counts → UMAP 50 → Ward (paper protocol, known number of species)",
        protocol.cluster_ids, time.time() - started)
    for encoder in args.encoders:
        started = time.time()
        protocol = zero_shot_clustering(embed_sequences(encoder, barcodes, progress=False),
                                        {"species": ranks["species"]})
        add(f"BarcodeBERT {encoder} → UMAP 50 → Ward (paper protocol)", protocol.cluster_ids, time.time() - started)
    results = {"records": len(records), "split": args.split, "calibrate_on": args.calibrate_on, "rows": rows,
               "sparse_equals_dense": same, "sparse_seconds": round(sparse_seconds, 1),
               "learned_sparse_equals_dense": learned_same,
               "bins_ami_with_single": round(100 * clustering_agreement(bins, sparse)["ami"], 2)}
    for method in ("learned", str(threshold)) if args.scale else ():
        done = subprocess.run([sys.executable, "-c", SCALE_RUN, args.data, str(args.scale), method],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        print(done.stdout)
        results.setdefault("scale", []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    import pandas as pd

    print(pd.DataFrame(rows).to_markdown(index=False))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
