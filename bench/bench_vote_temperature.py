"""How the aligned encoder's vote temperature was chosen: on the open-world protocol rebuilt from ``val`` and
``val_unseen`` (they play ``test`` and ``test_unseen``; genera and families held out of ``train`` + ``val`` with
another seed), never on the test splits.

    .venv/bin/python bench/bench_vote_temperature.py --data ../shared/data/bold-insects

Prints top-1 accuracy (micro %) per task and temperature, and the temperature with the best mean.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPERATURES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/bold-insects"), help="release root")
    args = parser.parse_args()

    from bioscan5m import read_metadata
    from bioscan5m.evaluation.benchmark.records import open_world_sets, unique_barcode_records
    from bioscan5m.evaluation.benchmark.tasks import identification_open_world

    unique = unique_barcode_records(read_metadata(args.data, split="all", max_nucleotides=None))
    roles = {"test": "", "test_unseen": "", "val": "test", "val_unseen": "test_unseen"}  # test splits left out
    unique = unique.assign(split=unique["split"].map(lambda split: roles.get(split, split)))
    sets = open_world_sets(unique, seed=1)
    rows = {t: identification_open_world(sets, index_type="flat", temperature=t) for t in TEMPERATURES}
    names = list(sets)
    print("temperature  " + "  ".join(f"{n:>26}" for n in names) + "    mean")
    for t, result in rows.items():
        scores = [100 * result[n]["micro_top1"] for n in names]
        print(f"{t:>11}  " + "  ".join(f"{s:>26.2f}" for s in scores) + f"  {np.mean(scores):6.2f}")
    # Of temperatures that score alike, the softest: its confidences are the least overconfident.
    best = max(reversed(TEMPERATURES), key=lambda t: np.mean([rows[t][n]["micro_top1"] for n in names]))
    print(f"best mean (the softest of ties): temperature {best}")


if __name__ == "__main__":
    main()
