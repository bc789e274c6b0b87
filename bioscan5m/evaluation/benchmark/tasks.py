"""The benchmark's tasks on one embedding source — clustering, retrieval, classification, search speed — and
BLAST on the same records; species delimitation, which needs no embedding."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...data.release import ORDER_TO_SPECIES
from .. import baselines, clustering, probes, retrieval
from ..scoring import topk_accuracy
from .records import CLUSTER_RANKS, RecordSet
from .sources import EmbeddingSource, EmbeddingTable, embed_records


def run_clustering(source: EmbeddingSource, records: RecordSet, embeddings: np.ndarray | None = None,
                   n_clusters: int | str = "species", distance_threshold: float | None = None, seed: int = 0,
                   plot_path: Path | None = None) -> dict:
    """Zero-shot clustering of one source's embeddings; AMI (and ARI, NMI) per rank, optional 2-D UMAP plot."""
    if embeddings is None:  # a .npy file holds one row per record in file order, so it is read as it is
        embeddings = (source.embed(records.sequences) if source.kind == "file"
                      else embed_records(source, [records]).rows(records))
    points = source.compact(embeddings) if source.compact else embeddings
    result = clustering.zero_shot_clustering(points, {r: records.labels[r] for r in CLUSTER_RANKS},
                                             n_clusters=n_clusters, distance_threshold=distance_threshold, seed=seed)
    out = {"ami": result.ami, "scores": result.scores, "n_clusters": result.n_clusters, "ward": result.ward,
           "records": len(records), "seconds": result.seconds}
    if plot_path is not None:
        clustering.plot_umap_2d(points, records.order_names, plot_path, seed=seed,
                                title=f"{source.name}: 2-D UMAP of {records.name} ({len(records):,} records)")
        out["plot"] = str(plot_path)
    return out


def retrieval_arrays(table: EmbeddingTable, sets: dict[str, RecordSet], compact: Callable | None = None
                     ) -> dict[str, np.ndarray]:
    """Embeddings of the keys and of each query set, projected together by ``compact`` when given."""
    arrays = {name: table.rows(s) for name, s in sets.items()}
    if compact is None:
        return arrays
    names = list(arrays)
    projected = compact(np.concatenate([arrays[n] for n in names]))
    bounds = np.cumsum([0] + [len(arrays[n]) for n in names])
    return {n: projected[bounds[i]:bounds[i + 1]] for i, n in enumerate(names)}


def run_retrieval(arrays: dict[str, np.ndarray], sets: dict[str, RecordSet], top_k: Sequence[int] = (1, 3, 5),
                  **search_kwargs) -> dict:
    """Retrieval within one modality (CLIBD protocol): every query set of ``sets`` against its ``keys``."""
    queries = {name: (arrays[name], s.labels) for name, s in sets.items() if name != "keys"}
    return retrieval.evaluate_retrieval(queries, (arrays["keys"], sets["keys"].labels), top_k=top_k,
                                        ranks=ORDER_TO_SPECIES, **search_kwargs)


def run_classification(table: EmbeddingTable, sets: dict[str, RecordSet], linear_probe: bool = True) -> dict:
    """1-NN (cosine, keys train) species@test and genus@test_unseen, and a linear probe species@test."""
    train = table.rows(sets["train"])
    out = {}
    for task, split, rank in (("species@test 1-NN", "test", "species"), ("genus@test_unseen 1-NN", "test_unseen", "genus")):
        out[task] = probes.knn_probe(train, sets["train"].labels[rank], table.rows(sets[split]),
                                     sets[split].labels[rank], k=1)
    if linear_probe:
        out["species@test linear"] = probes.linear_probe(train, sets["train"].labels["species"],
                                                         table.rows(sets["test"]), sets["test"].labels["species"])
    return out


def blast_classification(sets: dict[str, RecordSet]) -> dict:
    """BLAST top hit against a database of the train barcodes: species@test and genus@test_unseen."""
    train = sets["train"]
    queries = sets["test"].sequences + sets["test_unseen"].sequences
    start = time.perf_counter()
    top = baselines.blast_search(queries, train.sequences, k=1)[:, 0]
    seconds = time.perf_counter() - start
    n_test = len(sets["test"])
    out = {}
    for task, split, rank, rows in (("species@test top hit", "test", "species", slice(0, n_test)),
                                    ("genus@test_unseen top hit", "test_unseen", "genus", slice(n_test, None))):
        predicted = np.where(top[rows] >= 0, train.labels[rank][np.clip(top[rows], 0, None)], -2)
        out[task] = topk_accuracy(predicted, sets[split].labels[rank])
    out["queries_per_second"] = len(queries) / seconds
    return out


def blast_retrieval(sets: dict[str, RecordSet], top_k: Sequence[int] = (1, 3, 5)) -> dict:
    """BLAST as a retrieval method: keys ranked by bit score (identical query barcodes searched once)."""
    names = [n for n in sets if n != "keys"]
    queries = [s for n in names for s in sets[n].sequences]
    groups = np.concatenate([[n] * len(sets[n]) for n in names])
    indices = baselines.blast_search(queries, sets["keys"].sequences, k=max(top_k))
    labels = {r: np.concatenate([sets[n].labels[r] for n in names]) for r in ORDER_TO_SPECIES}
    return retrieval.retrieval_accuracy(indices, labels, sets["keys"].labels, top_k, groups)


def run_open_world(embed, sets: dict) -> dict:
    """Cosine 1-NN micro/macro top-1 on every open-world task; ``embed(record_set)`` gives its embeddings."""
    return {name: probes.knn_probe(embed(task["keys"]), task["keys"].labels[task["rank"]], embed(task["queries"]),
                                   task["queries"].labels[task["rank"]], k=1)
            for name, task in sets.items()}


def identification_open_world(sets: dict, model: str = "aligned", index_type: str | None = None,
                               vote_k: int = 25, temperature: float | None = None) -> dict:
    """The identification recipe on every open-world task: each task's keys as a key index of ``model`` (its
    default FAISS index unless ``index_type``) and every query answered by `bioscan5m.identify`'s vote over its
    ``vote_k`` nearest keys (``vote_k=1``: the nearest key's label), at the encoder's temperature unless
    ``temperature``."""
    import pandas as pd

    from ...embedding import make_encoder
    from ...identification.key_index import KEY_COLUMNS, KeyIndex
    from ...identification.prediction import predict

    out = {}
    for name, task in sets.items():
        keys, queries, rank = task["keys"], task["queries"], task["rank"]
        encoder = make_encoder(model, fit_sequences=keys.sequences)
        table = pd.DataFrame({column: [None] * len(keys) for column in (*KEY_COLUMNS, "thumbnail")})
        table[rank] = [str(label) if label >= 0 else None for label in keys.labels[rank]]
        vectors = encoder.key_vectors(keys.sequences)
        calibration = None if temperature is None else {"dna": {"temperature": temperature}}
        index = KeyIndex(Path("."), {"calibration": calibration}, table, encoder,
                         retrieval.faiss_index(vectors, index=index_type or encoder.index_type,
                                               integer_vectors=getattr(encoder, "integer_vectors", False)))
        answers = predict(index, {"dna": encoder.query_vectors(queries.sequences)}, 1, vote_k)
        position = ORDER_TO_SPECIES.index(rank)
        predicted = np.array([int(ranks[position].label) if ranks[position].label else -2 for ranks, *_ in answers])
        out[name] = topk_accuracy(predicted, queries.labels[rank])
    return out


def identity_open_world(sets: dict) -> dict:
    """The aligned-identity baseline (most identical bases in the reference frame, no model) on the open-world tasks."""
    return _top_hit_open_world(sets, baselines.aligned_identity_nearest)


def blast_open_world(sets: dict) -> dict:
    """BLAST's top hit on every open-world task (a database of that task's keys)."""
    return _top_hit_open_world(sets, lambda queries, keys: baselines.blast_search(queries, keys, k=1, progress=False)[:, 0])


def _top_hit_open_world(sets: dict, nearest) -> dict:
    out = {}
    for name, task in sets.items():
        keys, queries, rank = task["keys"], task["queries"], task["rank"]
        top = nearest(queries.sequences, keys.sequences)
        predicted = np.where(top >= 0, keys.labels[rank][np.clip(top, 0, None)], -2)
        out[name] = topk_accuracy(predicted, queries.labels[rank])
    return out


def search_speed(arrays: dict[str, np.ndarray], k: int = 5, max_queries: int = 2_000) -> dict:
    """Queries per second of FAISS (flat, exact) and brute-force NumPy on the same retrieval embeddings.

    Rates are measured on the first ``max_queries`` queries against all keys (enough for a stable rate).
    """
    keys = arrays["keys"]
    queries = np.concatenate([a for n, a in arrays.items() if n != "keys"])[:max_queries]
    out = {"queries": len(queries), "keys": len(keys), "dims": int(keys.shape[1])}
    best = {}
    for method in ("faiss", "numpy"):
        start = time.perf_counter()
        scores, _ = retrieval.search(queries, keys, k=k, method=method)
        out[f"{method}_queries_per_second"] = len(queries) / (time.perf_counter() - start)
        best[method] = scores[:, 0]
    out["speedup"] = out["faiss_queries_per_second"] / out["numpy_queries_per_second"]
    # Duplicate keys tie, so the two may return different but equally similar keys: compare similarities.
    out["top1_agreement"] = float(np.isclose(best["faiss"], best["numpy"], atol=1e-5).mean())
    return out




#: The ranks species delimitation is scored at.
DELIMITATION_RANKS = ("species", "genus", "family")


def run_delimitation(sets: dict[str, RecordSet], skipped: list[str]) -> dict[str, dict]:
    """Species delimitation without labels on ``sets["records"]``: BOLD's BINs, UPGMA at the textbook 2 %, single
    linkage with its threshold calibrated on ``sets["calibration"]`` (other, labelled records), and the learned
    linkage fitted on them (noted in ``skipped`` where they are too few to fit it on)."""
    from ...delimitation import LearnedLinkage, calibrate_threshold, delimit_barcodes, delimitation_summary

    records, labelled = sets["records"], sets["calibration"]
    labels = {rank: records.labels[rank] for rank in DELIMITATION_RANKS}

    def scored(clusters, threshold, started):
        summary = delimitation_summary(clusters, labels)
        return {"threshold": threshold, "putative_species": summary["clusters"],
                "named_species": summary["species"]["named"],
                **{f"{rank}_ami": summary[rank]["ami"] for rank in DELIMITATION_RANKS},
                "species_split": len(summary["species_split"]),
                "clusters_merging_species": len(summary["clusters_merging_species"]),
                "seconds": time.perf_counter() - started}

    started = time.perf_counter()
    results = {"BOLD BINs": scored(records.labels["dna_bin"], None, started)}  # records without a BIN: one group
    started = time.perf_counter()
    results["UPGMA, 2 %"] = scored(delimit_barcodes(records.sequences, 0.02, method="upgma"), 0.02, started)
    started = time.perf_counter()
    threshold = calibrate_threshold(labelled.sequences, labelled.labels["species"]).threshold
    results[f"single linkage, calibrated on {labelled.name}"] = scored(
        delimit_barcodes(records.sequences, threshold), threshold, started)
    started = time.perf_counter()
    try:
        model = LearnedLinkage().fit(labelled.sequences, labelled.labels["species"])
    except ValueError as error:
        skipped.append(f"learned linkage: {error}")
    else:
        results[f"learned linkage, fitted on {labelled.name}"] = scored(model.delimit(records.sequences), None,
                                                                        started)
    return results
