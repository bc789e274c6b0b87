"""Running the benchmark: every model beside the k-mer and BLAST baselines, measured in one run on the same
records and written as JSON, Markdown and plots; and the single-task reports behind `bioscan5m cluster` and
`bioscan5m retrieve`."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ...staging import check_output, staged_folder
from .. import baselines
from .markdown import plot_bars, to_markdown
from .records import load_benchmark_records, read_records, record_sets
from .sources import embed_records, embedding_cache_dir, kmer_source, parse_source, reads_no_frames, spec_paths
from .tasks import (
    blast_classification,
    blast_open_world,
    blast_retrieval,
    identification_open_world,
    identity_open_world,
    retrieval_arrays,
    run_classification,
    run_clustering,
    run_delimitation,
    run_open_world,
    run_retrieval,
    search_speed,
)

#: The identification recipe and its ablation on the open-world tasks: (row, options, what it is).
IDENTIFICATION_ABLATION = (
    ("aligned, mismatch penalty, top hit", {"index_type": "flat", "vote_k": 1},
     "the aligned encoder's nearest key (+1 per identical base, -1 per differing one, over the query's bases), exact"),
    ("aligned, voted, exact", {"index_type": "flat"},
     "the same with identify's vote over the 25 nearest keys (fixed temperature 0.001), exact flat search"),
    ("identify (aligned index)", {},
     "bioscan5m identify with an `aligned` index as built by default: the vote, over candidates from a 256-d SVD "
     "projection scored exactly (IndexRefineFlat)"),
)

#: What a benchmark can measure; ``open_world`` is the open-world protocol at every rank, ``delimitation`` species
#: delimitation without labels (no embedding: BINs, UPGMA 2 %, calibrated single linkage).
TASKS = ("classification", "clustering", "retrieval", "open_world", "delimitation")


def cluster_report(source: str, root, split: str = "test+test_unseen", out_dir="runs/cluster",
                   n_clusters: int | None = None, distance_threshold: float | None = None, seed: int = 0,
                   batch_size: int = 128, reading_frames: int = 1, config: str = "cropped_256", weights=None,
                   overwrite: bool = False) -> dict:
    """``bioscan5m cluster``: zero-shot clustering of one embedding source (any `parse_source` spec; photographs
    from image package ``config``); writes ``clustering.json`` and a UMAP PNG into ``out_dir`` (refused if it
    exists, unless ``overwrite``)."""
    out_dir = check_output(out_dir, overwrite, inputs=(root, weights, *spec_paths(source)))
    embedding_source = parse_source(source, batch_size=batch_size, reading_frames=reading_frames, root=root,
                                    config=config, weights=weights)
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
                     batch_size: int = 128, reading_frames: int = 1, config: str = "cropped_256", weights=None,
                     overwrite: bool = False) -> dict:
    """``bioscan5m retrieve``: retrieval of each query split against the keys within one source (DNA->DNA,
    image->image, or fused records); writes ``retrieval.json`` into ``out_dir`` (refused if it exists, unless
    ``overwrite``)."""
    out_dir = check_output(out_dir, overwrite, inputs=(root, weights, *spec_paths(source)))
    embedding_source = parse_source(source, batch_size=batch_size, reading_frames=reading_frames, root=root,
                                    config=config, weights=weights)
    if embedding_source.kind == "file":
        raise ValueError("retrieve needs a source that embeds records: a .npy file cannot embed both queries and keys.")
    sets = {"keys": read_records(root, keys), **{q: read_records(root, q) for q in queries}}
    table = embed_records(embedding_source, list(sets.values()))
    arrays = retrieval_arrays(table, sets, embedding_source.compact)
    result = {pair_name(embedding_source): run_retrieval(arrays, sets, top_k=top_k, index=index),
              "source": embedding_source.description,
              "data": str(root), "keys": keys, "queries": list(queries), "command": command_line()}
    with staged_folder(out_dir, overwrite) as staging:
        (staging / "retrieval.json").write_text(json.dumps(result, indent=2, default=_json_default))
    return result


@dataclass
class Benchmark:
    """Everything measured in one run; `to_markdown` lays it out like the paper's tables."""

    command: str
    data: dict
    sources: dict[str, str] = field(default_factory=dict)
    classification: dict[str, dict] = field(default_factory=dict)
    clustering: dict[str, dict] = field(default_factory=dict)
    retrieval: dict[str, dict] = field(default_factory=dict)
    open_world: dict[str, dict] = field(default_factory=dict)
    delimitation: dict[str, dict] = field(default_factory=dict)
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
                  reading_frames: int = 1, config: str = "cropped_256", weights=None,
                  overwrite: bool = False) -> Benchmark:
    """Measure every model and the baselines on one release and write ``report.md``, ``report.json`` and plots.

    Args:
        root: release root (DNA metadata is enough, unless a source embeds photographs).
        models: embedding sources (`parse_source` specs: saved model folders, ``image:NAME``, fused ``A+B``);
            the k-mer baseline always runs.
        out_dir: the folder for the report and plots (refused if it exists, unless ``overwrite``; it appears only
            once the report is complete). Embeddings are cached in the ``datasets`` cache, across runs.
        blast: also run the BLAST baseline (needs ``blastn``; skipped with a message when absent).
        kmer: k of the k-mer baseline.
        dedup: unique-barcode protocol for classification, ``"barcodebert"`` or ``"per-split"``.
        seed: seeds UMAP, the probes and the taxa the open-world protocol holds out of its keys.
        max_records_per_split: keep the first N records of each split (quick runs).
        reading_frames: the models embed each barcode from this many start offsets and average (1: as trained).
        config: the image package photographs are read from; weights: a ``.safetensors`` file for a timm source.
    """
    out_dir = check_output(out_dir, overwrite, inputs=(root, weights, *(p for m in models for p in spec_paths(str(m)))))
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"Unknown task(s) {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)}.")
    if reading_frames != 1 and all(reads_no_frames(str(m)) for m in models):
        raise ValueError("--reading-frames applies to BarcodeBERT models (dna:DIR), and none is benchmarked.")
    with staged_folder(out_dir, overwrite) as staging:
        (staging / "plots").mkdir()
        return _run_benchmark(root, staging, models, blast, kmer, dedup, linear_probe, seed, max_records_per_split,
                              batch_size, command, tasks, reading_frames, config, weights)


def _run_benchmark(root, out_dir: Path, models, blast, kmer, dedup, linear_probe, seed, max_records_per_split,
                   batch_size, command, tasks, reading_frames, config, weights) -> Benchmark:
    from tqdm.auto import tqdm

    sources = [parse_source(m, batch_size=batch_size, reading_frames=1 if reads_no_frames(m) else reading_frames,
                            root=root, config=config, weights=weights) for m in map(str, models)] + [kmer_source(kmer)]
    sets = load_benchmark_records(root, dedup=dedup, max_records_per_split=max_records_per_split, tasks=tasks,
                                  seed=seed)
    report = Benchmark(command=command or "bioscan5m.evaluation.benchmark.run_benchmark(...)",
                       data=_describe_data(root, sets, dedup, max_records_per_split, seed), environment=_environment())
    per_source = [task for task in tasks if task != "delimitation"]
    steps = tqdm(total=len(sources) * len(per_source) + (3 if blast else 0) + ("open_world" in sets)
                 + ("delimitation" in sets), desc="benchmark", unit="step")
    for source in sources:
        report.sources[source.name] = source.description
        steps.set_postfix_str(f"embedding {source.name}")
        start = time.perf_counter()
        every_set = [record_set for role, value in sets.items() if role != "delimitation"
                     for record_set in record_sets(value)]
        table = embed_records(source, every_set, cache_dir=embedding_cache_dir())
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
            result = run_clustering(source, records, table.rows(records), seed=seed, plot_path=plot)
            report.clustering[source.name] = result
            report.plots[f"UMAP {source.name}"] = str(plot.relative_to(out_dir))
            steps.update()
        if "retrieval" in sets:
            steps.set_postfix_str(f"{source.name}: retrieval")
            arrays = retrieval_arrays(table, sets["retrieval"], source.compact)
            report.retrieval[source.name] = {pair_name(source): run_retrieval(arrays, sets["retrieval"])}
            report.performance.setdefault("search", {})[source.name] = search_speed(arrays)
            steps.update()
        if "open_world" in sets:
            steps.set_postfix_str(f"{source.name}: open world")
            report.open_world[source.name] = run_open_world(
                lambda records, table=table: table.rows(records), sets["open_world"])
            steps.update()
        del table
    if "open_world" in sets:
        steps.set_postfix_str("aligned identity: open world")
        report.open_world["aligned identity"] = identity_open_world(sets["open_world"])
        report.sources["aligned identity"] = ("the key with the most identical bases at the same COI-5P reference "
                                              "positions: ungapped identity 1-NN, no model")
        # The identification recipe (`identify` over an `aligned` index) and what each of its ingredients adds.
        for name, options, description in IDENTIFICATION_ABLATION:
            steps.set_postfix_str(f"{name}: open world")
            report.open_world[name] = identification_open_world(sets["open_world"], **options)
            report.sources[name] = description
        steps.update()
    if "delimitation" in sets:
        steps.set_postfix_str("species delimitation")
        report.delimitation = run_delimitation(sets["delimitation"], report.skipped)
        steps.update()
    if blast:
        try:
            baselines.require_blast()
        except baselines.BlastNotFoundError as error:
            report.skipped.append(str(error))
            print(error, file=sys.stderr)
            steps.update(3)
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
            if "open_world" in sets:
                steps.set_postfix_str("BLAST open world")
                report.open_world["BLAST"] = blast_open_world(sets["open_world"])
            steps.update()
    steps.close()
    for name, result in report.clustering.items():
        per_10k = sum(result["seconds"].values()) / result["records"] * 10_000
        report.performance.setdefault("clustering_seconds_per_10k_points", {})[name] = per_10k
    report.plots.update(plot_bars(report, out_dir / "plots"))
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2, default=_json_default))
    (out_dir / "report.md").write_text(to_markdown(report))
    return report


def pair_name(source) -> str:
    """The retrieval pair a source scores: queries and keys of its modality (``dna->dna``, ``image->image``)."""
    return f"{source.modality}->{source.modality}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _describe_data(root, sets: dict, dedup: str, max_records_per_split: int | None, seed: int) -> dict:
    described = {"root": str(root), "dedup": dedup, "max_records_per_split": max_records_per_split, "seed": seed}
    for role, value in sets.items():
        described[role] = {s.name: {"records": len(s), "species": int(len(set(s.labels["species"][s.labels["species"] >= 0])))}
                           for s in record_sets(value)}
    return described


def _environment() -> dict:
    import os

    import sklearn

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def command_line() -> str:
    """The command that started this process, for the report."""
    return " ".join(shlex.quote(a) for a in ["bioscan5m", *sys.argv[1:]])
