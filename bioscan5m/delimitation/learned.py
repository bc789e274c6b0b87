"""Learned linkage: single linkage whose merges a model fitted on labelled barcodes accepts or refuses.

A single cut fails two opposite ways: sister species a few percent apart are chained into one, and a species whose
haplotypes spread wider than the cut is split. Which one a merge risks depends on more than its height: two tight
groups with a clear gap between them are two species, a diverse group taking in one more haplotype at the same
distance is one. So each merge of the single-linkage tree between `FLOOR` and `CEILING` is described by the two
groups it joins — its height (their closest pair), their mean distance, the diversity within each, their sizes, the
height of the next merge, and how much of the difference lies on codon positions 1-2 and in transversions (both
rarer within a species than between species) — and gradient-boosted trees fitted on labelled barcodes (never the
ones delimited) estimate whether the two groups are one species. A group is a putative species when its merge and
every merge below it are accepted; merges below `FLOOR` are always accepted, none above `CEILING`.

Identical barcodes are linked once, as a haplotype that counts its records; every merge's features come from at
most `PAIR_SAMPLE` of its cross pairs and the tree from the graph of pairs closer than `CEILING`, so it runs on the
sparse graph past the dense matrix's limit (on the real test+test_unseen, with the dense matrix's answer).

    from bioscan5m.delimitation import LearnedLinkage
    model = LearnedLinkage().fit(labelled_barcodes, labelled_species)
    putative = model.delimit(barcodes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..embedding import aligned_base_codes
from ..evaluation.scoring import is_missing
from .distances import MIN_OVERLAP, SPARSE_ABOVE, check_min_overlap, checked_barcodes, close_pairs, pair_differences
from .linkage import renumber

#: Merges closer than this are accepted without asking the model (species differ by more almost always).
FLOOR = 0.01
#: Merges above this are refused: the tree is built from the pairs closer than this.
CEILING = 0.05
#: Candidates per barcode for the sparse graph at the ceiling: at 5 % the k-mer ranking and the p-distance
#: disagree more than near 2 %, and 256 found every close pair of the real test+test_unseen (32 missed 4 %).
NEIGHBOURS = 256
#: A merge is accepted when the model's probability that its two groups are one species exceeds this (0.3-0.5
#: score alike on held-out calibration records; bench/bench_delimitation_heldout.py).
ACCEPT = 0.4
#: Cross pairs a merge's features are estimated from (all of them where there are fewer).
PAIR_SAMPLE = 1024
#: Calibration records are linked in parts of at most this many barcodes (see `LearnedLinkage.training_merges`).
PART_SIZE = 15_000
#: The model is the mean of boosted trees fitted with these seeds (each tree of each on its own random 80 % of the
#: merges, the ``subsample`` of `BOOSTING`).
MODEL_SEEDS = (0, 1, 2)
#: Each model's trees: four levels deep, since whether a gap parts two species depends on several of the
#: features at once (held out, depth 4 scored 0.11 species AMI above depth 2, and like depth 3 and 5).
BOOSTING = {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.03, "subsample": 0.8}
#: What each column of `merge_features` holds.
FEATURES = ("height", "mean distance", "diversity of the larger group", "diversity of the smaller group",
            "log size of the smaller group", "log size of the larger group", "height of the next merge",
            "mean distance beyond the larger diversity", "codon positions 1-2 distance",
            "codon positions 1-2 share", "transversion distance", "transversion share")


@dataclass
class LinkageTree:
    """The merges of single linkage below a ceiling, lowest first: merge ``m`` joins groups ``left[m]`` and
    ``right[m]`` (ids below ``n`` are the leaves, barcodes or haplotypes, ``n + m`` the group merge ``m`` makes) at
    ``height[m]``."""

    n: int
    left: np.ndarray
    right: np.ndarray
    height: np.ndarray
    size: np.ndarray        # per group id: the records in it (a leaf may stand for several identical barcodes)


@dataclass
class TrainingMerges:
    """What the merge model learns from: a row of `LearnedLinkage.features` per merge of labelled barcodes, whether
    its two groups are one species, its weight, and the labelled records and species they came from."""

    features: np.ndarray
    same: np.ndarray
    weight: np.ndarray
    records: int
    species: int


#: Added to every distance given to scipy's spanning tree, which reads a stored zero as no edge.
_EDGE_OFFSET = 1e-3


def haplotypes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of `aligned_base_codes`: the first barcode of each, each barcode's haplotype, and the
    barcodes per haplotype."""
    _, first, inverse, counts = np.unique(codes, axis=0, return_index=True, return_inverse=True, return_counts=True)
    return first, inverse.ravel(), counts


def single_linkage_tree(codes: np.ndarray, sequences: Sequence[str], ceiling: float,
                        min_overlap: int = MIN_OVERLAP, sparse: bool = False, progress: bool = False,
                        counts: np.ndarray | None = None) -> LinkageTree:
    """Single linkage of ``codes`` up to ``ceiling``: the minimum spanning forest of the pairs closer than it, its
    edges merged in (distance, first, second) order, so ties resolve the same from the dense or the sparse graph.
    ``counts``: the records each row stands for (default one)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    n = len(codes)
    first, second, distances = close_pairs(codes, sequences, ceiling, min_overlap, sparse=sparse, k=NEIGHBOURS,
                                           progress=progress)
    forest = minimum_spanning_tree(csr_matrix((distances.astype(np.float64) + _EDGE_OFFSET, (first, second)),
                                              shape=(n, n))).tocoo()
    order = np.lexsort((forest.col, forest.row, forest.data))
    root = np.arange(n)
    group = np.arange(n)             # the group id of each union-find root
    size = np.ones(2 * n - 1, dtype=np.int64)
    if counts is not None:
        size[:n] = counts

    def find(x):
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    left, right, height = [], [], []
    for edge in order:
        a, b = find(forest.row[edge]), find(forest.col[edge])
        merged = n + len(left)
        left.append(group[a])
        right.append(group[b])
        height.append(forest.data[edge] - _EDGE_OFFSET)
        size[merged] = size[group[a]] + size[group[b]]
        if size[group[a]] < size[group[b]]:
            a, b = b, a
        root[b] = a
        group[a] = merged
    return LinkageTree(n, np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64),
                       np.clip(np.asarray(height, dtype=np.float64), 0.0, None), size[:n + len(left)])


def merge_features(tree: LinkageTree, codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(merges, len(FEATURES))`` float32, one row per merge of ``tree`` (see the module docstring)."""
    n, merges = tree.n, len(tree.left)
    rng = np.random.default_rng(seed)
    members: dict[int, np.ndarray] = {}
    sums = np.zeros((merges, 3))
    pairs = np.zeros(merges)
    batch: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    records = tree.size[:n].astype(np.float64)

    def add_up(batch):
        merge = np.concatenate([np.full(len(first), m) for m, first, _, _ in batch])
        weight = np.concatenate([weight for _, _, _, weight in batch])
        differences = pair_differences(codes, np.concatenate([first for _, first, _, _ in batch]),
                                       np.concatenate([second for _, _, second, _ in batch]))
        pairs[:] += np.bincount(merge, weight, minlength=merges)
        for k in range(3):
            sums[:, k] += np.bincount(merge, weight * differences[:, k], minlength=merges)

    for m in range(merges):
        a, b = members.pop(tree.left[m], None), members.pop(tree.right[m], None)
        a = np.array([tree.left[m]]) if a is None else a
        b = np.array([tree.right[m]]) if b is None else b
        if len(a) * len(b) <= PAIR_SAMPLE:       # every pair of haplotypes, weighted by their records
            first, second = np.repeat(a, len(b)), np.tile(b, len(a))
            batch.append((m, first, second, records[first] * records[second]))
        else:                                    # records drawn at random: haplotypes by their records
            batch.append((m, rng.choice(a, PAIR_SAMPLE, p=records[a] / records[a].sum()),
                          rng.choice(b, PAIR_SAMPLE, p=records[b] / records[b].sum()), np.ones(PAIR_SAMPLE)))
        members[n + m] = np.concatenate([a, b])
        if len(batch) >= 1000 or m == merges - 1:
            add_up(batch)
            batch = []
    if not merges:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    mean = sums / pairs[:, None]

    # Diversity: mean pairwise distance within a group, accumulated up the tree from its merges' cross pairs.
    within = np.zeros(n + merges)
    size = tree.size.astype(np.float64)
    for m in range(merges):
        within[n + m] = within[tree.left[m]] + within[tree.right[m]] + mean[m, 0] * size[tree.left[m]] * \
            size[tree.right[m]]
    diversity = within / np.maximum(size * (size - 1) / 2, 1)
    next_height = np.full(n + merges, 4 * CEILING)
    next_height[tree.left] = tree.height
    next_height[tree.right] = tree.height

    left_larger = size[tree.left] >= size[tree.right]
    larger = np.where(left_larger, tree.left, tree.right)
    smaller = np.where(left_larger, tree.right, tree.left)
    distance = mean[:, 0]
    share = lambda part: part / np.maximum(distance, 1e-4)  # noqa: E731
    return np.stack([tree.height, distance, diversity[larger], diversity[smaller], np.log1p(size[smaller]),
                     np.log1p(size[larger]), next_height[n:], distance - np.maximum(diversity[larger],
                                                                                     diversity[smaller]),
                     mean[:, 1], share(mean[:, 1]), mean[:, 2], share(mean[:, 2])], axis=1).astype(np.float32)


def same_species_merges(tree: LinkageTree, species: Sequence[dict]) -> np.ndarray:
    """Per merge: whether the most common species of its two groups is the same (the model's target);
    ``species``: per leaf, its records per species name."""
    counts: dict[int, dict] = {leaf: dict(names) for leaf, names in enumerate(species)}
    same = np.zeros(len(tree.left), dtype=bool)
    for m, (a, b) in enumerate(zip(tree.left, tree.right)):
        first, second = counts.pop(a), counts.pop(b)
        same[m] = max(first, key=first.get) == max(second, key=second.get)
        if len(first) < len(second):
            first, second = second, first
        for name, count in second.items():
            first[name] = first.get(name, 0) + count
        counts[tree.n + m] = first
    return same


class LearnedLinkage:
    """Putative species by single linkage whose merges a model fitted on labelled barcodes accepts or refuses.

    ``accept``: the probability above which a merge is accepted; ``boosting``: the keyword arguments of each of the
    `MODEL_SEEDS` scikit-learn ``GradientBoostingClassifier`` (default `BOOSTING`; the seeds are its
    ``random_state``); ``min_overlap``: the positions two barcodes must share for the tree to link them (a merge's
    features average over its groups' pairs whatever their overlap). ``sparse`` (``fit``, ``delimit``): build the
    tree from the sparse neighbour graph instead of the dense matrix (default: above 5,000 distinct barcodes).
    """

    def __init__(self, min_overlap: int = MIN_OVERLAP, accept: float = ACCEPT, boosting: dict | None = None):
        if not 0 < accept < 1:
            raise ValueError(f"accept must be a probability between 0 and 1, not {accept!r}.")
        check_min_overlap(min_overlap)
        if boosting is not None and not isinstance(boosting, dict):
            raise ValueError(f"boosting must be a dict of GradientBoostingClassifier arguments, not {boosting!r}.")
        if boosting is not None and "random_state" in boosting:
            raise ValueError(f"boosting may not set random_state: the models are seeded with {MODEL_SEEDS}.")
        self.min_overlap, self.accept = min_overlap, accept
        self.boosting = dict(BOOSTING if boosting is None else boosting)
        self.models: list = []
        self.records = self.species = self.merges = 0

    def fit(self, sequences: Sequence[str], species: Sequence, part_size: int = PART_SIZE,
            sparse: bool | None = None, progress: bool = False) -> "LearnedLinkage":
        """Fit the merge model on barcodes with species names (records without one are left out)."""
        return self.fit_merges(self.training_merges(sequences, species, part_size, sparse, progress), progress)

    def training_merges(self, sequences: Sequence[str], species: Sequence, part_size: int = PART_SIZE,
                        sparse: bool | None = None, progress: bool = False) -> TrainingMerges:
        """The merges of labelled barcodes to fit the model on.

        The named records are shuffled into parts of at most ``part_size``, each linked on its own: every part adds
        its merges to learn from, at a sampling density like that of a set being delimited.
        """
        if part_size < 2:
            raise ValueError(f"part_size must be at least 2 barcodes, not {part_size!r}.")
        sequences, species = list(sequences), np.asarray(species, dtype=object)
        if len(sequences) != len(species):
            raise ValueError(f"{len(sequences):,} barcodes but {len(species):,} species labels: give one per "
                             "barcode.")
        known = np.flatnonzero(~is_missing(species))
        if not len(known):
            raise ValueError("None of the barcodes to fit the merge model on has a species name.")
        sequences = checked_barcodes([sequences[i] for i in known])
        names = species[known].astype(str)
        parts = np.array_split(np.random.default_rng(0).permutation(len(names)), -(-len(names) // part_size))
        features, same, weight = [], [], []
        for part in parts:
            tree, codes, haplotype = self.tree([sequences[i] for i in part], sparse, progress)
            per_haplotype: list[dict] = [{} for _ in range(tree.n)]
            for h, name in zip(haplotype, names[part]):
                per_haplotype[h][name] = per_haplotype[h].get(name, 0) + 1
            asked = tree.height > FLOOR
            features.append(self.features(tree, codes)[asked])
            same.append(same_species_merges(tree, per_haplotype)[asked])
            # A wrong merge of two large groups costs more than a stray barcode, but not in proportion to size.
            weight.append(np.log1p(np.minimum(tree.size[tree.left], tree.size[tree.right])[asked]))
        if progress:
            print(f"{sum(map(len, same)):,} merges to learn from in {len(parts)} parts of {len(names):,} labelled "
                  "barcodes")
        return TrainingMerges(np.concatenate(features), np.concatenate(same), np.concatenate(weight), len(names),
                              len(set(names.tolist())))

    def fit_merges(self, merges: TrainingMerges, progress: bool = False) -> "LearnedLinkage":
        """Fit the merge model on `training_merges`' output."""
        from sklearn.ensemble import GradientBoostingClassifier

        same = merges.same
        if len(same) < 20 or same.all() or not same.any():
            raise ValueError(f"{merges.records:,} labelled barcodes give {len(same)} merges between "
                             f"{100 * FLOOR:g} and {100 * CEILING:g} %, {int(same.sum())} of them within a species: "
                             "too few to fit the merge model on (it needs 20, of both kinds); calibrate on more "
                             "records (e.g. val+val_unseen+train).")
        self.models = [GradientBoostingClassifier(**self.boosting, random_state=seed).fit(
                           merges.features, same, sample_weight=merges.weight) for seed in MODEL_SEEDS]
        self.records, self.species, self.merges = merges.records, merges.species, len(same)
        if progress:
            print(f"merge model fitted on {self.merges:,} merges of {self.records:,} labelled barcodes "
                  f"({100 * same.mean():.0f} % within a species)")
        return self

    def tree(self, sequences: Sequence[str], sparse: bool | None = None, progress: bool = False):
        """The single-linkage tree of the haplotypes of ``sequences``, their codes, and each barcode's haplotype."""
        sequences = checked_barcodes(sequences)
        codes = aligned_base_codes(sequences)
        first, haplotype, counts = haplotypes(codes)
        tree = single_linkage_tree(codes[first], [sequences[i] for i in first], CEILING, self.min_overlap,
                                   _sparse(sparse, len(first)), progress, counts=counts)
        return tree, codes[first], haplotype

    def features(self, tree: LinkageTree, codes: np.ndarray) -> np.ndarray:
        """What the merge model reads: a row per merge of ``tree``, from the codes of its leaves (`merge_features`;
        a subclass may add columns)."""
        return merge_features(tree, codes)

    def same_species_probability(self, features: np.ndarray) -> np.ndarray:
        return np.mean([model.predict_proba(features)[:, 1] for model in self.models], axis=0)

    def delimit(self, sequences: Sequence[str], sparse: bool | None = None, progress: bool = False) -> np.ndarray:
        """Putative species of ``sequences``: a cluster id per barcode (0, 1, ... by first appearance)."""
        if not self.models:
            raise ValueError("This LearnedLinkage is not fitted: call fit(labelled barcodes, species) first.")
        return self.decide(*self.tree(sequences, sparse, progress))

    def decide(self, tree: LinkageTree, codes: np.ndarray, haplotype: np.ndarray) -> np.ndarray:
        """The putative species of a `tree`'s barcodes: each merge accepted when the model says so and every
        merge below it was accepted."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        probability = np.ones(len(tree.left))
        asked = tree.height > FLOOR
        if asked.any():
            probability[asked] = self.same_species_probability(self.features(tree, codes)[asked])
        accepted = np.ones(tree.n + len(tree.left), dtype=bool)
        for m, (a, b) in enumerate(zip(tree.left, tree.right)):
            accepted[tree.n + m] = accepted[a] and accepted[b] and probability[m] > self.accept
        # Joining one barcode of each side of every accepted merge joins exactly the groups those merges made.
        member = _a_member_of_each_group(tree)
        joined = accepted[tree.n:]
        graph = coo_matrix((np.ones(int(joined.sum())), (member[tree.left[joined]], member[tree.right[joined]])),
                           shape=(tree.n, tree.n))
        return renumber(connected_components(graph, directed=False)[1][haplotype])


def _a_member_of_each_group(tree: LinkageTree) -> np.ndarray:
    """One barcode of each group id (a barcode is its own)."""
    member = np.concatenate([np.arange(tree.n), np.zeros(len(tree.left), dtype=np.int64)])
    for m, a in enumerate(tree.left):
        member[tree.n + m] = member[a]
    return member


def _sparse(sparse: bool | None, n: int) -> bool:
    return n > SPARSE_ABOVE if sparse is None else sparse
