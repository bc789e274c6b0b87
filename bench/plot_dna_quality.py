"""Bar chart of BarcodeBERT quality on the real barcodes, one group per encoder, from the JSON files that
``bioscan5m probe --out`` and ``bioscan5m cluster --out`` wrote, with the 6-mer and BLAST figures as lines.

    python bench/plot_dna_quality.py --out docs/benchmarks/dna_quality.png \\
        --encoder "pretrained, first base" runs/bb-cpu-small-probe.json runs/cluster-bb/clustering.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = {  # label -> (file kind, key, scale)
    "linear probe species@test": ("probe", "linear_probe_species_test", 1),
    "1-NN genus@test_unseen": ("probe", "knn_genus_test_unseen", 1),
    "clustering AMI species": ("cluster", "species", 100),
}


def read(probe_path: str, cluster_path: str) -> dict[str, float | None]:
    files = {"probe": probe_path, "cluster": cluster_path}
    values = {}
    for label, (kind, key, scale) in METRICS.items():
        path = Path(files[kind])
        if not path.is_file():
            values[label] = None
            continue
        data = json.loads(path.read_text())
        value = data["ami"].get(key) if kind == "cluster" else data.get(key)
        values[label] = None if value is None else scale * value
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", nargs=3, action="append", required=True, metavar=("NAME", "PROBE_JSON", "CLUSTER_JSON"),
                        help="one encoder: a name, its probe JSON and its clustering JSON (a missing file leaves a gap)")
    parser.add_argument("--kmer", nargs=3, type=float, default=None, metavar=("PROBE", "KNN", "AMI"),
                        help="6-mer baseline figures measured on the same records, drawn as dotted lines")
    parser.add_argument("--blast", nargs=3, type=float, default=None, metavar=("PROBE", "KNN", "AMI"),
                        help="BLAST figures (use nan where not measured), drawn as dashed lines")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    encoders = [(name, read(probe, cluster)) for name, probe, cluster in args.encoder]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.2), sharey=True)
    for column, (axis, metric) in enumerate(zip(axes, METRICS)):
        heights = [values[metric] if values[metric] is not None else np.nan for _, values in encoders]
        bars = axis.bar(range(len(encoders)), heights, color=[f"C{i}" for i in range(len(encoders))])
        for bar, height in zip(bars, heights):
            if not np.isnan(height):
                axis.text(bar.get_x() + bar.get_width() / 2, height + 1, f"{height:.1f}", ha="center", fontsize=8)
        for figures, style, name in ((args.kmer, ":", "6-mer counts"), (args.blast, "--", "BLAST")):
            if figures is not None and not np.isnan(figures[column]):
                axis.axhline(figures[column], color="black", linestyle=style, linewidth=1, label=f"{name} {figures[column]:.1f}")
        axis.set_title(metric, fontsize=10)
        axis.set_xticks(range(len(encoders)), [name for name, _ in encoders], rotation=30, ha="right", fontsize=8)
        axis.set_ylim(0, 105)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("%")
    fig.suptitle("BarcodeBERT cpu-small on real BOLD barcodes (unique-barcode protocol)", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
