"""Identification latency against 100,000 keys, and the Space under load (20 clients for 60 s on 127.0.0.1).

    .venv/bin/python bench/bench_space.py                     # build the 100k index once, then measure
    .venv/bin/python bench/bench_space.py --clients 20 --seconds 60 --queries 500

Keys: every record of ../shared/data/bold-insects (97,787 real BOLD barcodes, all 8 splits) plus copies of random
records with 1 % of their bases substituted, to make exactly ``--keys`` (100,000). Queries: real test_unseen
barcodes. Embedding: the k-mer model (k=6, SVD 256) on an exact FAISS flat inner-product index.

1. ``identify()`` in process: p50/p95/mean of one DNA query (embed, search, vote, neighbour records), on the exact
   flat index with FAISS's default OpenMP threads and with one thread (as the page's server runs it), and on an
   IVF index over the same key vectors (``--index-type ivf``) with how often it finds the exact nearest key.
2. The page's server (bioscan5m.apps.space) on 127.0.0.1: ``--clients`` threads, each with its own ``gradio_client``,
   send one identification after another for ``--seconds``; every answer must be a result (not an error
   message). Latency is the client's round trip, map and table rendering included.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

import bioscan5m
from bioscan5m.identification import write_index

ROOT = Path(__file__).resolve().parents[1]
BOLD = ROOT.parent / "shared" / "data" / "bold-insects"


def hundred_k_keys(total: int, seed: int = 0):
    import pandas as pd

    records = bioscan5m.read_metadata(BOLD)
    rng = np.random.default_rng(seed)
    extra = records.iloc[rng.choice(len(records), size=total - len(records), replace=True)].copy()

    def mutate(sequence: str) -> str:
        letters = np.array(list(sequence))
        positions = rng.choice(len(letters), size=max(1, len(letters) // 100), replace=False)
        letters[positions] = rng.choice(list("ACGT"), size=len(positions))
        return "".join(letters)

    extra["dna_barcode"] = [mutate(s) for s in extra["dna_barcode"]]
    extra["processid"] = [f"{pid}-mut{i}" for i, pid in enumerate(extra["processid"])]
    return pd.concat([records, extra], ignore_index=True)


def percentiles(seconds: list[float]) -> dict:
    ms = 1000 * np.asarray(seconds)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "mean_ms": round(float(ms.mean()), 1), "n": len(ms)}


def latency(index, queries: list[str]) -> dict:
    bioscan5m.identify(index, dna=queries[0])  # warm-up: first-call imports
    seconds = []
    for query in queries:
        started = time.perf_counter()
        bioscan5m.identify(index, dna=query)
        seconds.append(time.perf_counter() - started)
    return percentiles(seconds)


def ivf_latency(index, queries: list[str]) -> dict:
    """The same queries on an IVF index over the same key vectors (``--index-type ivf``), and how often its
    nearest key is the exact search's."""
    from bioscan5m.evaluation.retrieval import faiss_index

    flat = index.dna_index
    exact = np.array([bioscan5m.identify(index, dna=q).neighbours[0]["similarity"] for q in queries])
    ivf = faiss_index(flat.reconstruct_n(0, flat.ntotal), index="ivf")
    index.dna_index = ivf
    try:
        result = latency(index, queries)
        approximate = np.array([bioscan5m.identify(index, dna=q).neighbours[0]["similarity"] for q in queries])
    finally:
        index.dna_index = flat
    result.update(nlist=ivf.nlist, nprobe=ivf.nprobe,
                  same_nearest_similarity=round(float(np.mean(np.abs(exact - approximate) < 1e-4)), 4))
    return result


def load_test(index_dir: Path, queries: list[str], clients: int, duration: float) -> dict:
    """The page's server in its own process, as deployed (clients in this one must not share its interpreter)."""
    import socket
    import subprocess
    import sys

    from gradio_client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bioscan5m.cli", "serve", "--index", str(index_dir), "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            try:
                Client(url, verbose=False)
                break
            except Exception:  # not listening yet
                time.sleep(1)
        results: list[tuple[float, bool, str]] = []
        lock = threading.Lock()
        deadline = time.perf_counter() + duration

        def client_loop(number: int) -> None:
            # gradio's HTTP API (POST the inputs, then read the answer's event stream), as `curl` would use it:
            # gradio_client's own threads and polling would take most of the 2 cores the server runs on.
            import httpx

            with httpx.Client(base_url=url, timeout=60) as http:
                i = number
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        posted = http.post("gradio_api/call/identify", json={"data": [queries[i % len(queries)], None, None]})
                        posted.raise_for_status()
                        answer = http.get(f"gradio_api/call/identify/{posted.json()['event_id']}").text
                        data = next(line for line in answer.splitlines()[::-1] if line.startswith("data:"))
                        status = json.loads(data[5:])[0] if "event: complete" in answer else answer[-200:]
                        ok, note = isinstance(status, str) and status.startswith("### Identified"), str(status)[:120]
                    except Exception as error:  # a failed request is what this test counts
                        ok, note = False, f"{type(error).__name__}: {error}"[:200]
                    with lock:
                        results.append((time.perf_counter() - started, ok, note))
                    i += clients

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    failures = [note for _, ok, note in results if not ok]
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(results), "failed": len(failures),
            "first_failures": failures[:3], "requests_per_s": round(len(results) / elapsed, 2),
            **percentiles([s for s, ok, _ in results if ok] or [0.0])}


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--index", default="bench/out/space-index-100k", help="where the 100k index is built (reused)")
    parser.add_argument("--out", default="bench/out/space.json")
    parser.add_argument("--load-only", action="store_true", help="only the load test (the index built before)")
    args = parser.parse_args()
    index_dir = ROOT / args.index
    build_seconds = None
    if not (index_dir / "index.json").is_file():
        started = time.perf_counter()
        write_index(hundred_k_keys(args.keys), index_dir, model="kmer",
                    provenance={"data": str(BOLD), "splits": f"all + mutated copies to {args.keys}"})
        build_seconds = round(time.perf_counter() - started, 1)
    index = bioscan5m.load_index(index_dir)
    queries = bioscan5m.read_metadata(BOLD, split="test_unseen")["dna_barcode"].sample(
        args.queries, random_state=0).tolist()
    if args.load_only:
        print(json.dumps(load_test(index_dir, queries, args.clients, args.seconds), indent=2))
        return
    report = {"keys": len(index.keys), "index": index.manifest["index_type"], "dimensions": index.manifest["dimensions"],
              "index_build_s": build_seconds, "cpus": os.cpu_count(), "load_average_before": os.getloadavg(),
              "faiss_threads_default": faiss.omp_get_max_threads(),
              "identify_flat_default_threads": latency(index, queries)}
    faiss.omp_set_num_threads(1)  # as the page's server runs it
    report["identify_flat_1_thread"] = latency(index, queries)
    report["identify_ivf_1_thread"] = ivf_latency(index, queries)
    print(json.dumps(report, indent=2), flush=True)
    report["load_test"] = load_test(index_dir, queries, args.clients, args.seconds)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report["load_test"], indent=2))
    Path(ROOT / args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ROOT / args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
