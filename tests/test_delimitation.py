"""Species delimitation: p-distances, the two cuts, the sparse graph equal to the dense one, calibration on other
records, and the delimit command's files and refusals."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from bioscan5m.delimitation import (calibrate_threshold, delimit_barcodes, neighbour_graph, p_distances,
                                    pair_p_distances)
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
    np.testing.assert_allclose(pair_p_distances(codes, first, second, 100), distances[first, second], atol=1e-6)


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
        assert len(set(clusters)) == 3 and all(len(set(clusters[np.array(truth) == s])) == 1 for s in range(3))
        assert clusters[0] == 0  # numbered by first appearance
    with pytest.raises(ValueError, match="threshold must be a p-distance between 0 and 1"):
        delimit_barcodes(barcodes, 2.0)
    with pytest.raises(ValueError, match="Unknown delimitation method 'ward'"):
        delimit_barcodes(barcodes, 0.02, method="ward")


def test_sparse_graph_gives_the_dense_answer_on_real_barcodes(bold_root):
    from bioscan5m import read_metadata

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
    from bioscan5m import read_metadata

    labelled = read_metadata(bold_root, split="val_unseen")
    calibration = calibrate_threshold(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy())
    assert calibration.threshold == calibration.thresholds[int(np.argmax(calibration.ami))]
    assert calibration.records == len(labelled) and calibration.species == labelled["species"].nunique()
    assert calibration.clusters == sorted(calibration.clusters, reverse=True)   # looser cuts, fewer clusters
    assert max(calibration.ami) > 90


def _cli(*arguments):
    return subprocess.run([sys.executable, "-m", "bioscan5m.cli", "delimit", *map(str, arguments)],
                          capture_output=True, text=True, timeout=600)


def test_delimit_command_writes_every_record_and_its_summary(bold_root, tmp_path):
    out = tmp_path / "delimited"
    done = _cli("--data", bold_root, "--split", "test_unseen", "--calibrate-on", "val_unseen", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "putative species:" in done.stdout and "species AMI:" in done.stdout
    lines = (out / "clusters.tsv").read_text().splitlines()
    assert lines[0] == "processid\tcluster" and len(lines) - 1 == 1_971   # every record of test_unseen
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["splits"] == "val_unseen" and summary["threshold"] in summary["calibration"]["thresholds"]
    assert summary["records"] == 1_971 and summary["species"]["named"] == 72 and "ami_with_clusters" in summary["bins"]
    assert (out / "species.tsv").read_text().startswith("species\trecords\tputative_species\tclusters")
    assert (out / "barcode_gap.png").read_bytes()[:4] == b"\x89PNG"

    again = _cli("--data", bold_root, "--split", "test_unseen", "--threshold", "0.02", "--out", out)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
    leak = _cli("--data", bold_root, "--split", "test_unseen", "--calibrate-on", "val+test_unseen", "--out",
                tmp_path / "x")
    assert leak.returncode != 0 and "shares test_unseen with --split" in leak.stderr
    assert "Traceback" not in leak.stderr and not (tmp_path / "x").exists()
    bad = _cli("--data", bold_root, "--threshold", "2", "--out", tmp_path / "y")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr


def test_a_killed_delimit_leaves_nothing(bold_root, tmp_path):
    import time

    process = subprocess.Popen([sys.executable, "-m", "bioscan5m.cli", "delimit", "--data", str(bold_root),
                                "--split", "test+test_unseen", "--threshold", "0.02", "--out", str(tmp_path / "d")])
    time.sleep(4)
    process.kill()
    process.wait()
    assert list(tmp_path.iterdir()) == []   # nothing that loads as complete, no staging left
