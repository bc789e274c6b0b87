"""The shipped evaluate modules: loaded offline, checked against scikit-learn and hand-computed cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import evaluate
import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, adjusted_mutual_info_score, adjusted_rand_score, balanced_accuracy_score,
                             normalized_mutual_info_score, top_k_accuracy_score)

from bioscan5m import evaluation
from bioscan5m.data.release import TARGET_COLUMNS
from bioscan5m.evaluation.metrics.ami import clustering_scores
from bioscan5m.evaluation.metrics.taxonomic_accuracy import accuracy_scores
from bioscan5m.evaluation.scoring import clustering_agreement, harmonic_mean, topk_accuracy


@pytest.fixture(scope="module")
def accuracy():
    return evaluation.load("taxonomic_accuracy")


@pytest.fixture(scope="module")
def ami():
    return evaluation.load("ami")


def test_metrics_are_shipped_and_load_by_path():
    assert evaluation.metric_names() == ["ami", "taxonomic_accuracy"]
    module = evaluate.load(str(evaluation.metric_path("ami")))
    assert module.compute(predictions=[0, 0, 1], references=[5, 5, 7])["ami"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Unknown metric 'f1'.*ami, taxonomic_accuracy"):
        evaluation.load("f1")


def test_hand_computed_micro_macro_and_per_class(accuracy):
    # Aedes: 3 records, 2 right; Culex: 1 record, right. Micro 3/4; macro (2/3 + 1)/2.
    result = accuracy.compute(predictions=["Aedes", "Aedes", "Culex", "Culex"],
                              references=["Aedes", "Aedes", "Aedes", "Culex"], rank="genus")
    assert result["rank"] == "genus"
    assert result["micro_top1"] == pytest.approx(0.75)
    assert result["macro_top1"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["per_class_top1"] == pytest.approx({"Aedes": 2 / 3, "Culex": 1.0})
    assert result["num_classes"] == 2


def test_macro_averages_only_classes_present_in_references(accuracy):
    # Label 9 is only ever predicted, never a reference: it must not enter the macro average.
    result = accuracy.compute(predictions=[9, 1, 2], references=[1, 1, 2])
    assert result["macro_top1"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["num_classes"] == 2


def test_agrees_with_sklearn_on_random_labels(accuracy):
    rng = np.random.default_rng(0)
    references = rng.integers(0, 30, 500)
    predictions = np.where(rng.random(500) < 0.6, references, rng.integers(0, 30, 500))
    result = accuracy.compute(predictions=predictions.tolist(), references=references.tolist())
    assert result["micro_top1"] == pytest.approx(accuracy_score(references, predictions))
    assert result["macro_top1"] == pytest.approx(balanced_accuracy_score(references, predictions))


def test_top_k_agrees_with_sklearn(accuracy):
    rng = np.random.default_rng(1)
    scores = rng.random((300, 10))
    references = rng.integers(0, 10, 300)
    ranked = np.argsort(-scores, axis=1)[:, :5]
    result = accuracy.compute(predictions=ranked.tolist(), references=references.tolist(), top_k=[1, 3, 5])
    for k in (1, 3, 5):
        assert result[f"micro_top{k}"] == pytest.approx(top_k_accuracy_score(references, scores, k=k, labels=np.arange(10)))
    assert result["micro_top1"] <= result["micro_top3"] <= result["micro_top5"]


def test_string_top_k_and_missing_references(accuracy):
    result = accuracy.compute(predictions=[["a", "b"], ["b", "a"], ["c", "c"], ["a", "a"]],
                              references=["a", "a", "b", ""], top_k=[1, 2], per_class=False)
    assert result["num_missing"] == 1 and result["num_references"] == 3
    assert result["micro_top1"] == pytest.approx(1 / 3)
    assert result["micro_top2"] == pytest.approx(2 / 3)
    assert result["macro_top2"] == pytest.approx((1.0 + 0.0) / 2)
    assert "per_class_top1" not in result


def test_seen_unseen_harmonic_mean(accuracy):
    result = accuracy.compute(predictions=[1, 1, 2, 3, 3, 0], references=[1, 1, 1, 3, 3, 3],
                              groups=["seen"] * 3 + ["unseen"] * 3)
    seen, unseen = result["seen"]["micro_top1"], result["unseen"]["micro_top1"]
    assert (seen, unseen) == pytest.approx((2 / 3, 2 / 3))
    assert result["harmonic_mean_micro_top1"] == pytest.approx(2 * seen * unseen / (seen + unseen))
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.0, 1.0]) == 0.0


def test_add_batch_then_compute(accuracy):
    accuracy.add_batch(predictions=[1, 2], references=[1, 1])
    accuracy.add_batch(predictions=[3], references=[3])
    assert accuracy.compute()["micro_top1"] == pytest.approx(2 / 3)


def test_bad_input_is_named(accuracy):
    with pytest.raises(ValueError, match="Unknown rank 'kingdom'"):
        accuracy.compute(predictions=[1], references=[1], rank="kingdom")
    with pytest.raises(ValueError, match="top-5 accuracy needs at least 5 ranked predictions"):
        accuracy.compute(predictions=[[1, 2]], references=[1], top_k=[5])
    with pytest.raises(ValueError, match="every reference label is missing"):
        accuracy.compute(predictions=[1, 2], references=[-1, -1])
    with pytest.raises(ValueError):
        accuracy.compute(predictions=[1, 2, 3], references=[1, 2])


def test_ami_matches_sklearn(ami):
    rng = np.random.default_rng(2)
    references = rng.integers(0, 12, 400)
    predictions = np.where(rng.random(400) < 0.7, references, rng.integers(0, 15, 400))
    result = ami.compute(predictions=predictions.tolist(), references=references.tolist(), rank="species")
    assert result["ami"] == pytest.approx(adjusted_mutual_info_score(references, predictions))
    assert result["ari"] == pytest.approx(adjusted_rand_score(references, predictions))
    assert result["nmi"] == pytest.approx(normalized_mutual_info_score(references, predictions))
    geometric = ami.compute(predictions=predictions.tolist(), references=references.tolist(), average_method="geometric")
    assert geometric["ami"] == pytest.approx(adjusted_mutual_info_score(references, predictions, average_method="geometric"))


def test_ami_hand_cases_and_missing_labels(ami):
    # A relabelled perfect clustering scores 1; splitting every class in two scores below 1.
    assert ami.compute(predictions=[7, 7, 3, 3], references=["x", "x", "y", "y"])["ami"] == pytest.approx(1.0)
    assert ami.compute(predictions=[0, 1, 2, 3], references=["x", "x", "y", "y"])["ami"] < 1.0
    # Records without a label at this rank are left out, not treated as one big class.
    result = ami.compute(predictions=[0, 0, 1, 1, 2, 2], references=[5, 5, 6, 6, -1, -1])
    assert result["ami"] == pytest.approx(1.0) and result["num_missing"] == 2
    with pytest.raises(ValueError, match="Unknown rank"):
        ami.compute(predictions=[0], references=[0], rank="kingdom")


STANDALONE = """
import json, sys
sys.modules["bioscan5m"] = None          # the package cannot be imported
import evaluate
folder = sys.argv[1]
accuracy = evaluate.load(folder + "/taxonomic_accuracy")
ami = evaluate.load(folder + "/ami")
print(json.dumps({
    "accuracy": accuracy.compute(predictions=[["a", "b"], ["b", "a"], ["c", "c"], ["a", "a"]],
                                 references=[None, "a", "b", "a"], top_k=[1, 2], rank="genus"),
    "ami": ami.compute(predictions=[0, 0, 1, 1, 2, 2], references=[None, 5, 6, 6, 7, 7], rank="species"),
    "bioscan5m_imported": [name for name, module in sys.modules.items() if name.startswith("bioscan5m") and module],
}))
"""


def test_metric_folders_stand_alone_without_the_package(tmp_path):
    # The folders as they would be pushed to the Hub: copied elsewhere, loaded where bioscan5m cannot be imported.
    shutil.copytree(evaluation.METRICS_DIR, tmp_path / "metrics", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("ami", "taxonomic_accuracy"):
        card = (tmp_path / "metrics" / name / "README.md").read_text()
        assert card.startswith("---\n") and "## How to Use" in card and "## Citation" in card
    done = subprocess.run([sys.executable, "-c", STANDALONE, str(tmp_path / "metrics")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bioscan5m_imported"] == []
    expected = topk_accuracy([["b", "a"], ["c", "c"], ["a", "a"]], ["a", "b", "a"], top_k=[1, 2], rank="genus")
    assert result["accuracy"] == {**expected, "num_missing": 1}  # the same code: exactly equal
    assert result["ami"] == pytest.approx({**clustering_agreement([5, 6, 6, 7, 7], [0, 1, 1, 2, 2]), "rank": "species",
                                           "num_missing": 1})


def test_none_as_the_first_reference_is_missing():
    accuracy, ami = evaluation.load("taxonomic_accuracy"), evaluation.load("ami")  # fresh: no earlier batch's format
    for references in ([None, "a", "b"], ["", "a", "b"]):
        result = accuracy.compute(predictions=["x", "a", "b"], references=references)
        assert (result["micro_top1"], result["num_missing"]) == (1.0, 1)
    assert accuracy.compute(predictions=[9, 1, 2], references=[None, 1, 2])["num_missing"] == 1
    assert ami.compute(predictions=[0, 0, 1], references=[None, "a", "b"])["num_missing"] == 1
    accuracy.add(prediction="a", reference=None)
    accuracy.add(prediction="a", reference="a")
    assert accuracy.compute()["num_missing"] == 1


def test_each_metric_folder_carries_the_same_label_rules():
    # Each folder stands alone, so each has its copy of the rank list and of what counts as missing.
    assert accuracy_scores.RANKS == clustering_scores.RANKS == TARGET_COLUMNS
    labels = np.array([None, "", "a", float("nan"), -1, 3], dtype=object)
    assert accuracy_scores.is_missing(labels).tolist() == clustering_scores.is_missing(labels).tolist() \
        == [True, True, False, True, True, False]
