"""Retrieval and probes: FAISS against brute force and scikit-learn, CLIBD scoring by hand, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from bioscan5m import read_metadata
from bioscan5m.embedding import kmer_embeddings
from bioscan5m.evaluation.probes import knn_predict, knn_probe, linear_probe
from bioscan5m.evaluation.retrieval import evaluate_retrieval, retrieval_accuracy, search


@pytest.fixture(scope="module")
def random_vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 32)).astype(np.float32), rng.normal(size=(2000, 32)).astype(np.float32)


def test_faiss_matches_numpy_brute_force(random_vectors):
    queries, keys = random_vectors
    faiss_scores, faiss_indices = search(queries, keys, k=5, method="faiss")
    numpy_scores, numpy_indices = search(queries, keys, k=5, method="numpy", batch_size=64)
    np.testing.assert_array_equal(faiss_indices, numpy_indices)
    np.testing.assert_allclose(faiss_scores, numpy_scores, atol=1e-5)
    # Cosine: the scores are those of the normalised vectors, best first.
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = np.sort(unit(queries) @ unit(keys).T, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(faiss_scores, expected, atol=1e-5)


def test_search_is_cosine_and_ivf_with_all_cells_is_exact(random_vectors):
    queries, keys = random_vectors
    _, flat = search(queries, keys, k=3)
    _, scaled = search(queries, keys * np.linspace(0.1, 10, len(keys))[:, None].astype(np.float32), k=3)
    np.testing.assert_array_equal(flat, scaled)
    _, ivf = search(queries, keys, k=3, index="ivf", nlist=16, nprobe=16)
    np.testing.assert_array_equal(flat, ivf)


def test_hand_computed_retrieval_scores():
    key_labels = {"species": np.array([10, 11, 12, 10])}
    # Query 0 (species 10): hits 1, 0 -> wrong at top-1, right at top-2. Query 1 (11): hit 1 -> right.
    # Query 2 (12): hits 0, 3 -> wrong at both.
    indices = np.array([[1, 0], [1, 2], [0, 3]])
    result = retrieval_accuracy(indices, {"species": [10, 11, 12]}, key_labels, top_k=(1, 2))["species"]
    assert result["micro_top1"] == pytest.approx(1 / 3) and result["micro_top2"] == pytest.approx(2 / 3)
    grouped = retrieval_accuracy(indices, {"species": [10, 11, 12]}, key_labels, top_k=(1,),
                                 groups=["seen", "seen", "unseen"])["species"]
    assert grouped["seen"]["macro_top1"] == pytest.approx(0.5) and grouped["unseen"]["macro_top1"] == 0.0
    assert grouped["harmonic_mean_macro_top1"] == 0.0


@pytest.fixture(scope="module")
def real_sets(bold_root):
    frame = read_metadata(bold_root, split="train+test+test_unseen")
    frame = frame.groupby("split").head(700)
    sets = {}
    for split in ("train", "test", "test_unseen"):
        part = frame[frame["split"] == split]
        sets[split] = (kmer_embeddings(part["dna_barcode"].str.rstrip("N").tolist(), svd_dims=None),
                       {r: part[f"{r}_index"].to_numpy() for r in ("order", "family", "genus", "species")})
    return sets


def test_retrieval_on_real_barcodes_matches_sklearn_nearest_neighbour(real_sets):
    keys = real_sets["train"]
    result = evaluate_retrieval({"seen": real_sets["test"], "unseen": real_sets["test_unseen"]}, keys, top_k=(1, 3))
    for name, split in (("seen", "test"), ("unseen", "test_unseen")):
        neighbours = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(keys[0], keys[1]["genus"])
        distance, index = neighbours.kneighbors(real_sets[split][0])
        # Ties between identical keys may resolve differently; both pick a key at the same distance.
        _, ours = search(real_sets[split][0], keys[0], k=1)
        np.testing.assert_allclose(1 - distance[:, 0], (real_sets[split][0] / np.linalg.norm(real_sets[split][0], axis=1, keepdims=True)
                                                        * (keys[0][ours[:, 0]] / np.linalg.norm(keys[0][ours[:, 0]], axis=1, keepdims=True))).sum(1), atol=1e-5)
        expected = np.mean(keys[1]["genus"][ours[:, 0]] == real_sets[split][1]["genus"])
        assert result["genus"][name]["micro_top1"] == pytest.approx(expected)
        assert result["genus"][name]["micro_top1"] <= result["genus"][name]["micro_top3"]
    assert set(result) == {"order", "family", "genus", "species"}


def test_knn_probe_agrees_with_sklearn(real_sets):
    train, test = real_sets["train"], real_sets["test"]
    # Distinct train barcodes only, so that no two neighbours tie and the 1-NN is unique.
    _, first = np.unique(train[0], axis=0, return_index=True)
    x, y = train[0][first], train[1]["species"][first]
    expected = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(x, y).predict(test[0])
    np.testing.assert_array_equal(knn_predict(x, y, test[0]), expected)
    result = knn_probe(x, y, test[0], test[1]["species"])
    assert result["micro_top1"] == pytest.approx(np.mean(expected == test[1]["species"]))


def test_knn_majority_vote_by_hand():
    keys = np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1]], dtype=np.float32)
    labels = np.array([5, 6, 6, 7])
    # Nearest three of [1, 0]: labels 5, 6, 6 -> 6 wins the vote although 5 is nearest.
    assert knn_predict(keys, labels, np.array([[1, 0]], dtype=np.float32), k=3)[0] == 6
    assert knn_predict(keys, labels, np.array([[1, 0]], dtype=np.float32), k=1)[0] == 5


def test_linear_probe_separates_blobs_and_counts_unseen_classes_wrong():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=600, centers=4, n_features=8, cluster_std=0.3, random_state=1)
    result = linear_probe(x[:400], y[:400], x[400:], y[400:], epochs=30, learning_rate=1e-2, progress=False)
    assert result["micro_top1"] == pytest.approx(1.0)
    unseen = linear_probe(x[:400], y[:400], x[400:], np.where(y[400:] == 0, 99, y[400:]), epochs=30,
                          learning_rate=1e-2, progress=False)
    assert unseen["micro_top1"] == pytest.approx(np.mean(y[400:] != 0))


def test_bad_input_is_named(random_vectors):
    queries, keys = random_vectors
    with pytest.raises(ValueError, match="queries have 16 dimensions but keys have 32"):
        search(queries[:, :16], keys)
    with pytest.raises(ValueError, match="k must be between 1 and the number of keys"):
        search(queries, keys[:3], k=5)
    with pytest.raises(ValueError, match="Unknown search method 'annoy'"):
        search(queries, keys, method="annoy")
    with pytest.raises(ValueError, match="train embeddings has 2000 rows but 3 labels"):
        knn_probe(keys, [1, 2, 3], queries, np.zeros(len(queries)))
