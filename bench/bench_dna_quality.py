"""BarcodeBERT quality and identification speed on real barcodes, beside BLAST and 6-mer 1-NN in the same run.

All methods see the same unique barcodes (BarcodeBERT protocol: global de-duplication after stripping trailing N;
keys = train). Rows:

* BarcodeBERT pretrained: linear probe species@test, cosine 1-NN genus@test_unseen (the paper's protocol);
* BarcodeBERT fine-tuned on train species: species@test, and 1-NN genus@test_unseen on its encoder;
* any further encoders (``--encoders``, e.g. contrastively fine-tuned ones): cosine 1-NN species@test and
  genus@test_unseen;
* 6-mer counts (L2-normalised, exact cosine 1-NN), ungapped identity of the barcodes aligned to the COI-5P
  reference (``aligned_identity_vectors``, exact inner-product 1-NN) and BLAST top hit (blastn megablast, keys =
  train).

Queries per second = identifying ``test_unseen`` queries against the ``train`` keys, key index prepared
beforehand: embedding + exact search for the models and k-mers, ``blastn`` (database built beforehand) for BLAST.

    .venv/bin/python bench/bench_dna_quality.py --data ../shared/data/bold-insects \\
        --pretrained runs/bb-cpu-small --probe-results runs/bb-cpu-small-probe.json \\
        --finetuned runs/bb-cpu-small-species --encoders runs/bb-pp --out runs/dna-quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bioscan5m.embedding import kmer_counts, l2_normalize_rows
from bioscan5m.evaluation.baselines import aligned_identity_nearest
from bioscan5m.evaluation.probes import knn_probe
from bioscan5m.training.data import load_barcode_sets
from bioscan5m.embedding import embed_sequences, load_encoder
from bioscan5m.evaluation.encoder_probes import probe


def accuracy(predicted, truth) -> float:
    return 100.0 * float(np.mean(np.asarray(predicted) == np.asarray(truth)))


def kmer_1nn(keys, key_labels, queries, query_labels, k: int = 6) -> dict:
    key_x = l2_normalize_rows(kmer_counts(list(keys), k))
    started = time.perf_counter()
    query_x = l2_normalize_rows(kmer_counts(list(queries), k))
    best = np.asarray((query_x @ key_x.T).argmax(axis=1)).ravel()
    seconds = time.perf_counter() - started
    return {"accuracy": accuracy(np.asarray(key_labels)[best], query_labels), "queries_per_second": len(queries) / seconds}


def aligned_identity_1nn(keys, key_labels, queries, query_labels) -> dict:
    started = time.perf_counter()
    nearest = aligned_identity_nearest(list(queries), list(keys))
    seconds = time.perf_counter() - started
    return {"accuracy": accuracy(np.asarray(key_labels)[nearest], query_labels),
            "queries_per_second": len(queries) / seconds}


def encoder_1nn(encoder, key_x, key_labels, queries, query_labels) -> dict:
    """Cosine 1-NN of an encoder against its already embedded keys; timed: embedding the queries and searching."""
    started = time.perf_counter()
    query_x = embed_sequences(encoder, queries, progress=False)
    knn = knn_probe(key_x, key_labels, query_x, query_labels)
    seconds = time.perf_counter() - started
    return {"accuracy": 100 * knn["micro_top1"], "queries_per_second": len(queries) / seconds}


def blast_top_hit(keys, key_labels, queries, query_labels, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-blast-") as tmp:
        tmp = Path(tmp)
        (tmp / "keys.fa").write_text("".join(f">{i}\n{s}\n" for i, s in enumerate(keys)))
        (tmp / "queries.fa").write_text("".join(f">{i}\n{s}\n" for i, s in enumerate(queries)))
        subprocess.run(["makeblastdb", "-in", str(tmp / "keys.fa"), "-dbtype", "nucl", "-out", str(tmp / "db")],
                       check=True, capture_output=True)
        started = time.perf_counter()
        subprocess.run(["blastn", "-query", str(tmp / "queries.fa"), "-db", str(tmp / "db"), "-outfmt",
                        "6 qseqid sseqid bitscore", "-max_target_seqs", "10", "-num_threads", str(threads),
                        "-out", str(tmp / "hits.tsv")], check=True, capture_output=True)
        seconds = time.perf_counter() - started
        best: dict[int, tuple[float, int]] = {}
        for line in (tmp / "hits.tsv").read_text().splitlines():
            query, key, score = line.split("\t")
            query, key, score = int(query), int(key), float(score)
            if query not in best or score > best[query][0]:
                best[query] = (score, key)
    # A query without any hit counts as wrong.
    predicted = [key_labels[best[i][1]] if i in best else -2 for i in range(len(queries))]
    return {"accuracy": accuracy(predicted, query_labels), "queries_per_second": len(queries) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/bold-insects")
    parser.add_argument("--pretrained", default=None, help="a self-supervised encoder: linear probe / 1-NN row")
    parser.add_argument("--finetuned", default=None)
    parser.add_argument("--encoders", nargs="*", default=[], help="further encoder folders: 1-NN rows")
    parser.add_argument("--probe-results", default=None,
                        help="JSON written by `bioscan5m probe --out` for --pretrained (else the probe runs here)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-blast", action="store_true")
    parser.add_argument("--blast-species", action="store_true", help="also BLAST the (much larger) test split")
    args = parser.parse_args()
    threads = os.cpu_count() or 1

    sets = load_barcode_sets(args.data, roles=("train", "test", "test_unseen"))
    train, test, unseen = sets.labelled("train", "species"), sets.labelled("test", "species"), \
        sets.labelled("test_unseen", "genus")
    rows = {}
    if args.pretrained:
        results = json.loads(Path(args.probe_results).read_text()) if args.probe_results else \
            probe(args.pretrained, args.data)
        rows["BarcodeBERT pretrained (linear probe / 1-NN)"] = {
            "species_test": results["linear_probe_species_test"],
            "genus_test_unseen": results["knn_genus_test_unseen"], "queries_per_second": results["queries_per_second"]}
    if args.finetuned:
        finetuned = json.loads((Path(args.finetuned) / "results.json").read_text())
        encoder = load_encoder(args.finetuned)
        genus = encoder_1nn(encoder, embed_sequences(encoder, train.dna_barcode), train.genus_index.to_numpy(),
                            unseen.dna_barcode, unseen.genus_index.to_numpy())
        rows["BarcodeBERT fine-tuned on species (classifier / 1-NN)"] = {
            "species_test": finetuned["species_test_accuracy"], "genus_test_unseen": genus["accuracy"],
            "queries_per_second": genus["queries_per_second"]}

    for folder in args.encoders:
        encoder = load_encoder(folder, "cpu")
        key_x = embed_sequences(encoder, train.dna_barcode, progress=False)
        species = encoder_1nn(encoder, key_x, train.species_index.to_numpy(), test.dna_barcode,
                              test.species_index.to_numpy())
        genus = encoder_1nn(encoder, key_x, train.genus_index.to_numpy(), unseen.dna_barcode,
                            unseen.genus_index.to_numpy())
        rows[f"{folder} ({encoder.config.pooling} pooling, {encoder.config.num_hidden_layers} layers), 1-NN"] = {
            "species_test": species["accuracy"], "genus_test_unseen": genus["accuracy"],
            "queries_per_second": genus["queries_per_second"]}

    for name, nearest_key in (("6-mer counts, cosine 1-NN", kmer_1nn),
                              ("Aligned ungapped identity, 1-NN", aligned_identity_1nn)):
        species = nearest_key(train.dna_barcode, train.species_index.to_numpy(), test.dna_barcode,
                              test.species_index.to_numpy())
        genus = nearest_key(train.dna_barcode, train.genus_index.to_numpy(), unseen.dna_barcode,
                            unseen.genus_index.to_numpy())
        rows[name] = {"species_test": species["accuracy"], "genus_test_unseen": genus["accuracy"],
                      "queries_per_second": genus["queries_per_second"]}
    if not args.no_blast:
        genus_blast = blast_top_hit(train.dna_barcode.tolist(), train.genus_index.tolist(),
                                    unseen.dna_barcode.tolist(), unseen.genus_index.to_numpy(), threads)
        species_blast = blast_top_hit(train.dna_barcode.tolist(), train.species_index.tolist(),
                                      test.dna_barcode.tolist(), test.species_index.to_numpy(), threads) \
            if args.blast_species else {"accuracy": float("nan")}
        rows["BLAST top hit"] = {"species_test": species_blast["accuracy"],
                                 "genus_test_unseen": genus_blast["accuracy"],
                                 "queries_per_second": genus_blast["queries_per_second"]}

    print(f"unique barcodes: train keys {len(train):,}, test queries {len(test):,}, "
          f"test_unseen queries {len(unseen):,}; {threads} CPUs, torch threads {torch.get_num_threads()}")
    print("| method | species@test (%) | genus@test_unseen 1-NN (%) | queries/s |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['species_test']:.2f} | {row['genus_test_unseen']:.2f} | "
              f"{row['queries_per_second']:,.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "counts": {
            "train": len(train), "test": len(test), "test_unseen": len(unseen)}}, indent=2))


if __name__ == "__main__":
    main()
