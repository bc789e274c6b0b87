"""How the learned linkage's choices were made: merge-model variants scored on held-out labelled records only.

    python bench/bench_delimitation_heldout.py --data ../shared/data/bold-insects            # ≈ 5 min on 2 cores

The calibration pool (``train+val+val_unseen``, the records `bioscan5m delimit` fits on) is split into ``--folds``
folds by barcode (identical barcodes stay in one fold), ``--repeats`` times with different splits; with
``--by species`` every record of a species stays in one fold, so each fold is delimited by a model that has seen
none of its species, as ``test_unseen`` is. Each fold is
delimited by a model fitted on the other folds and scored against its own names (species AMI, percent), so nothing
here reads the records a benchmark delimits (``test``, ``test_unseen``). Every variant is scored on the same trees
and training merges; the report gives each variant's mean over the folds, its standard error, and its mean
difference from the default on the same folds (paired, so fold-to-fold spread cancels).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np

from bioscan5m.delimitation.learned import BOOSTING


def forest_linkage():
    """The learned linkage with random forests (500 trees, grown out) in place of the boosted trees."""
    from bioscan5m.delimitation import LearnedLinkage
    from bioscan5m.delimitation.learned import MODEL_SEEDS

    class ForestLinkage(LearnedLinkage):
        def fit_merges(self, merges, progress=False):
            from sklearn.ensemble import RandomForestClassifier

            self.models = [RandomForestClassifier(500, random_state=seed, n_jobs=-1).fit(
                               merges.features, merges.same, sample_weight=merges.weight) for seed in MODEL_SEEDS]
            self.records, self.species, self.merges = merges.records, merges.species, len(merges.same)
            return self

    return ForestLinkage()


#: The variants compared: a name and what makes its unfitted `LearnedLinkage`. The first is the package default.
VARIANTS = {
    "default (depth 4, 400 trees, accept > 0.4)": {},
    "accept > 0.3": {"accept": 0.3},
    "accept > 0.5": {"accept": 0.5},
    "depth 3, 400 trees": {"boosting": {**BOOSTING, "max_depth": 3}},
    "depth 2, 200 trees (before)": {"boosting": {"n_estimators": 200, "max_depth": 2, "learning_rate": 0.05,
                                                 "subsample": 0.8}},
    "random forests, 500 trees": forest_linkage,
}


def folds_by_key(keys: list[str], folds: int, repeat: int) -> np.ndarray:
    """A fold per record from its key (its barcode, or its species), the same for equal keys, different for each
    ``repeat``."""
    return np.array([int(hashlib.md5(f"{repeat}:{key}".encode()).hexdigest()[:8], 16) % folds for key in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="release root with real barcodes (../shared/data/bold-insects)")
    parser.add_argument("--pool", default="train+val+val_unseen", help="labelled splits to fold")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-repeat", type=int, default=0, help="number the repeats from here (new folds)")
    parser.add_argument("--by", choices=("barcode", "species"), default="barcode",
                        help="what stays together in one fold: identical barcodes, or every record of a species")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    from bioscan5m import read_metadata
    from bioscan5m.delimitation import LearnedLinkage
    from bioscan5m.evaluation.scoring import clustering_agreement

    pool = read_metadata(args.data, split=args.pool)
    pool = pool[pool["species"].notna()].reset_index(drop=True)
    barcodes, species = pool["dna_barcode"].tolist(), pool["species"].to_numpy().astype(str)
    scores: dict[str, list[tuple[float, int, int]]] = {name: [] for name in VARIANTS}
    started = time.time()
    for repeat in range(args.first_repeat, args.first_repeat + args.repeats):
        fold = folds_by_key(barcodes if args.by == "barcode" else list(species), args.folds, repeat)
        for held_out in range(args.folds):
            train, test = np.flatnonzero(fold != held_out), np.flatnonzero(fold == held_out)
            base = LearnedLinkage()
            merges = base.training_merges([barcodes[i] for i in train], species[train])
            tree = base.tree([barcodes[i] for i in test])
            for name, options in VARIANTS.items():
                model = options() if callable(options) else LearnedLinkage(**options)
                clusters = model.fit_merges(merges).decide(*tree)
                ami = 100 * clustering_agreement(species[test], clusters)["ami"]
                scores[name].append((ami, int(clusters.max() + 1), len(set(species[test].tolist()))))
            print(f"repeat {repeat}, fold {held_out}: {len(test):,} records held out, {len(merges.same):,} merges to "
                  f"learn from; " + ", ".join(f"{s[-1][0]:.2f}" for s in scores.values()) +
                  f" ({time.time() - started:.0f} s)", flush=True)

    default = np.array([s[0] for s in scores[next(iter(VARIANTS))]])
    rows = []
    for name, values in scores.items():
        ami = np.array([v[0] for v in values])
        difference = ami - default
        rows.append({"variant": name, "species AMI": round(ami.mean(), 3),
                     "s.e.": round(ami.std(ddof=1) / np.sqrt(len(ami)), 3),
                     "vs default, paired": round(difference.mean(), 3),
                     "s.e. of the difference": round(difference.std(ddof=1) / np.sqrt(len(ami)), 3),
                     "putative / named species": round(float(np.mean([v[1] / v[2] for v in values])), 3),
                     "folds": " ".join(f"{a:.2f}" for a in ami)})
    import pandas as pd

    print(pd.DataFrame(rows).to_markdown(index=False))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"pool": args.pool, "by": args.by, "folds": args.folds, "repeats": args.repeats,
                       "first repeat": args.first_repeat, "records": len(pool),
                       "rows": rows, "seconds": round(time.time() - started)}, handle, indent=2)


if __name__ == "__main__":
    main()
