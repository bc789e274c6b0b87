"""The benchmark report: DNA classification, zero-shot clustering and retrieval for each model next to the k-mer
and BLAST baselines, measured in the same run on the same records, written as Markdown, JSON and PNG plots.

Protocols (those of the BarcodeBERT, CLIBD and BIOSCAN-5M papers):

* **classification** (BarcodeBERT): unique barcodes -- trailing ``N`` stripped, duplicates dropped across the
  whole release keeping the first in file order (``dedup="barcodebert"``) -- keys ``train``; species accuracy on
  ``test`` (1-NN cosine and a linear probe), genus accuracy on ``test_unseen`` (1-NN). BLAST: top ``blastn`` hit.
  ``dedup="per-split"`` instead keeps unique barcodes within each split after truncating to 660 and stripping
  ``N`` at both ends, the counting behind the reference figures in ``shared/data/README.md``.
* **zero-shot clustering**: ``test+test_unseen`` records (not deduplicated), barcodes cut to 660 then trailing
  ``N`` stripped; UMAP 50 -> Ward with the true number of species -> AMI per rank.
* **retrieval** (CLIBD): keys ``train+key_unseen`` records, queries ``test`` (seen) and ``test_unseen`` (unseen);
  top-1/3/5 micro and macro per rank, harmonic mean of seen and unseen.

This is the one module of ``evaluation`` that loads models: an embedding source is a saved model folder (its
``AutoModel`` must have ``.embed(sequences, batch_size=...)``), the k-mer baseline (``kmer`` / ``kmer:K``) or
a ``.npy`` file of precomputed embeddings.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.caching import cache_folder
from ..data.release import TARGET_COLUMNS
from ..staging import check_output, staged_file, staged_folder
from . import baselines, clustering, probes, retrieval
from .scoring import topk_accuracy

CLUSTER_RANKS = tuple(r for r in TARGET_COLUMNS if r != "phylum")
RANK_TITLES = {"class": "class", "order": "order", "family": "family", "subfamily": "subfamily", "genus": "genus",
               "species": "species", "dna_bin": "BIN"}


# ---------------------------------------------------------------------------------------------- data
def clean_barcodes(barcodes, max_nucleotides: int | None = 660) -> list[str]:
    """Barcodes cut to ``max_nucleotides`` then stripped of trailing ``N`` (the ZSC and retrieval preprocessing)."""
    return [str(b)[:max_nucleotides].rstrip("N") for b in barcodes]


def unique_barcode_records(frame, dedup: str = "barcodebert"):
    """Records with a barcode not seen before, as in BarcodeBERT's data split (see the module docstring)."""
    if dedup == "barcodebert":
        key = frame["dna_barcode"].str.rstrip("N")
        return frame[~key.duplicated()]
    if dedup == "per-split":
        key = frame["dna_barcode"].str[:660].str.strip("N")
        return frame[~(frame["split"] + ":" + key).duplicated()]
    raise ValueError(f"Unknown dedup protocol {dedup!r}; choose 'barcodebert' or 'per-split'.")


@dataclass
class RecordSet:
    """Records of one role (e.g. retrieval keys): cleaned sequences and integer labels per rank."""

    name: str
    sequences: list[str]
    labels: dict[str, np.ndarray]
    order_names: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)


def _record_set(name: str, frame) -> RecordSet:
    return RecordSet(name, clean_barcodes(frame["dna_barcode"]),
                     {r: frame[f"{r}_index"].to_numpy() for r in TARGET_COLUMNS},
                     frame["order"].astype(object).fillna("").to_numpy())


def load_benchmark_records(root, dedup: str = "barcodebert", max_records_per_split: int | None = None,
                           tasks: Sequence[str] = ("classification", "clustering", "retrieval")) -> dict:
    """The record sets each task needs, read from a release root.

    ``max_records_per_split`` keeps only the first records of every split (for quick runs and tests).
    """
    from ..data.metadata import read_metadata

    frame = read_metadata(root, split="all", max_nucleotides=None)
    if max_records_per_split is not None:
        frame = frame.groupby("split", sort=False).head(max_records_per_split)
    by_split = lambda f, *names: f[f["split"].isin(names)]  # noqa: E731
    sets = {}
    if "classification" in tasks:
        unique = unique_barcode_records(frame, dedup)
        sets["classification"] = {s: _record_set(f"{s} (unique barcodes)", by_split(unique, s))
                                  for s in ("train", "test", "test_unseen")}
    if "clustering" in tasks:
        sets["clustering"] = _record_set("test+test_unseen", by_split(frame, "test", "test_unseen"))
    if "retrieval" in tasks:
        sets["retrieval"] = {"keys": _record_set("train+key_unseen", by_split(frame, "train", "key_unseen")),
                             "seen": _record_set("test", by_split(frame, "test")),
                             "unseen": _record_set("test_unseen", by_split(frame, "test_unseen"))}
    for role, value in sets.items():
        for record_set in (value.values() if isinstance(value, dict) else [value]):
            if len(record_set) == 0:
                raise ValueError(f"{root}: no records for {role} ({record_set.name}); the release lacks those splits.")
    return sets


# ---------------------------------------------------------------------------------------------- embeddings
@dataclass
class EmbeddingSource:
    """A named way to turn DNA sequences into vectors.

    ``compact`` (optional) projects a set of embeddings to fewer dimensions before clustering and retrieval,
    where very wide embeddings (4,096-d k-mer counts) would make UMAP and exact search needlessly slow.
    """

    name: str
    description: str
    embed: Callable[[list[str]], np.ndarray]
    compact: Callable[[np.ndarray], np.ndarray] | None = None
    kind: str = "model"
    cache_key: str = ""


def kmer_source(k: int = 6, svd_dims: int = 256) -> EmbeddingSource:
    """The k-mer baseline: L2-normalised k-mer counts (cosine 1-NN classification on the counts themselves);
    clustering and retrieval use a truncated SVD of them to ``svd_dims``, fitted on the records of that task."""

    def reduce(counts: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=min(svd_dims, counts.shape[1] - 1), random_state=0)
        return svd.fit_transform(counts).astype(np.float32)

    return EmbeddingSource(
        f"{k}-mer counts", f"L2-normalised overlapping {k}-mer counts ({4 ** k} dims; clustering and retrieval: "
        f"truncated SVD to {svd_dims} dims, fitted without labels on that task's records)",
        lambda sequences: baselines.kmer_embeddings(sequences, k=k, svd_dims=None), reduce, kind="baseline",
        cache_key=f"kmer{k}")


def model_source(model_dir, batch_size: int = 128, reading_frames: int = 1) -> EmbeddingSource:
    """A saved model folder: ``AutoModel.from_pretrained(model_dir).embed(sequences)`` (pooled as its config says),
    averaged over ``reading_frames`` start offsets when more than one."""
    model_dir = Path(model_dir).expanduser()
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder: {config_path} is missing.")
    config = json.loads(config_path.read_text())
    state = []

    def embed(sequences: list[str]) -> np.ndarray:
        if not state:
            import transformers

            from .. import modeling  # noqa: F401  (registers our model classes with the Auto classes)

            model = transformers.AutoModel.from_pretrained(str(model_dir))
            # Heads (masked LM, classification) hold their encoder as .bert; embed() lives on the encoder.
            state.append(model.bert if not hasattr(model, "embed") and hasattr(model, "bert") else model)
        model = state[0]
        if not hasattr(model, "embed"):
            raise ValueError(f"{model_dir}: {type(model).__name__} has no .embed(sequences); cannot embed DNA with it.")
        vectors = model.embed(list(sequences), batch_size=batch_size, progress=True, reading_frames=reading_frames)
        return np.asarray(vectors.detach().cpu() if hasattr(vectors, "detach") else vectors, dtype=np.float32)

    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    stamp = "|".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in [config_path, *weights])
    described = ", ".join(f"{key} {config[key]}" for key in ("k_mer", "num_hidden_layers", "num_attention_heads",
                                                             "hidden_size", "pooling") if key in config)
    name = model_dir.name
    if reading_frames > 1:
        described += f"; mean over {reading_frames} reading frames"
        name += f" ({reading_frames} frames)"
    return EmbeddingSource(name, f"{config.get('model_type', 'model')} from {model_dir} ({described})",
                           embed, cache_key=f"{model_dir.resolve()}|{stamp}|frames={reading_frames}")


def npy_source(path) -> EmbeddingSource:
    """Precomputed embeddings, one row per record of the evaluated split in file order (``cluster`` only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file {path} does not exist.")

    def embed(sequences: list[str]) -> np.ndarray:
        array = np.load(path)
        if len(array) != len(sequences):
            raise ValueError(f"{path} has {len(array)} rows but the split has {len(sequences)} records.")
        return array

    return EmbeddingSource(path.stem, f"precomputed embeddings {path}", embed, kind="file")


def parse_source(spec: str, batch_size: int = 128, reading_frames: int = 1) -> EmbeddingSource:
    """``kmer`` / ``kmer:K`` (baseline), ``dna:MODEL_DIR`` or ``MODEL_DIR`` (saved model), ``FILE.npy``."""
    if spec == "kmer" or spec.startswith("kmer:"):
        k = spec.partition(":")[2]
        if k and not k.isdigit():
            raise ValueError(f"kmer source {spec!r}: k must be an integer, e.g. 'kmer:6'.")
        return kmer_source(int(k or 6))
    if spec.endswith(".npy"):
        return npy_source(spec)
    modality, _, path = spec.partition(":")
    if path and modality != "dna":
        raise ValueError(f"embedding source {spec!r}: only the 'dna' modality exists in this release; use 'dna:DIR'.")
    return model_source(path or spec, batch_size=batch_size, reading_frames=reading_frames)


def embedding_cache_dir() -> Path:
    """Where embeddings of the benchmark's records are kept between runs: beside the ``datasets`` cache."""
    return cache_folder("embeddings")


def embed_unique(source: EmbeddingSource, sequences: Sequence[str], cache_dir: Path | None = None) -> dict:
    """Embed each distinct sequence once; returns ``{sequence: row}`` views into one array (cached on disk)."""
    unique = sorted(set(sequences))
    cache = None
    if cache_dir is not None and source.cache_key:
        digest = hashlib.sha1((source.cache_key + "\n" + "\n".join(unique)).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{digest}.npy"
        if cache.is_file():
            array = np.load(cache)
            return dict(zip(unique, array))
    array = np.asarray(source.embed(unique), dtype=np.float32)
    if len(array) != len(unique):
        raise ValueError(f"{source.name} returned {len(array)} embeddings for {len(unique)} sequences.")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(cache, overwrite=True) as staging, open(staging, "wb") as handle:
            np.save(handle, array)  # a killed run leaves no half-written cache file
    return dict(zip(unique, array))


def _rows(table: dict, sequences: Sequence[str]) -> np.ndarray:
    return np.stack([table[s] for s in sequences])


# ---------------------------------------------------------------------------------------------- tasks
def run_clustering(source: EmbeddingSource, records: RecordSet, embeddings: np.ndarray | None = None,
                   n_clusters: int | str = "species", distance_threshold: float | None = None, seed: int = 0,
                   plot_path: Path | None = None) -> dict:
    """Zero-shot clustering of one source's embeddings; AMI (and ARI, NMI) per rank, optional 2-D UMAP plot."""
    if embeddings is None:
        embeddings = source.embed(records.sequences)
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


def retrieval_arrays(table: dict, sets: dict[str, RecordSet], compact: Callable | None = None) -> dict[str, np.ndarray]:
    """Embeddings of the keys and of each query set, projected together by ``compact`` when given."""
    arrays = {name: _rows(table, s.sequences) for name, s in sets.items()}
    if compact is None:
        return arrays
    names = list(arrays)
    projected = compact(np.concatenate([arrays[n] for n in names]))
    bounds = np.cumsum([0] + [len(arrays[n]) for n in names])
    return {n: projected[bounds[i]:bounds[i + 1]] for i, n in enumerate(names)}


def run_retrieval(arrays: dict[str, np.ndarray], sets: dict[str, RecordSet], top_k: Sequence[int] = (1, 3, 5),
                  **search_kwargs) -> dict:
    """DNA->DNA retrieval (CLIBD protocol): every query set of ``sets`` against its ``keys``."""
    queries = {name: (arrays[name], s.labels) for name, s in sets.items() if name != "keys"}
    return retrieval.evaluate_retrieval(queries, (arrays["keys"], sets["keys"].labels), top_k=top_k,
                                        ranks=retrieval.RETRIEVAL_RANKS, **search_kwargs)


def run_classification(table: dict, sets: dict[str, RecordSet], linear_probe: bool = True) -> dict:
    """1-NN (cosine, keys train) species@test and genus@test_unseen, and a linear probe species@test."""
    train = _rows(table, sets["train"].sequences)
    out = {}
    for task, split, rank in (("species@test 1-NN", "test", "species"), ("genus@test_unseen 1-NN", "test_unseen", "genus")):
        out[task] = probes.knn_probe(train, sets["train"].labels[rank], _rows(table, sets[split].sequences),
                                     sets[split].labels[rank], k=1)
    if linear_probe:
        out["species@test linear"] = probes.linear_probe(train, sets["train"].labels["species"],
                                                         _rows(table, sets["test"].sequences), sets["test"].labels["species"])
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
    labels = {r: np.concatenate([sets[n].labels[r] for n in names]) for r in retrieval.RETRIEVAL_RANKS}
    return retrieval.retrieval_accuracy(indices, labels, sets["keys"].labels, top_k, groups)


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


# ---------------------------------------------------------------------------------------------- single tasks
def read_records(root, split: str) -> RecordSet:
    """All records of a split expression (e.g. ``test+test_unseen``), barcodes cleaned as for clustering."""
    from ..data.metadata import read_metadata

    frame = read_metadata(root, split=split, max_nucleotides=None)
    if frame.empty:
        raise ValueError(f"{root}: split {split!r} holds no records.")
    return _record_set(split, frame)


def cluster_report(source: str, root, split: str = "test+test_unseen", out_dir="runs/cluster",
                   n_clusters: int | None = None, distance_threshold: float | None = None, seed: int = 0,
                   batch_size: int = 128, reading_frames: int = 1, overwrite: bool = False) -> dict:
    """``bioscan5m cluster``: zero-shot clustering of one embedding source; writes ``clustering.json`` and a UMAP PNG
    into ``out_dir`` (refused if it exists, unless ``overwrite``)."""
    out_dir = check_output(out_dir, overwrite, inputs=(root, source))
    embedding_source = parse_source(source, batch_size=batch_size, reading_frames=reading_frames)
    records = read_records(root, split)
    plot_name = f"umap_{_slug(embedding_source.name)}.png"
    with staged_folder(out_dir, overwrite) as staging:
        result = run_clustering(embedding_source, records, n_clusters="species" if n_clusters is None else n_clusters,
                                distance_threshold=distance_threshold, seed=seed, plot_path=staging / plot_name)
        result.update(source=embedding_source.description, data=str(root), split=split, command=command_line(),
                      plot=str(out_dir / plot_name))
        (staging / "clustering.json").write_text(json.dumps(result, indent=2, default=_json_default))
    return result


def retrieval_report(source: str, root, queries: Sequence[str] = ("test", "test_unseen"), keys: str = "train+key_unseen",
                     out_dir="runs/retrieve", top_k: Sequence[int] = (1, 3, 5), index: str = "flat",
                     batch_size: int = 128, reading_frames: int = 1, overwrite: bool = False) -> dict:
    """``bioscan5m retrieve``: DNA->DNA retrieval of each query split against the keys; writes ``retrieval.json``
    into ``out_dir`` (refused if it exists, unless ``overwrite``)."""
    out_dir = check_output(out_dir, overwrite, inputs=(root, source))
    embedding_source = parse_source(source, batch_size=batch_size, reading_frames=reading_frames)
    if embedding_source.kind == "file":
        raise ValueError("retrieve needs a model folder or 'kmer[:K]': a .npy file cannot embed both queries and keys.")
    sets = {"keys": read_records(root, keys), **{q: read_records(root, q) for q in queries}}
    table = embed_unique(embedding_source, sorted({s for r in sets.values() for s in r.sequences}))
    arrays = retrieval_arrays(table, sets, embedding_source.compact)
    result = {"dna->dna": run_retrieval(arrays, sets, top_k=top_k, index=index), "source": embedding_source.description,
              "data": str(root), "keys": keys, "queries": list(queries), "command": command_line()}
    with staged_folder(out_dir, overwrite) as staging:
        (staging / "retrieval.json").write_text(json.dumps(result, indent=2, default=_json_default))
    return result


# ---------------------------------------------------------------------------------------------- report
@dataclass
class Benchmark:
    """Everything measured in one run; `to_markdown` lays it out like the paper's tables."""

    command: str
    data: dict
    sources: dict[str, str] = field(default_factory=dict)
    classification: dict[str, dict] = field(default_factory=dict)
    clustering: dict[str, dict] = field(default_factory=dict)
    retrieval: dict[str, dict] = field(default_factory=dict)
    performance: dict[str, dict] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def run_benchmark(root, models: Sequence[str | Path] = (), out_dir="runs/benchmark", blast: bool = False,
                  kmer: int = 6, dedup: str = "barcodebert", linear_probe: bool = True, seed: int = 0,
                  max_records_per_split: int | None = None, batch_size: int = 128, command: str | None = None,
                  tasks: Sequence[str] = ("classification", "clustering", "retrieval"),
                  reading_frames: int = 1, overwrite: bool = False) -> Benchmark:
    """Measure every model and the baselines on one release and write ``report.md``, ``report.json`` and plots.

    Args:
        root: release root (DNA metadata is enough).
        models: saved model folders (each ``AutoModel`` with ``.embed``); the k-mer baseline always runs.
        out_dir: the folder for the report and plots (refused if it exists, unless ``overwrite``; it appears only
            once the report is complete). Embeddings are cached in the ``datasets`` cache, across runs.
        blast: also run the BLAST baseline (needs ``blastn``; skipped with a message when absent).
        kmer: k of the k-mer baseline.
        dedup: unique-barcode protocol for classification, ``"barcodebert"`` or ``"per-split"``.
        max_records_per_split: keep the first N records of each split (quick runs).
        reading_frames: the models embed each barcode from this many start offsets and average (1: as trained).
    """
    out_dir = check_output(out_dir, overwrite, inputs=(root, *models))
    unknown = set(tasks) - {"classification", "clustering", "retrieval"}
    if unknown:
        raise ValueError(f"Unknown task(s) {', '.join(sorted(unknown))}; choose from classification, clustering, retrieval.")
    with staged_folder(out_dir, overwrite) as staging:
        (staging / "plots").mkdir()
        return _run_benchmark(root, staging, models, blast, kmer, dedup, linear_probe, seed, max_records_per_split,
                              batch_size, command, tasks, reading_frames)


def _run_benchmark(root, out_dir: Path, models, blast, kmer, dedup, linear_probe, seed, max_records_per_split,
                   batch_size, command, tasks, reading_frames) -> Benchmark:
    from tqdm.auto import tqdm

    sources = [model_source(m, batch_size=batch_size, reading_frames=reading_frames) for m in models] + [kmer_source(kmer)]
    sets = load_benchmark_records(root, dedup=dedup, max_records_per_split=max_records_per_split, tasks=tasks)
    report = Benchmark(command=command or "bioscan5m.evaluation.report.run_benchmark(...)",
                       data=_describe_data(root, sets, dedup, max_records_per_split), environment=_environment())
    all_sequences = sorted({s for value in sets.values()
                            for record_set in (value.values() if isinstance(value, dict) else [value])
                            for s in record_set.sequences})
    steps = tqdm(total=len(sources) * len(tasks) + (2 if blast else 0), desc="benchmark", unit="step")
    for source in sources:
        report.sources[source.name] = source.description
        steps.set_postfix_str(f"embedding {source.name}")
        start = time.perf_counter()
        table = embed_unique(source, all_sequences, cache_dir=embedding_cache_dir())
        report.performance.setdefault("embedding_seconds", {})[source.name] = time.perf_counter() - start
        if "classification" in sets:
            steps.set_postfix_str(f"{source.name}: classification")
            # The linear probe is a model column, as in the paper; on 4,096-d k-mer counts it would cost minutes.
            report.classification[source.name] = run_classification(table, sets["classification"],
                                                                    linear_probe and source.kind == "model")
            steps.update()
        if "clustering" in sets:
            steps.set_postfix_str(f"{source.name}: clustering")
            records = sets["clustering"]
            plot = out_dir / "plots" / f"umap_{_slug(source.name)}.png"
            result = run_clustering(source, records, _rows(table, records.sequences), seed=seed, plot_path=plot)
            report.clustering[source.name] = result
            report.plots[f"UMAP {source.name}"] = str(plot.relative_to(out_dir))
            steps.update()
        if "retrieval" in sets:
            steps.set_postfix_str(f"{source.name}: retrieval")
            arrays = retrieval_arrays(table, sets["retrieval"], source.compact)
            report.retrieval[source.name] = {"dna->dna": run_retrieval(arrays, sets["retrieval"])}
            report.performance.setdefault("search", {})[source.name] = search_speed(arrays)
            steps.update()
        del table
    if blast:
        try:
            baselines.require_blast()
        except baselines.BlastNotFoundError as error:
            report.skipped.append(str(error))
            print(error, file=sys.stderr)
            steps.update(2)
        else:
            report.environment["blast"] = baselines.blast_version()
            if "classification" in sets:
                steps.set_postfix_str("BLAST classification")
                report.classification["BLAST"] = blast_classification(sets["classification"])
                report.sources["BLAST"] = f"top blastn hit ({report.environment['blast']}, megablast defaults)"
            steps.update()
            if "retrieval" in sets:
                steps.set_postfix_str("BLAST retrieval")
                report.retrieval["BLAST"] = {"dna->dna": blast_retrieval(sets["retrieval"])}
            steps.update()
    steps.close()
    for name, result in report.clustering.items():
        per_10k = sum(result["seconds"].values()) / result["records"] * 10_000
        report.performance.setdefault("clustering_seconds_per_10k_points", {})[name] = per_10k
    report.plots.update(_plot_bars(report, out_dir / "plots"))
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2, default=_json_default))
    (out_dir / "report.md").write_text(to_markdown(report))
    return report


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _describe_data(root, sets: dict, dedup: str, max_records_per_split: int | None) -> dict:
    described = {"root": str(root), "dedup": dedup, "max_records_per_split": max_records_per_split}
    for role, value in sets.items():
        record_sets = value.values() if isinstance(value, dict) else [value]
        described[role] = {s.name: {"records": len(s), "species": int(len(set(s.labels["species"][s.labels["species"] >= 0])))}
                           for s in record_sets}
    return described


def _environment() -> dict:
    import os

    import sklearn

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def to_markdown(report: Benchmark) -> str:
    """The report as Markdown: paper-style tables, then the data, sources, performance and plots."""
    lines = ["# BIOSCAN-5M benchmark", "", f"Command: `{report.command}`", "",
             f"Data: `{report.data['root']}`; classification dedup protocol `{report.data['dedup']}`"
             + (f"; first {report.data['max_records_per_split']} records per split" if report.data["max_records_per_split"] else ""), ""]
    if report.classification:
        lines += ["## DNA classification (unique barcodes, keys = train)", "",
                  "Accuracy %, micro / macro. 1-NN: cosine nearest train barcode; BLAST: top `blastn` hit.", "",
                  "| method | species @ test: 1-NN / top hit | species @ test: linear probe | genus @ test_unseen: 1-NN / top hit |",
                  "|---|---|---|---|"]
        for name, result in report.classification.items():
            cells = []
            for tasks in (("species@test 1-NN", "species@test top hit"), ("species@test linear",),
                          ("genus@test_unseen 1-NN", "genus@test_unseen top hit")):
                found = next((result[t] for t in tasks if t in result), None)
                cells.append("—" if found is None else f"{_pct(found['micro_top1'])} / {_pct(found['macro_top1'])}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if report.clustering:
        ranks = [r for r in CLUSTER_RANKS if any(r in c["ami"] for c in report.clustering.values())]
        first = next(iter(report.clustering.values()))
        lines += [f"## Zero-shot clustering (AMI %, {first['records']:,} records of test+test_unseen, "
                  f"UMAP 50 -> Ward, {first['n_clusters']} clusters)", "",
                  "| method | " + " | ".join(RANK_TITLES[r] for r in ranks) + " |", "|---|" + "---|" * len(ranks)]
        for name, result in report.clustering.items():
            cells = [_pct(result["ami"].get(r)) if result["scores"].get(r, {}).get("num_classes", 2) > 1 else "n/a (1 class)"
                     for r in ranks]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "AMI at each rank scores the same species-count clustering; records without a label at a rank "
                  "are left out of that rank.", ""]
    if report.retrieval:
        ranks = retrieval.RETRIEVAL_RANKS
        lines += ["## DNA -> DNA retrieval (keys = train + key_unseen; top-1 accuracy %)", "",
                  "| method | average | " + " | ".join(f"{r} seen | {r} unseen | {r} H.M." for r in ranks) + " |",
                  "|---|---|" + "---|" * (3 * len(ranks))]
        for name, result in report.retrieval.items():
            scores = result["dna->dna"]
            for average in ("micro", "macro"):
                cells = []
                for r in ranks:
                    s = scores[r]
                    cells += [_pct(s["seen"][f"{average}_top1"]), _pct(s["unseen"][f"{average}_top1"]),
                              _pct(s[f"harmonic_mean_{average}_top1"])]
                lines.append(f"| {name} | {average} | " + " | ".join(cells) + " |")
        lines += ["", "Species top-k (macro %, seen / unseen):", "", "| method | top-1 | top-3 | top-5 |", "|---|---|---|---|"]
        for name, result in report.retrieval.items():
            s = result["dna->dna"]["species"]
            cells = [f"{_pct(s['seen'][f'macro_top{k}'])} / {_pct(s['unseen'][f'macro_top{k}'])}" for k in (1, 3, 5)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Data", "", "| task | set | records | species |", "|---|---|---|---|"]
    for role in ("classification", "clustering", "retrieval"):
        for set_name, counts in report.data.get(role, {}).items():
            lines.append(f"| {role} | {set_name} | {counts['records']:,} | {counts['species']:,} |")
    lines += ["", "## Methods", ""] + [f"- **{n}**: {d}" for n, d in report.sources.items()] + [""]
    lines += ["## Performance", ""]
    for name, seconds in report.performance.get("embedding_seconds", {}).items():
        lines.append(f"- embedding ({name}): {seconds:.1f} s for all distinct sequences")
    for name, speed in report.performance.get("search", {}).items():
        lines.append(f"- search ({name}, {speed['queries']:,} queries x {speed['keys']:,} keys x {speed['dims']} dims, top-5): "
                     f"FAISS flat {speed['faiss_queries_per_second']:,.0f} queries/s, NumPy brute force "
                     f"{speed['numpy_queries_per_second']:,.0f} queries/s ({speed['speedup']:.1f}x), "
                     f"same top-1 similarity for {100 * speed['top1_agreement']:.2f} % of queries")
    for name, seconds in report.performance.get("clustering_seconds_per_10k_points", {}).items():
        lines.append(f"- zero-shot clustering ({name}): {seconds:.1f} s per 10k points (UMAP + Ward)")
    for name, result in report.classification.items():
        if "queries_per_second" in result:
            lines.append(f"- BLAST classification: {result['queries_per_second']:.1f} queries/s")
    if report.skipped:
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in report.skipped]
    if report.plots:
        lines += ["", "## Plots", ""] + [f"![{title}]({path})" for title, path in report.plots.items()]
    lines += ["", "## Environment", "", "```", json.dumps(report.environment, indent=1), "```", ""]
    return "\n".join(lines)


def _plot_bars(report: Benchmark, folder: Path) -> dict[str, str]:
    """Per-rank bar charts: clustering AMI and retrieval macro top-1 (seen, unseen), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    if report.clustering:
        ranks = [r for r in CLUSTER_RANKS if all(r in c["ami"] for c in report.clustering.values())
                 and all(c["scores"][r].get("num_classes", 2) > 1 for c in report.clustering.values())]
        charts.append(("zero-shot clustering AMI", "clustering_ami.png", ranks,
                       {n: [c["ami"][r] for r in ranks] for n, c in report.clustering.items()}))
    for split in ("seen", "unseen"):
        if report.retrieval:
            ranks = list(retrieval.RETRIEVAL_RANKS)
            charts.append((f"DNA->DNA retrieval, macro top-1, {split}", f"retrieval_{split}.png", ranks,
                           {n: [r["dna->dna"][rank][split]["macro_top1"] for rank in ranks] for n, r in report.retrieval.items()}))
    written = {}
    for title, filename, ranks, values in charts:
        fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
        width = 0.8 / max(1, len(values))
        for i, (name, heights) in enumerate(values.items()):
            ax.bar(np.arange(len(ranks)) + i * width, 100 * np.asarray(heights), width, label=name)
        ax.set_xticks(np.arange(len(ranks)) + width * (len(values) - 1) / 2, [RANK_TITLES[r] for r in ranks])
        ax.set(ylabel="%", ylim=(0, 100), title=title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / filename)
        plt.close(fig)
        written[title] = f"plots/{filename}"
    return written


def command_line() -> str:
    """The command that started this process, for the report."""
    return " ".join(shlex.quote(a) for a in ["bioscan5m", *sys.argv[1:]])
