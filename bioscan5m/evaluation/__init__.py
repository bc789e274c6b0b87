"""Evaluation on embeddings and labels: ``evaluate`` metric modules, zero-shot clustering, retrieval, probes,
baselines (k-mer counts, BLAST) and the benchmark report.

    from bioscan5m import evaluation
    acc = evaluation.load("taxonomic_accuracy")      # an evaluate.EvaluationModule, offline
    acc.compute(predictions=[...], references=[...], rank="genus")

Nothing here imports a model; heavy libraries load inside the functions that use them.
"""

from __future__ import annotations

from pathlib import Path

#: Folder holding the shipped ``evaluate`` modules, one sub-folder per metric (folder name == script name).
METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def metric_names() -> list[str]:
    """Names of the metric modules shipped with the package."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def metric_path(name: str) -> Path:
    """The folder of a shipped metric module, as ``evaluate.load`` expects it."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"Unknown metric {name!r}; shipped metrics: {', '.join(metric_names())}.")
    return path


def load(name: str, **kwargs):
    """``evaluate.load`` of a shipped metric (``taxonomic_accuracy`` or ``ami``); works offline."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS_DIR", "load", "metric_names", "metric_path"]
