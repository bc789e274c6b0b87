"""The benchmark report as Markdown, and its plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...data.release import ORDER_TO_SPECIES
from .records import CLUSTER_RANKS, RANK_TITLES

if TYPE_CHECKING:
    from .run import Benchmark


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _table(rows: list[dict]) -> list[str]:
    import pandas as pd

    return [pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]


def to_markdown(report: Benchmark) -> str:
    """The report as Markdown: paper-style tables, then the data, sources, performance and plots."""
    lines = ["# BIOSCAN-5M benchmark", "", f"Command: `{report.command}`", "",
             f"Data: `{report.data['root']}`; classification dedup protocol `{report.data['dedup']}`"
             + (f"; first {report.data['max_records_per_split']} records per split" if report.data["max_records_per_split"] else ""), ""]
    if report.classification:
        lines += ["## Classification (unique barcodes, keys = train)", "",
                  "Accuracy %, micro / macro. 1-NN: the cosine-nearest train record in the source's embedding (its "
                  "barcode, photograph or both); BLAST: top `blastn` hit.", ""]
        columns = {"species @ test: 1-NN / top hit": ("species@test 1-NN", "species@test top hit"),
                   "species @ test: linear probe": ("species@test linear",),
                   "genus @ test_unseen: 1-NN / top hit": ("genus@test_unseen 1-NN", "genus@test_unseen top hit")}
        rows = []
        for name, result in report.classification.items():
            row = {"method": name}
            for column, tasks in columns.items():
                found = next((result[t] for t in tasks if t in result), None)
                row[column] = "—" if found is None else f"{_pct(found['micro_top1'])} / {_pct(found['macro_top1'])}"
            rows.append(row)
        lines += _table(rows)
    if report.clustering:
        ranks = [r for r in CLUSTER_RANKS if any(r in c["ami"] for c in report.clustering.values())]
        first = next(iter(report.clustering.values()))
        lines += [f"## Zero-shot clustering (AMI %, {first['records']:,} records of test+test_unseen, "
                  f"UMAP 50 -> Ward, {first['n_clusters']} clusters)", ""]
        lines += _table([{"method": name, **{RANK_TITLES[r]: _pct(result["ami"].get(r))
                                             if result["scores"].get(r, {}).get("num_classes", 2) > 1 else "n/a (1 class)"
                                             for r in ranks}} for name, result in report.clustering.items()])
        lines += ["AMI at each rank scores the same species-count clustering; records without a label at a rank "
                  "are left out of that rank.", ""]
    if report.retrieval:
        lines += ["## Retrieval within each source's modality (keys = train + key_unseen; top-1 accuracy %)", ""]
        rows = []
        for name, result in report.retrieval.items():
            pair = _pair(result)
            for average in ("micro", "macro"):
                row = {"method": name, "query -> key": pair, "average": average}
                for r in ORDER_TO_SPECIES:
                    s = result[pair][r]
                    row.update({f"{r} seen": _pct(s["seen"][f"{average}_top1"]),
                                f"{r} unseen": _pct(s["unseen"][f"{average}_top1"]),
                                f"{r} H.M.": _pct(s[f"harmonic_mean_{average}_top1"])})
                rows.append(row)
        lines += _table(rows)
        lines += ["Species top-k (macro %, seen / unseen):", ""]
        species = {name: result[_pair(result)]["species"] for name, result in report.retrieval.items()}
        lines += _table([{"method": name, **{f"top-{k}": f"{_pct(s['seen'][f'macro_top{k}'])} / "
                                                         f"{_pct(s['unseen'][f'macro_top{k}'])}" for k in (1, 3, 5)}}
                         for name, s in species.items()])
    if report.open_world:
        lines += ["## Open world at every rank (top-1 accuracy %, micro / macro)", "",
                  "Queries whose taxon one rank below is absent from the keys: species of `test` (keys `train`), genus "
                  "of `test_unseen`, family of held-out genera, order of held-out families (unique barcodes of "
                  "`train`+`test`, a fifth of the eligible taxa held out, at most 2,000 queries, both drawn with seed "
                  f"{report.data.get('seed', 0)}).", ""]
        lines += _table([{"method": name, **{task: f"{_pct(score['micro_top1'])} / {_pct(score['macro_top1'])}"
                                             for task, score in result.items()}}
                         for name, result in report.open_world.items()])
    if report.delimitation:
        lines += ["## Species delimitation without labels", "",
                  "Putative species of `test+test_unseen` from the barcodes alone (ungapped p-distance in the COI-5P "
                  "frame), scored against the names; the single-linkage threshold is calibrated and the learned "
                  "linkage's merge model fitted on `val+val_unseen`.", ""]
        lines += _table([{"method": name, "threshold": "—" if r["threshold"] is None else f"{100 * r['threshold']:.2f} %",
                          "putative species": f"{r['putative_species']:,} / {r['named_species']:,} named",
                          **{f"{rank} AMI": f"{r[f'{rank}_ami']:.2f}" for rank in ("species", "genus", "family")},
                          "species split": r["species_split"], "clusters merging species": r["clusters_merging_species"]}
                         for name, r in report.delimitation.items()])
    lines += ["## Data", ""]
    lines += _table([{"task": role, "set": set_name, "records": f"{counts['records']:,}",
                      "species": f"{counts['species']:,}"}
                     for role in ("classification", "clustering", "retrieval")
                     for set_name, counts in report.data.get(role, {}).items()])
    lines += ["## Methods", ""] + [f"- **{n}**: {d}" for n, d in report.sources.items()] + [""]
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


def plot_bars(report: Benchmark, folder: Path) -> dict[str, str]:
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
            ranks = list(ORDER_TO_SPECIES)
            charts.append((f"retrieval within each modality, macro top-1, {split}", f"retrieval_{split}.png", ranks,
                           {n: [r[_pair(r)][rank][split]["macro_top1"] for rank in ranks]
                            for n, r in report.retrieval.items()}))
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


def _pair(result: dict) -> str:
    """The one ``query->key`` pair a source's retrieval result holds (``dna->dna``, ``image->image``, ...)."""
    return next(key for key in result if "->" in key)
