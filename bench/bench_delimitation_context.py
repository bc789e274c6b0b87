"""Unlabelled barcodes as context for the learned linkage's merges, and where the gain it shows comes from.

    python bench/bench_delimitation_context.py --data ../shared/data/bold-insects            # ≈ 11 min on 2 cores

Taxonomists read a gap between two groups against everything sequenced nearby: a gap that other barcodes fill is
sampling, not a species boundary. Here the unlabelled ``--context`` barcodes (``pretrain``) add three columns to
every merge: how far past the merge's height the closest context barcode to both groups lies (the gap left once
the context is added), how many context barcodes lie closer to both groups than they are to each other, and how
many lie within 1 % of either group. Both models are scored, on the same folds, on held-out calibration records
(as `bench_delimitation_heldout.py`: ``train+val+val_unseen`` in three folds, three times over; and ``train+val``
alone, 90-99 % of whose records have a context barcode within 1 %), then on ``test+test_unseen`` per split, fitted
on all of ``train+val+val_unseen`` or on ``train+val`` alone. No variant is chosen here by its test score.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench_delimitation_heldout import folds_by_key

#: Context barcodes at most this far from a group are read (the ceiling of the tree).
CONTEXT_REACH = 0.05
#: The gap a merge keeps where no context barcode is within reach of both groups.
NO_CONTEXT_GAP = 2 * CONTEXT_REACH
#: Context this close to a group counts as sampling around it.
CONTEXT_NEAR = 0.01
#: What the context adds to each merge's features.
CONTEXT_FEATURES = ("context gap beyond the height", "log context barcodes between the groups",
                    "log context barcodes within 1 % of either group")


def context_linkage(context: list[str]) -> type:
    """A `LearnedLinkage` class whose merges also read `CONTEXT_FEATURES` of the ``context`` barcodes."""
    from scipy import sparse

    from bioscan5m.delimitation import LearnedLinkage
    from bioscan5m.delimitation.distances import p_distances
    from bioscan5m.delimitation.learned import FLOOR, haplotypes
    from bioscan5m.embedding import aligned_base_codes

    codes = aligned_base_codes(context)
    first, _, context_counts = haplotypes(codes)
    context_codes = codes[first]

    def distances_to_context(codes: np.ndarray, min_overlap: int):
        """``(len(codes), context haplotypes)`` sparse: the p-distances up to `CONTEXT_REACH`, stored plus 1."""
        distances = p_distances(codes, min_overlap, others=context_codes)
        row, column = np.nonzero(distances <= CONTEXT_REACH)
        return sparse.csr_matrix((distances[row, column] + 1.0, (row, column)), shape=distances.shape)

    def closest_context(near, group):
        """Per context haplotype, its distance to the nearest member of ``group`` (inf beyond the reach)."""
        rows = near[group].tocoo()
        closest = np.full(near.shape[1], np.inf)
        np.minimum.at(closest, rows.col, rows.data - 1.0)
        return closest

    class ContextLinkage(LearnedLinkage):
        def features(self, tree, codes):
            near = distances_to_context(codes, self.min_overlap)
            columns = np.zeros((len(tree.left), len(CONTEXT_FEATURES)), dtype=np.float32)
            members: dict[int, np.ndarray] = {}
            for m, (a, b) in enumerate(zip(tree.left, tree.right)):
                a = members.pop(a, np.array([a]))
                b = members.pop(b, np.array([b]))
                members[tree.n + m] = np.concatenate([a, b])
                if tree.height[m] <= FLOOR:
                    continue
                to_a, to_b = closest_context(near, a), closest_context(near, b)
                to_farther = np.maximum(to_a, to_b)
                columns[m] = (min(to_farther.min(), NO_CONTEXT_GAP) - tree.height[m],
                              np.log1p(context_counts[to_farther < tree.height[m]].sum()),
                              np.log1p(context_counts[np.minimum(to_a, to_b) < CONTEXT_NEAR].sum()))
            return np.concatenate([super().features(tree, codes), columns], axis=1)

    return ContextLinkage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="release root with real barcodes (../shared/data/bold-insects)")
    parser.add_argument("--context", default="pretrain", help="unlabelled splits read as context")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    from bioscan5m import read_metadata
    from bioscan5m.delimitation import LearnedLinkage
    from bioscan5m.evaluation.scoring import clustering_agreement

    started = time.time()
    context = read_metadata(args.data, split=args.context)["dna_barcode"].tolist()
    models = {"without context": LearnedLinkage, "with context": context_linkage(context)}

    def scores(train_barcodes, train_species, barcodes, species, groups):
        """Species AMI (percent) of each model on ``barcodes``, overall and per ``groups`` value."""
        out = {}
        for name, make in models.items():
            clusters = make().fit(train_barcodes, train_species).delimit(barcodes)
            out[name] = {"all": 100 * clustering_agreement(species, clusters)["ami"],
                         "putative species": int(clusters.max() + 1)}
            for group in sorted(set(groups)):
                chosen = groups == group
                out[name][group] = 100 * clustering_agreement(species[chosen], clusters[chosen])["ami"]
        return out

    delimited = read_metadata(args.data, split="test+test_unseen")
    delimited = delimited[delimited["species"].notna()].reset_index(drop=True)
    report: dict = {"context": args.context, "context barcodes": len(context)}
    for pool_splits, repeats in (("train+val+val_unseen", 3), ("train+val", 1)):
        pool = read_metadata(args.data, split=pool_splits)
        pool = pool[pool["species"].notna()].reset_index(drop=True)
        barcodes, species = pool["dna_barcode"].tolist(), pool["species"].to_numpy().astype(str)
        held_out = []
        for repeat in range(repeats):
            fold = folds_by_key(barcodes, 3, repeat)
            for k in range(3):
                train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
                result = scores([barcodes[i] for i in train], species[train], [barcodes[i] for i in test],
                                species[test], pool["split"].to_numpy()[test])
                held_out.append(result)
                print(f"{pool_splits}, repeat {repeat}, fold {k}: " + ", ".join(
                    f"{name} {r['all']:.2f}" for name, r in result.items()) + f" ({time.time() - started:.0f} s)",
                    flush=True)
        difference = np.array([r["with context"]["all"] - r["without context"]["all"] for r in held_out])
        report[f"held out of {pool_splits}"] = {
            name: round(float(np.mean([r[name]["all"] for r in held_out])), 3) for name in models} | {
            "paired difference": round(float(difference.mean()), 3),
            "s.e.": round(float(difference.std(ddof=1) / np.sqrt(len(difference))), 3), "folds": len(held_out)}

        report[f"test+test_unseen, fitted on {pool_splits}"] = {
            name: {key: round(value, 2) for key, value in r.items()} for name, r in scores(
                barcodes, species, delimited["dna_barcode"].tolist(), delimited["species"].to_numpy().astype(str),
                delimited["split"].to_numpy()).items()}
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
