"""CLIBD retrieval report: runs a CLIBD model over a release and scores it with :mod:`.retrieval`.

The protocol of CLIBD on BIOSCAN-5M: keys are the ``train`` ∪ ``key_unseen`` records, queries are ``test`` (seen
species) and ``test_unseen`` (unseen species); image→image, DNA→DNA and image→DNA retrieval by cosine similarity;
top-1/3/5 micro and macro accuracy at order, family, genus and species, per query set and their harmonic mean.
The no-alignment baseline (the same encoders before contrastive training, saved by ``train_clibd`` in
``no_alignment/``) is scored in the same run, and a bar plot compares the two.

This is glue: it loads the model and images; the scoring is the evaluation colleague's ``evaluate_retrieval``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..staging import check_output, staged_folder
from ..data.release import ORDER_TO_SPECIES
from .retrieval import evaluate_retrieval

#: ``query->key`` modality pairs CLIBD reports.
PAIRS = ("image->image", "dna->dna", "image->dna")
#: Query split -> name of the query set in the report.
QUERY_SETS = {"test": "seen", "test_unseen": "unseen"}


def embed_records(model, records, modalities: Sequence[str] = ("image", "dna"), processor=None,
                  batch_size: int = 64, progress: bool = False) -> dict[str, np.ndarray]:
    """L2-normalised embeddings of every record for each modality (``image``, ``dna``, ``text``), in record order.

    ``records`` is a ``datasets.Dataset`` or a mapping of column lists with the release's columns (``image``,
    ``dna_barcode``, taxonomy, and ``coord-lat``/``coord-lon``/``image_measurement_value`` when the model fuses
    metadata); ``processor`` the model's ``ClibdProcessor`` when already loaded (else read from its folder).
    """
    import torch
    from tqdm.auto import tqdm

    from ..tokenization.tokenization_taxonomy import taxonomy_string
    from ..training.train_clibd import metadata_inputs

    from ..modeling.processing_clibd import ClibdProcessor

    processor = processor or ClibdProcessor.from_pretrained(model.config.name_or_path)
    features = set(model.config.metadata_features or ())
    model.eval()
    out = {m: [] for m in modalities}
    count = len(records) if not isinstance(records, Mapping) else len(next(iter(records.values())))
    starts = tqdm(range(0, count, batch_size), desc="embedding", unit="batch", disable=not progress)
    with torch.inference_mode():
        for start in starts:
            batch = ({column: values[start:start + batch_size] for column, values in records.items()}
                     if isinstance(records, Mapping) else records[start:start + batch_size])
            if "image" in out:
                pixels = processor(images=batch["image"])["pixel_values"].to(model.device)
                meta = metadata_inputs(lambda column: batch[column], features)
                out["image"].append(model.get_image_features(pixels, normalize=True, **meta).float().cpu().numpy())
            if "dna" in out:
                encoded = processor(dna=batch["dna_barcode"]).to(model.device)
                out["dna"].append(model.get_dna_features(encoded["dna_input_ids"], encoded["dna_attention_mask"],
                                                         normalize=True).float().cpu().numpy())
            if "text" in out:
                texts = [taxonomy_string({r: batch[r][i] for r in ("order", "family", "genus", "species")})
                         for i in range(len(batch["dna_barcode"]))]
                encoded = processor(text=texts).to(model.device)
                out["text"].append(model.get_text_features(encoded["text_input_ids"], encoded["text_attention_mask"],
                                                           normalize=True).float().cpu().numpy())
    return {m: np.concatenate(parts) if parts else np.zeros((0, model.config.projection_dim), np.float32)
            for m, parts in out.items()}


def _labels(records) -> dict[str, np.ndarray]:
    return {rank: np.asarray(records[rank], dtype=object) for rank in ORDER_TO_SPECIES}


def retrieval_for_model(model, sets: dict, pairs: Sequence[str] = PAIRS, top_k: Sequence[int] = (1, 3, 5),
                        batch_size: int = 64, progress: bool = False) -> dict:
    """Every ``query->key`` pair for one model; ``sets`` = {"keys": records, "seen": records, "unseen": records}."""
    modalities = sorted({m for pair in pairs for m in pair.split("->")})
    unknown = [m for m in modalities if m not in ("image", "dna", "text")]
    if unknown:
        raise ValueError(f"Unknown modality in pairs {list(pairs)}; use image, dna or text.")
    from ..modeling.processing_clibd import ClibdProcessor

    processor = ClibdProcessor.from_pretrained(model.config.name_or_path)
    embedded = {name: embed_records(model, records, modalities, processor, batch_size, progress)
                for name, records in sets.items()}
    labels = {name: _labels(records) for name, records in sets.items()}
    results = {}
    for pair in pairs:
        query, key = pair.split("->")
        query_sets = {name: (embedded[name][query], labels[name]) for name in sets if name != "keys"}
        results[pair] = evaluate_retrieval(query_sets, (embedded["keys"][key], labels["keys"]), top_k=top_k,
                                           ranks=ORDER_TO_SPECIES)
    return results


def load_retrieval_sets(data_root, config: str = "cropped_256", queries: Sequence[str] = ("test", "test_unseen"),
                        keys: str = "train+key_unseen", max_records_per_split: int | None = None, cache_dir=None,
                        seed: int = 0) -> dict:
    """Keys and named query sets (``seen`` for test, ``unseen`` for test_unseen) as datasets."""
    from ..training.train_clibd import load_records

    sets = {"keys": load_records(data_root, keys, config=config, cache_dir=cache_dir, max_records=max_records_per_split,
                                 seed=seed)}
    for split in queries:
        sets[QUERY_SETS.get(split, split)] = load_records(data_root, split, config=config, cache_dir=cache_dir,
                                                          max_records=max_records_per_split, seed=seed)
    return sets


def clibd_retrieval_report(model_dir, data_root, config: str = "cropped_256",
                           queries: Sequence[str] = ("test", "test_unseen"), keys: str = "train+key_unseen",
                           baseline_dir=None, pairs: Sequence[str] = PAIRS, top_k: Sequence[int] = (1, 3, 5),
                           out_dir=None, max_records_per_split: int | None = None, batch_size: int = 64,
                           cache_dir=None, progress: bool = True, overwrite: bool = False) -> dict:
    """Retrieval of a CLIBD model and of its no-alignment baseline, written as JSON, Markdown and a bar plot.

    Args:
        model_dir: a saved CLIBD model folder.
        baseline_dir: the no-alignment model (default ``model_dir/no_alignment`` when present; ``False``: none).
        out_dir: where ``retrieval_clibd.json``, ``retrieval_clibd.md`` and ``retrieval_clibd.png`` go
            (default ``model_dir/retrieval``); refused if it exists, unless ``overwrite``.
    """
    from transformers import AutoModel

    from .. import modeling  # noqa: F401  (registers CLIBD with AutoModel)

    model_dir = Path(model_dir)
    out_dir = Path(out_dir or model_dir / "retrieval").expanduser()
    # The report's default place is inside the model folder; nothing else inside the model may be replaced.
    beside_model = out_dir.resolve() == (model_dir / "retrieval").resolve()
    out_dir = check_output(out_dir, overwrite, inputs=(None if beside_model else model_dir, data_root,
                                                       baseline_dir or None))
    if baseline_dir is None and (model_dir / "no_alignment" / "config.json").is_file():
        baseline_dir = model_dir / "no_alignment"
    sets = load_retrieval_sets(data_root, config, queries, keys, max_records_per_split, cache_dir)
    models = {"aligned": model_dir}
    if baseline_dir:
        models["no_alignment"] = Path(baseline_dir)
    report = {"model": str(model_dir), "data": str(data_root), "image_package": config, "keys": keys,
              "queries": {QUERY_SETS.get(q, q): q for q in queries},
              "records": {name: len(records) for name, records in sets.items()}, "results": {}}
    for name, folder in models.items():
        model = AutoModel.from_pretrained(str(folder))
        report["results"][name] = retrieval_for_model(model, sets, pairs, top_k, batch_size, progress)
    with staged_folder(out_dir, overwrite) as staging:
        (staging / "retrieval_clibd.json").write_text(json.dumps(report, indent=2, default=float))
        (staging / "retrieval_clibd.md").write_text(markdown_table(report))
        plot_retrieval(report, staging / "retrieval_clibd.png")
    report["plot"] = str(out_dir / "retrieval_clibd.png")
    return report


def markdown_table(report: dict, metric: str = "macro_top1") -> str:
    """One row per model, pair and query set; one column per rank (percent)."""
    import pandas as pd

    rows = [{"model": model, "query→key": pair.replace("->", "→"), "queries": name,
             **{r: round(100 * ranks[r][name][metric], 1) for r in ORDER_TO_SPECIES if r in ranks}}
            for model, results in report["results"].items() for pair, ranks in results.items()
            for name in report["queries"]]
    return f"{metric} (%), keys {report['keys']}\n\n" + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f") + "\n"


def plot_retrieval(report: dict, path, metric: str = "macro_top1") -> Path:
    """Bars per rank: aligned vs no-alignment, seen and unseen, one panel per query→key pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(next(iter(report["results"].values())))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.6), sharey=True, squeeze=False)
    series = [(model, name) for model in report["results"] for name in report["queries"]]
    width = 0.8 / len(series)
    for axis, pair in zip(axes[0], pairs):
        for i, (model, name) in enumerate(series):
            ranks = report["results"][model][pair]
            values = [100 * ranks[r][name][metric] if r in ranks else 0 for r in ORDER_TO_SPECIES]
            axis.bar(np.arange(len(ORDER_TO_SPECIES)) + (i - (len(series) - 1) / 2) * width, values, width,
                     label=f"{model.replace('_', '-')} · {name}", hatch="" if model == "aligned" else "//",
                     color=f"C{list(report['queries']).index(name)}", alpha=1.0 if model == "aligned" else 0.45)
        axis.set_xticks(range(len(ORDER_TO_SPECIES)), ORDER_TO_SPECIES)
        axis.set_title(pair.replace("->", " → "))
        axis.set_ylim(0, 100)
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (%)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"CLIBD retrieval, keys {report['keys']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


__all__ = ["PAIRS", "embed_records", "retrieval_for_model", "load_retrieval_sets", "clibd_retrieval_report",
           "markdown_table", "plot_retrieval"]
