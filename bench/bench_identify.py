"""Batch identification against BLAST, in one run, 2 threads each, on the real BOLD barcodes of ../shared/data.

    .venv/bin/python bench/bench_identify.py --data ../shared/data/bold-insects --json runs/bench-identify.json

* keys: the unique barcodes of ``train``; the key index (``--model``, default the k-mer embedding) and BLAST's
  database are built before any clock starts;
* queries: ``--queries`` (default 10,000) records drawn with a fixed seed from ``test`` + ``test_unseen``, written
  as one FASTA file;
* ours: ``bioscan5m identify --fasta queries.fasta --out hits.tsv`` as a function call (FASTA parsing, embedding,
  search, voting, writing the table: all timed); BLAST: ``blastn`` (megablast, its defaults) of the same FASTA
  against the prebuilt database, tabular output, on ``--blast-queries`` of them (BLAST's queries/s does not depend
  on how many are timed);
* accuracy of both on the same queries: species of ``test`` queries, genus of ``test_unseen`` queries (their
  species are not among the keys) — ours the voted label, BLAST's the top hit's;
* ``bioscan5m identify --fasta --out`` on FASTA files of ``--stream-records`` barcodes, each in a fresh process:
  wall time and peak RSS (flat as the file grows: the input is streamed);
* index memory per key, extrapolated to the release's 2.5 M unique barcodes; and at 2.5 M keys (the real key
  embeddings replicated with small noise) an IVF-PQ index: p95 latency of one query and recall@1 against exact search;
  for ``--model aligned`` its own ``ivf`` index at 2.5 M keys (the real keys' bases replicated, 1 % of them changed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RELEASE_UNIQUE_BARCODES = 2_500_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/bold-insects"), help="release root")
    parser.add_argument("--model", default="kmer", help="embedding model of the key index (default kmer)")
    parser.add_argument("--queries", type=int, default=10_000, help="queries in the batch (default 10,000)")
    parser.add_argument("--blast-queries", type=int, default=1_000, help="of those, timed through blastn")
    parser.add_argument("--threads", type=int, default=2, help="threads for each method (default 2)")
    parser.add_argument("--scale-keys", type=int, default=RELEASE_UNIQUE_BARCODES,
                        help="keys of the IVF-PQ latency test (0 to skip)")
    parser.add_argument("--stream-records", type=int, nargs="*", default=[10_000, 200_000],
                        help="FASTA sizes identified from the command line in a fresh process (time, peak RSS)")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()

    import faiss
    import pandas as pd
    import torch

    import bioscan5m
    from bioscan5m.evaluation.baselines import require_blast
    from bioscan5m.identification import iter_fasta, iter_identifications, write_identifications, write_index

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    require_blast()
    train = bioscan5m.read_metadata(args.data, split="train")
    keys = train.drop_duplicates("dna_barcode").reset_index(drop=True)
    pool = bioscan5m.read_metadata(args.data, split="test+test_unseen")
    queries = pool.sample(args.queries, replace=len(pool) < args.queries, random_state=0).reset_index(drop=True)
    calibration = bioscan5m.read_metadata(args.data, split="val+val_unseen+other_heldout").sample(3000, random_state=0)
    results = {"data": args.data, "keys": len(keys), "queries": len(queries), "threads": args.threads,
               "model": args.model}

    with tempfile.TemporaryDirectory(prefix="bench-identify-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        index_dir = write_index(keys, tmp / "index", model=args.model, calibration_records=calibration)
        results["index_build_seconds"] = round(time.perf_counter() - started, 1)
        index = bioscan5m.load_index(index_dir)
        fasta = tmp / "queries.fasta"
        with open(fasta, "w") as handle:
            for i, sequence in enumerate(queries["dna_barcode"]):
                handle.write(f">q{i}\n{sequence}\n")

        started = time.perf_counter()
        write_identifications(iter_identifications(index, dna=iter_fasta(fasta), progress=False), tmp / "hits.tsv")
        ours_seconds = time.perf_counter() - started
        hits = pd.read_csv(tmp / "hits.tsv", sep="\t")
        results["ours"] = {"seconds": round(ours_seconds, 2), "queries_per_second": round(len(queries) / ours_seconds, 1),
                           **_accuracy(hits["species"], hits["genus"], queries)}

        key_fasta = tmp / "keys.fasta"
        with open(key_fasta, "w") as handle:
            for i, sequence in enumerate(keys["dna_barcode"]):
                handle.write(f">{i}\n{sequence}\n")
        subprocess.run(["makeblastdb", "-in", str(key_fasta), "-dbtype", "nucl", "-out", str(tmp / "keys")],
                       check=True, capture_output=True)
        timed = queries.iloc[:args.blast_queries]
        blast_fasta = tmp / "blast.fasta"
        blast_fasta.write_text("".join(f">{i}\n{s}\n" for i, s in enumerate(timed["dna_barcode"])))
        started = time.perf_counter()
        subprocess.run(["blastn", "-query", str(blast_fasta), "-db", str(tmp / "keys"), "-outfmt", "6 qseqid sseqid bitscore",
                        "-max_target_seqs", "10", "-num_threads", str(args.threads), "-out", str(tmp / "blast.tsv")],
                       check=True, capture_output=True)
        blast_seconds = time.perf_counter() - started
        table = pd.read_csv(tmp / "blast.tsv", sep="\t", header=None, names=["query", "key", "bitscore"])
        best = table.sort_values(["query", "bitscore"], ascending=[True, False], kind="stable").drop_duplicates("query")
        top = pd.Series(-1, index=range(len(timed)))
        top[best["query"].to_numpy()] = best["key"].to_numpy()
        species = [keys["species"].iloc[k] if k >= 0 else None for k in top]
        genus = [keys["genus"].iloc[k] if k >= 0 else None for k in top]
        results["blast"] = {"timed_queries": len(timed), "seconds": round(blast_seconds, 2),
                            "queries_per_second": round(len(timed) / blast_seconds, 1),
                            **_accuracy(pd.Series(species), pd.Series(genus), timed)}
        ours_same = _accuracy(hits["species"].iloc[:len(timed)], hits["genus"].iloc[:len(timed)], timed)
        results["ours_on_blast_queries"] = ours_same
        results["speedup_vs_blast"] = round(results["ours"]["queries_per_second"] / results["blast"]["queries_per_second"], 1)

        if args.stream_records:
            results["stream"] = [_stream(index_dir, pool["dna_barcode"].tolist(), n, tmp) for n in args.stream_records]

        files = sum(path.stat().st_size for path in index_dir.rglob("*") if path.is_file())
        results["index_bytes_per_key"] = round(files / len(keys), 1)
        results["index_gb_at_release_scale"] = round(files / len(keys) * RELEASE_UNIQUE_BARCODES / 1e9, 2)
        if args.scale_keys and index.encoder.kind == "aligned":
            results["aligned_at_scale"] = _aligned_at_scale(index.encoder, keys["dna_barcode"].tolist(),
                                                            args.scale_keys, queries["dna_barcode"].iloc[:300].tolist())
        elif args.scale_keys:
            vectors = np.asarray(index.dna_index.reconstruct_n(0, index.dna_index.ntotal), dtype=np.float32)
            results["compressed_at_scale"] = _ivfpq_latency(vectors, args.scale_keys, index.encoder.embed_dna(
                queries["dna_barcode"].iloc[:500].tolist()))
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


def _stream(index_dir: Path, sequences: list[str], records: int, tmp: Path) -> dict:
    """``bioscan5m identify --fasta --out`` on a FASTA of ``records`` barcodes in a fresh process: its wall time
    and peak RSS, which stays flat as the file grows when the input is streamed."""
    fasta = tmp / f"stream-{records}.fasta"
    with open(fasta, "w") as handle:
        for i in range(records):
            handle.write(f">s{i}\n{sequences[i % len(sequences)]}\n")
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bioscan5m.cli", "identify", "--index", str(index_dir), "--fasta",
                              str(fasta), "--out", str(tmp / f"stream-{records}.tsv")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"identify on {fasta} failed (status {status})")
    return {"records": records, "fasta_mb": round(fasta.stat().st_size / 1e6, 1),
            "seconds": round(time.perf_counter() - started, 1), "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2)}


def _accuracy(species, genus, queries) -> dict:
    seen = (queries["split"] == "test").to_numpy()
    species_hit = species.to_numpy(dtype=object) == queries["species"].to_numpy(dtype=object)
    genus_hit = genus.to_numpy(dtype=object) == queries["genus"].to_numpy(dtype=object)
    return {"species_at_test": round(100 * float(species_hit[seen].mean()), 2) if seen.any() else None,
            "genus_at_test_unseen": round(100 * float(genus_hit[~seen].mean()), 2) if (~seen).any() else None}


def _ivfpq_latency(vectors: np.ndarray, total: int, queries: np.ndarray, seed: int = 0) -> dict:
    """Compressed IVF indexes over ``total`` keys (real key vectors replicated, each copy jittered): p95 latency
    of one query and recall@1 of its nearest key against exact inner-product search, per index and nprobe."""
    import faiss

    from bioscan5m.embedding import l2_normalize_rows

    rng = np.random.default_rng(seed)
    dims = vectors.shape[1]
    keys = np.empty((total, dims), dtype=np.float32)
    for start in range(0, total, len(vectors)):
        part = vectors[:min(len(vectors), total - start)]
        keys[start:start + len(part)] = part + rng.normal(0, 0.005, part.shape).astype(np.float32)
    keys = l2_normalize_rows(keys)
    queries = l2_normalize_rows(queries)
    exact = faiss.IndexFlatIP(dims)
    exact.add(keys)
    truth = exact.search(queries, 1)[1][:, 0]
    del exact
    report = {"keys": total, "dims": dims, "indexes": {}}
    training = keys[rng.choice(total, size=min(total, 100_000), replace=False)]
    for factory, bytes_per_key in (("IVF4096,PQ32", 32), ("IVF4096,SQ8", dims)):
        index = faiss.index_factory(dims, factory, faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        index.train(training)
        index.add(keys)
        entry = {"bytes_per_key": bytes_per_key, "gb": round(bytes_per_key * total / 1e9, 2),
                 "build_seconds": round(time.perf_counter() - started, 1), "by_nprobe": {}}
        for nprobe in (16, 64):
            faiss.extract_index_ivf(index).nprobe = nprobe
            found = index.search(queries, 1)[1][:, 0]
            entry["by_nprobe"][nprobe] = {
                **_one_query_latency(index, queries, k=1),
                # The replicated keys are near-duplicates: finding any copy of the same real barcode counts.
                "recall_at_1": round(float(np.mean(found % len(vectors) == truth % len(vectors))), 4)}
        report["indexes"][factory] = entry
        del index
    return report


def _aligned_at_scale(encoder, key_sequences: list[str], total: int, query_sequences: list[str], seed: int = 0,
                     mutation_rate: float = 0.01, chunk: int = 100_000) -> dict:
    """The aligned encoder's ``ivf`` index over ``total`` keys (the real keys' bases replicated, every copy after
    the first with 1 % of its bases changed), built chunk by chunk as the keys would not fit in memory as floats:
    bytes per key, peak RSS, p95 latency of one query (its 25 nearest, as the vote asks) and recall@1 against
    exact search (the nearest key found scores the exact best)."""
    import resource

    import faiss

    from bioscan5m.embedding import aligned_base_codes, one_hot_bases
    from bioscan5m.evaluation.retrieval import empty_faiss_index

    codes = aligned_base_codes(key_sequences)

    def replica(start: int, stop: int) -> np.ndarray:
        rows = codes[np.arange(start, stop) % len(codes)]
        rng = np.random.default_rng([seed, start])
        change = (rng.random(rows.shape) < mutation_rate) & (rows < 4) & (np.arange(start, stop) >= len(codes))[:, None]
        rows[change] = (rows[change] + rng.integers(1, 4, int(change.sum()), dtype=np.uint8)) % 4
        return one_hot_bases(rows)

    started = time.perf_counter()
    index = empty_faiss_index(replica(0, min(total, 160_000)), total, "ivf", integer_vectors=True)
    for start in range(0, total, chunk):
        index.add(replica(start, min(start + chunk, total)))
    build_seconds = time.perf_counter() - started
    queries = np.ascontiguousarray(encoder.query_vectors(query_sequences), dtype=np.float32)
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    for start in range(0, total, chunk):
        best = np.maximum(best, (replica(start, min(start + chunk, total)) @ queries.T).max(axis=0))
    ivf = faiss.extract_index_ivf(index)
    report = {"keys": total, "real_keys": len(codes), "dims": int(index.d), "nlist": int(ivf.nlist),
              "index": "IVF over the 256-d projection (8-bit), exact rescoring on fp16 one-hot keys",
              "bytes_per_key": int(ivf.code_size + 8 + index.refine_index.sa_code_size()),
              "build_seconds": round(build_seconds, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2), "by_nprobe": {}}
    report["gb"] = round(report["bytes_per_key"] * total / 1e9, 2)
    for nprobe in (16, 64):
        ivf.nprobe = nprobe
        found = index.search(queries, 1)[0][:, 0]
        report["by_nprobe"][nprobe] = {**_one_query_latency(index, queries, k=25),
                                       "recall_at_1": round(float(np.mean(found >= best - 1e-5)), 4)}
    return report


def _one_query_latency(index, queries: np.ndarray, k: int) -> dict:
    """p95 and median milliseconds of searching one query at a time."""
    latencies = []
    for query in queries:
        started = time.perf_counter()
        index.search(query[None], k)
        latencies.append(time.perf_counter() - started)
    return {"p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
            "median_ms": round(1000 * statistics.median(latencies), 2)}


if __name__ == "__main__":
    main()
