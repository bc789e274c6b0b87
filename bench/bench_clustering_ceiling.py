"""How high species AMI can go under the zero-shot clustering protocol on real barcodes, whatever the embedding.

    .venv/bin/python bench/bench_clustering_ceiling.py --data ../shared/data/bold-insects \\
        --encoders runs/gpu-gs10 --out runs/clustering-ceiling.json

Records: test + test_unseen (the protocol's set, not de-duplicated). Rows:

* bounds from the labels alone: the best clustering any function of the barcode can make (records of one barcode
  share a cluster, each barcode's cluster is its majority species) and BOLD's Barcode Index Numbers;
* the protocol (UMAP 50 dims, 30 neighbours, min_dist 0 -> Ward with the true number of species) on 6-mer counts
  (SVD 256), on any ``--encoders`` (mean or per-position embeddings, as ``bioscan5m cluster`` makes them), and on
  oracles that are handed the species: the species one-hot, scaled, beside the 6-mer vector (species separated,
  each species keeping its barcodes' variation) and the one-hot with 1 % isotropic noise (each species a point);
* the scaled oracle again without UMAP (Ward on the input), to show which step loses what.

For each clustering it also prints, by species size, the mean share of a species' records that its largest cluster
holds (where the splitting happens).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bioscan5m.embedding import kmer_embeddings
from bioscan5m.evaluation.clustering import zero_shot_clustering
from bioscan5m.evaluation.benchmark import read_records
from bioscan5m.evaluation.scoring import clustering_agreement
from bioscan5m.embedding import embed_sequences

ORACLE_SCALES = (3.0, 10.0)
SPECIES_SIZE_BINS = ((1, 5), (6, 10), (11, 30), (31, 100), (101, None))


def barcode_majority_species(sequences: list[str], species: np.ndarray) -> np.ndarray:
    """Each record relabelled with the most frequent species among the records sharing its barcode."""
    _, barcode_ids = np.unique(np.asarray(sequences, dtype=object), return_inverse=True)
    pairs, counts = np.unique(np.stack([barcode_ids, species], axis=1), axis=0, return_counts=True)
    majority = {}
    for (barcode, label), count in zip(pairs.tolist(), counts.tolist()):
        if count > majority.get(barcode, (-1, 0))[1]:
            majority[barcode] = (label, count)
    return np.array([majority[b][0] for b in barcode_ids.tolist()])


def main_cluster_share_by_size(species: np.ndarray, cluster_ids: np.ndarray) -> dict[str, float]:
    """Mean share of a species' records held by its largest cluster, over species grouped by record count."""
    labelled = species >= 0
    pairs, counts = np.unique(np.stack([species[labelled], cluster_ids[labelled]], axis=1), axis=0, return_counts=True)
    sizes = np.bincount(species[labelled])
    largest = np.zeros_like(sizes)
    np.maximum.at(largest, pairs[:, 0], counts)
    share = {}
    for low, high in SPECIES_SIZE_BINS:
        members = (sizes >= low) & (sizes <= (high or sizes.max()))
        if members.any():
            share[f"{low}-{high or ''}"] = float((largest[members] / sizes[members]).mean())
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a BIOSCAN-5M release root")
    parser.add_argument("--split", default="test+test_unseen")
    parser.add_argument("--encoders", nargs="*", default=[], help="BarcodeBERT folders to cluster beside the oracles")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args()

    records = read_records(args.data, args.split)
    species = records.labels["species"]
    labelled = species >= 0
    labels = {"genus": records.labels["genus"], "species": species}
    n_species = len(np.unique(species[labelled]))
    print(f"{len(records):,} records, {n_species} species ({args.split})", flush=True)
    rows = []

    def add(method: str, scores: dict, umap: bool | None, share: dict | None = None) -> None:
        row = {"method": method, "umap": umap, **{f"{rank}_ami": 100 * s["ami"] for rank, s in scores.items()},
               "main_cluster_share_by_species_size": share}
        rows.append(row)
        print(f"{method:<58} {'' if umap is None else 'UMAP' if umap else 'no UMAP':<8} "
              + "  ".join(f"{rank} {row[f'{rank}_ami']:.2f}" for rank in scores), flush=True)
        if share:
            print(" " * 4 + "share in main cluster by species size: "
                  + ", ".join(f"{size}: {value:.2f}" for size, value in share.items()), flush=True)

    sequences = [s for s, keep in zip(records.sequences, labelled) if keep]
    add("any function of the barcode (majority species per barcode)",
        {"species": clustering_agreement(species[labelled], barcode_majority_species(sequences, species[labelled]))},
        None)
    add("BOLD BINs", {"species": clustering_agreement(species, records.labels["dna_bin"])}, None)

    def cluster(method: str, embeddings: np.ndarray, umap: bool = True) -> None:
        result = zero_shot_clustering(embeddings, labels, n_components=50 if umap else 0)
        add(method, result.scores, umap, main_cluster_share_by_size(species, result.cluster_ids))

    kmers = kmer_embeddings(records.sequences)
    cluster("6-mer counts (SVD 256)", kmers)
    for encoder in args.encoders:
        cluster(f"BarcodeBERT {encoder}", embed_sequences(encoder, records.sequences, progress=True))

    one_hot = np.zeros((len(records), n_species), np.float32)
    one_hot[labelled, np.unique(species[labelled], return_inverse=True)[1]] = 1
    for scale in ORACLE_SCALES:
        cluster(f"oracle: species one-hot x {scale:g} beside 6-mer counts", np.hstack([scale * one_hot, kmers]))
    cluster(f"oracle: species one-hot x {ORACLE_SCALES[-1]:g} beside 6-mer counts",
            np.hstack([ORACLE_SCALES[-1] * one_hot, kmers]), umap=False)
    noise = np.random.default_rng(0).normal(scale=0.01, size=one_hot.shape).astype(np.float32)
    cluster("oracle: species one-hot + 1 % noise (each species a point)", one_hot + noise)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"data": args.data, "split": args.split, "records": len(records), "species": n_species,
                       "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
