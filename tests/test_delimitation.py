"""Species delimitation: p-distances, the two cuts, the sparse graph equal to the dense one, calibration on other
records, the learned linkage, and the delimit command's files and refusals."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from bioscan5m import read_metadata
from bioscan5m.delimitation import (LearnedLinkage, calibrate_threshold, delimit_barcodes, neighbour_graph,
                                    p_distances, pair_differences, pair_p_distances, single_linkage_tree)
from bioscan5m.evaluation.baselines import aligned_base_codes
from bioscan5m.tokenization.reference_frame import COI_5P_REFERENCE


def _mutate(sequence: str, changes: int, rng: random.Random) -> str:
    bases = list(sequence)
    for position in rng.sample(range(len(bases)), changes):
        bases[position] = rng.choice([b for b in "ACGT" if b != bases[position]])
    return "".join(bases)


def test_p_distance_counts_differing_bases_over_shared_positions():
    reference = COI_5P_REFERENCE[:658]
    rng = random.Random(0)
    changed = _mutate(reference, 13, rng)                      # 13 of 658 bases differ: 1.98 %
    fragment = reference[:300]                                 # shares 300 positions with the others
    tiny = reference[:60]                                      # too short an overlap to count
    codes = aligned_base_codes([reference, changed, fragment, tiny])
    distances = p_distances(codes, min_overlap=100)
    assert distances[0, 1] == pytest.approx(13 / 658, abs=1e-6)
    assert distances[0, 2] == pytest.approx(0.0, abs=1e-6)
    assert distances[0, 3] == 1.0 and distances[3, 3] == 0.0
    first, second = np.array([0, 0, 1, 2]), np.array([1, 2, 2, 3])
    np.testing.assert_array_equal(pair_p_distances(codes, first, second, 100), distances[first, second])
    between = p_distances(codes[:2], min_overlap=100, others=codes[1:])  # two sets: no diagonal set to 0
    np.testing.assert_array_equal(between, distances[:2, 1:])
    assert between.shape == (2, 3) and between[1, 2] == 1.0


def test_pair_differences_tell_codon_positions_and_transversions_apart():
    reference = COI_5P_REFERENCE[:658]
    codes = aligned_base_codes([reference])
    bases = list(reference)
    # Position 0 of the frame is a third codon position: change it, and position 1 (a first one) by a transversion.
    swap = {"A": "G", "G": "A", "C": "T", "T": "C"}                     # transitions
    across = {"A": "C", "G": "T", "C": "A", "T": "G"}                   # transversions
    offset = int(np.flatnonzero(codes[0] < 4)[0])                       # where the barcode starts in the frame
    third = next(i for i in range(30) if (offset + i) % 3 == 0)
    bases[third] = swap[bases[third]]
    bases[third + 1] = across[bases[third + 1]]
    codes = aligned_base_codes([reference, "".join(bases)])
    distance, slow, transversion = pair_differences(codes, np.array([0]), np.array([1]))[0]
    shared = int(((codes[0] < 4) & (codes[1] < 4)).sum())
    slow_shared = int(((codes[0] < 4) & (codes[1] < 4) & (np.arange(660) % 3 != 0)).sum())
    assert distance == pytest.approx(2 / shared) and transversion == pytest.approx(1 / shared)
    assert slow == pytest.approx(1 / slow_shared)
    np.testing.assert_allclose(distance, pair_p_distances(codes, np.array([0]), np.array([1]))[0], atol=1e-6)


def test_a_pair_exactly_at_the_threshold_is_linked_by_every_path():
    reference = COI_5P_REFERENCE[:650]
    changed = _mutate(reference, 26, random.Random(3))        # 26 of 650: 4 % exactly
    codes = aligned_base_codes([reference, changed])
    pair = pair_p_distances(codes, np.array([0]), np.array([1]))[0]
    assert p_distances(codes)[0, 1] == pair == pytest.approx(0.04)
    for sparse in (False, True):                               # the matrix, and the pairs of the neighbour search
        assert delimit_barcodes([reference, changed], 0.04, sparse=sparse).tolist() == [0, 0]
        assert delimit_barcodes([reference, changed], 0.0399, sparse=sparse).tolist() == [0, 1]


class _FixedDecisions(LearnedLinkage):
    """A learned linkage whose model answers with given probabilities, one per merge of the tree."""

    def __init__(self, probabilities):
        super().__init__()
        self.probabilities = np.asarray(probabilities, dtype=float)

    def features(self, tree, codes):
        return np.arange(len(tree.left), dtype=np.float32)[:, None]

    def same_species_probability(self, features):
        return self.probabilities[features[:, 0].astype(int)]


def test_a_merge_counts_only_when_every_merge_below_it_was_accepted():
    from bioscan5m.delimitation.learned import LinkageTree

    # Leaves 0-3; merge 0 joins 0 and 1 below the floor, merge 1 joins 2 and 3, merge 2 joins the two groups.
    tree = LinkageTree(4, np.array([0, 2, 4]), np.array([1, 3, 5]), np.array([0.005, 0.02, 0.03]),
                       np.array([1, 1, 1, 2, 2, 2, 5]))
    haplotype = np.array([0, 1, 2, 3, 3])                      # the fifth barcode is the fourth's haplotype
    decide = lambda probabilities: _FixedDecisions(probabilities).decide(tree, None, haplotype).tolist()  # noqa
    assert decide([0.0, 0.9, 0.9]) == [0, 0, 0, 0, 0]          # below the floor, merge 0 is never asked
    assert decide([0.0, 0.1, 0.9]) == [0, 0, 1, 2, 2]          # merge 2 is refused with the merge below it
    assert decide([0.0, 0.9, 0.1]) == [0, 0, 1, 1, 1]


def test_training_target_is_whether_the_two_groups_most_common_species_agree():
    from bioscan5m.delimitation.learned import LinkageTree, same_species_merges

    tree = LinkageTree(3, np.array([0, 3]), np.array([1, 2]), np.array([0.02, 0.03]), np.array([2, 1, 3, 3, 6]))
    species = [{"a": 2}, {"a": 1}, {"b": 2, "a": 1}]
    assert same_species_merges(tree, species).tolist() == [True, False]    # 3 of a against mostly b
    assert species == [{"a": 2}, {"a": 1}, {"b": 2, "a": 1}]              # the caller's counts are left alone


def test_single_linkage_tree_is_scipys_below_its_ceiling():
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    rng = random.Random(2)
    founders = [_mutate(COI_5P_REFERENCE[:658], 15 * i, rng) for i in range(4)]    # 2.3 % steps apart
    barcodes = [_mutate(founder, rng.randint(0, 6), rng) for founder in founders for _ in range(8)]
    codes = aligned_base_codes(barcodes)
    tree = single_linkage_tree(codes, barcodes, ceiling=0.05)
    expected = linkage(squareform(p_distances(codes), checks=False).astype(np.float64), "single")[:, 2]
    np.testing.assert_allclose(tree.height, expected[expected <= 0.05], atol=1e-6)
    assert tree.size[-1] == sum(tree.size[group] for group in (tree.left[-1], tree.right[-1]))
    sparse = single_linkage_tree(codes, barcodes, ceiling=0.05, sparse=True)
    for field in ("left", "right", "height"):
        np.testing.assert_array_equal(getattr(sparse, field), getattr(tree, field))


def test_cuts_recover_synthetic_species_and_refuse_bad_options():
    rng = random.Random(1)
    founders = [_mutate(COI_5P_REFERENCE[:658], 60 * i, rng) for i in range(3)]  # species ~9 % apart
    barcodes, truth = [], []
    for species, founder in enumerate(founders):
        for _ in range(6):
            barcodes.append(_mutate(founder, rng.randint(0, 4), rng))  # within 1.2 % of their founder
            truth.append(species)
    for method in ("single", "upgma"):
        clusters = delimit_barcodes(barcodes, 0.03, method=method, sparse=False)
        assert clusters.tolist() == truth  # the three species, numbered by first appearance
    with pytest.raises(ValueError, match="threshold must be a p-distance between 0 and 1"):
        delimit_barcodes(barcodes, 2.0)
    with pytest.raises(ValueError, match="Unknown delimitation method 'ward'"):
        delimit_barcodes(barcodes, 0.02, method="ward")
    with pytest.raises(ValueError, match="sparse=True is for single linkage"):
        delimit_barcodes(barcodes, 0.02, method="upgma", sparse=True)
    with pytest.raises(ValueError, match="1 of the barcodes are missing"):
        delimit_barcodes(barcodes[:3] + [None], 0.02)
    with pytest.raises(ValueError, match="Unknown delimitation method 'ward'"):
        calibrate_threshold(barcodes, truth, method="ward")
    with pytest.raises(ValueError, match="grid of thresholds to calibrate on is empty"):
        calibrate_threshold(barcodes, truth, grid=[])
    with pytest.raises(ValueError, match="18 barcodes but 17 species labels"):
        calibrate_threshold(barcodes, truth[:-1])
    with pytest.raises(ValueError, match="18 barcodes but 17 species labels"):
        LearnedLinkage().fit(barcodes, truth[:-1])
    with pytest.raises(ValueError, match="may not set random_state"):
        LearnedLinkage(boosting={"random_state": 1})


def test_fitting_reads_barcodes_and_labels_by_position_whatever_their_index():
    import pandas as pd

    rng = random.Random(4)
    founders = [COI_5P_REFERENCE[:658], _mutate(COI_5P_REFERENCE[:658], 15, rng)]          # 2.3 % apart
    barcodes = [_mutate(founders[i // 3], 5, rng) for i in range(6)]                       # 1.5 % within
    species = np.array(["a", "a", "a", "b", "b", "b"])
    shuffled = pd.Series(barcodes, index=[0, 3, 1, 4, 2, 5])      # a DataFrame column after sorting, say
    expected = LearnedLinkage().training_merges(barcodes, species)
    misread = LearnedLinkage().training_merges([shuffled[i] for i in range(6)], species)    # read by label
    assert len(expected.same) and expected.same.tolist() != misread.same.tolist()
    merges = LearnedLinkage().training_merges(shuffled, species)
    assert merges.same.tolist() == expected.same.tolist()
    np.testing.assert_array_equal(merges.features, expected.features)


def test_sparse_graph_gives_the_dense_answer_on_real_barcodes(bold_root):

    records = read_metadata(bold_root, split="test_unseen")
    barcodes = records["dna_barcode"].tolist()
    codes = aligned_base_codes(barcodes)
    assert ((codes < 4).sum(axis=1) < 650).any() and ((codes < 4).sum(axis=1) >= 650).any()  # both search paths
    dense = p_distances(codes) <= 0.025
    np.fill_diagonal(dense, False)
    graph = neighbour_graph(codes, barcodes, 0.025, k=8)        # a small k: the widening must do the work
    found = graph.toarray() > 0
    assert not (found & ~dense).any()                            # every edge is a real close pair
    assert (found | found.T)[dense].all()                        # and every close pair is found
    np.testing.assert_array_equal(delimit_barcodes(barcodes, 0.025, sparse=True),
                                  delimit_barcodes(barcodes, 0.025, sparse=False))


def test_calibration_picks_the_best_threshold_of_its_curve(bold_root):

    labelled = read_metadata(bold_root, split="val_unseen")
    calibration = calibrate_threshold(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy())
    assert calibration.threshold == calibration.thresholds[int(np.argmax(calibration.ami))]
    assert calibration.records == len(labelled) and calibration.species == labelled["species"].nunique()
    assert calibration.clusters == sorted(calibration.clusters, reverse=True)   # looser cuts, fewer clusters
    assert max(calibration.ami) > 90


def test_learned_linkage_is_fitted_on_other_records_and_the_same_dense_or_sparse(bold_root):
    from bioscan5m.evaluation.scoring import clustering_agreement

    labelled = read_metadata(bold_root, split="val+val_unseen")
    records = read_metadata(bold_root, split="test_unseen")
    with pytest.raises(ValueError, match="not fitted"):
        LearnedLinkage().delimit(records["dna_barcode"].tolist())
    with pytest.raises(ValueError, match="too few to fit the merge model on"):
        LearnedLinkage().fit(labelled["dna_barcode"].tolist()[:300], labelled["species"].to_numpy()[:300])
    with pytest.raises(ValueError, match="has a species name"):
        LearnedLinkage().fit(["ACGT" * 100], [None])
    model = LearnedLinkage().fit(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy())
    assert model.records == len(labelled) and model.merges > 100
    dense = model.delimit(records["dna_barcode"].tolist(), sparse=False)
    np.testing.assert_array_equal(model.delimit(records["dna_barcode"].tolist(), sparse=True), dense)
    named = records["species"].nunique()
    assert 0.9 * named <= len(set(dense)) <= 1.3 * named
    assert clustering_agreement(records["species"].to_numpy(), dense)["ami"] > 0.97
    model.accept = 0.999                                   # near-certain merges only: more, smaller clusters
    assert len(set(model.delimit(records["dna_barcode"].tolist(), sparse=False))) > len(set(dense))

    # The parts `fit` and `delimit` are made of give their answer; a shallower model is another one.
    merges = LearnedLinkage().training_merges(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy())
    tree = LearnedLinkage().tree(records["dna_barcode"].tolist(), sparse=False)
    np.testing.assert_array_equal(LearnedLinkage().fit_merges(merges).decide(*tree), dense)
    stumps = LearnedLinkage(boosting={"n_estimators": 20, "max_depth": 1}).fit_merges(merges)
    assert all(model.max_depth == 1 and model.n_estimators == 20 for model in stumps.models)
    with pytest.raises(ValueError, match="boosting must be a dict"):
        LearnedLinkage(boosting=[("max_depth", 2)])


def test_delimit_runs_on_records_without_a_name(tmp_path):
    from bioscan5m.delimitation import delimit
    from tests.test_bad_input import _release, _row

    rng = random.Random(5)
    founders = [COI_5P_REFERENCE[:658], _mutate(COI_5P_REFERENCE[:658], 60, rng)]
    rows = [_row(f"PID{i}-24", split="pretrain", barcode=_mutate(founders[i % 2], 2, rng)).replace("Aus bus", "")
            for i in range(6)]
    summary = delimit(_release(tmp_path / "release", rows), tmp_path / "out", split="pretrain", method="single",
                      threshold=0.02, progress=False)
    assert summary["records"] == 6 and summary["clusters"] == 2
    assert not {"species", "genus", "bins", "species_split"} & set(summary)      # no names to compare with
    assert (tmp_path / "out" / "clusters.tsv").read_text().splitlines()[1:] == [f"PID{i}-24\t{i % 2}"
                                                                                for i in range(6)]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["clusters.tsv", "species.tsv",
                                                                          "summary.json"]


def _cli(*arguments):
    return subprocess.run([sys.executable, "-m", "bioscan5m.cli", "delimit", *map(str, arguments)],
                          capture_output=True, text=True, timeout=600)


def test_delimit_command_writes_every_record_and_its_summary(bold_root, tmp_path):
    out = tmp_path / "delimited"
    done = _cli("--data", bold_root, "--split", "test_unseen", "--method", "single", "--calibrate-on", "val_unseen",
                "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "putative species:" in done.stdout and "species AMI:" in done.stdout
    lines = (out / "clusters.tsv").read_text().splitlines()
    records = read_metadata(bold_root, split="test_unseen")
    assert lines[0] == "processid\tcluster" and [line.split("\t")[0] for line in lines[1:]] == list(records.processid)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["splits"] == "val_unseen"
    assert summary["threshold"] in summary["calibration"]["thresholds"]
    assert summary["records"] == len(records) and summary["species"]["named"] == records["species"].nunique()
    assert "ami_with_clusters" in summary["bins"]
    assert (out / "species.tsv").read_text().startswith("species\trecords\tputative_species\tclusters")
    assert (out / "barcode_gap.png").read_bytes()[:4] == b"\x89PNG"

    again = _cli("--data", bold_root, "--split", "test_unseen", "--method", "upgma", "--threshold", "0.02",
                 "--out", out)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
    leak = _cli("--data", bold_root, "--split", "test_unseen", "--calibrate-on", "val+test_unseen", "--out",
                tmp_path / "x")
    assert leak.returncode != 0 and "shares test_unseen with --split" in leak.stderr
    assert "Traceback" not in leak.stderr and not (tmp_path / "x").exists()
    bad = _cli("--data", bold_root, "--threshold", "2", "--out", tmp_path / "y")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr
    untuned = _cli("--data", bold_root, "--threshold", "0.02", "--out", tmp_path / "z")   # the learned default
    assert untuned.returncode != 0 and "no threshold" in untuned.stderr and "Traceback" not in untuned.stderr


def test_delimit_command_fits_the_learned_linkage_by_default(bold_root, tmp_path):
    out = tmp_path / "learned"
    done = _cli("--data", bold_root, "--split", "test_unseen", "--calibrate-on", "val+val_unseen", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "merge model: fitted on" in done.stdout and "threshold" not in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "learned" and summary["threshold"] is None and summary["calibration"] is None
    calibration, records = (read_metadata(bold_root, split=split) for split in ("val+val_unseen", "test_unseen"))
    assert summary["merge_model"]["records"] == calibration["species"].notna().sum() and summary["species"]["ami"] > 97
    assert len((out / "clusters.tsv").read_text().splitlines()) - 1 == len(records)


@pytest.mark.slow
def test_a_delimit_killed_while_writing_leaves_nothing_that_loads_and_is_cleaned_next_time(bold_root, tmp_path):
    from bioscan5m.delimitation import delimit
    from tests.processes import kill_when

    out = tmp_path / "d"
    process = subprocess.Popen([sys.executable, "-m", "bioscan5m.cli", "delimit", "--data", str(bold_root),
                                "--split", "test+test_unseen", "--method", "upgma", "--threshold", "0.02", "--out",
                                str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(process, lambda: any(tmp_path.glob(".d.partial-*/summary.json")))   # while the figure is drawn
    assert not out.exists() and len(list(tmp_path.glob(".d.partial-*"))) == 1
    delimit(bold_root, out, split="test_unseen", method="single", threshold=0.02, progress=False)
    assert [path.name for path in tmp_path.iterdir()] == ["d"]    # the killed run's staging is gone
    written = (out / "clusters.tsv").read_text().splitlines()
    assert len(written) - 1 == len(read_metadata(bold_root, split="test_unseen"))
