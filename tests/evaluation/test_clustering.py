"""Zero-shot clustering: Ward on known structure, the UMAP protocol on real barcodes, the plot, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_mutual_info_score

from bioscan5m import read_metadata
from bioscan5m.embedding import kmer_embeddings
from bioscan5m.evaluation.clustering import plot_umap_2d, ward_clustering, zero_shot_clustering


@pytest.fixture(scope="module")
def blobs():
    points, labels = make_blobs(n_samples=400, centers=8, n_features=16, cluster_std=0.5, random_state=0)
    return points.astype(np.float32), labels


def test_exact_ward_recovers_separated_clusters(blobs):
    points, labels = blobs
    clusters, variant = ward_clustering(points, n_clusters=8)
    assert variant == "exact"
    assert adjusted_mutual_info_score(labels, clusters) == pytest.approx(1.0)


def test_connectivity_ward_above_the_exact_limit(blobs):
    points, labels = blobs
    clusters, variant = ward_clustering(points, n_clusters=8, exact_ward_limit=100)
    assert variant == "knn-connectivity"
    assert adjusted_mutual_info_score(labels, clusters) == pytest.approx(1.0)


def test_distance_threshold_cuts_between_clusters(blobs):
    points, labels = blobs
    few, _ = ward_clustering(points, distance_threshold=1e6)
    many, _ = ward_clustering(points, distance_threshold=1e-6)
    assert len(set(few)) == 1 and len(set(many)) == len(points)


@pytest.fixture(scope="module")
def real_records(bold_root):
    frame = read_metadata(bold_root, split="test")
    species = frame["species_index"].drop_duplicates().head(25)
    frame = frame[frame["species_index"].isin(species)].head(500)
    sequences = [s.rstrip("N") for s in frame["dna_barcode"]]
    labels = {r: frame[f"{r}_index"].to_numpy() for r in ("order", "family", "subfamily", "genus", "species")}
    return sequences, labels, frame["order"].astype(str).to_numpy()


def test_zero_shot_clustering_on_real_barcodes(real_records):
    sequences, labels, _ = real_records
    embeddings = kmer_embeddings(sequences, k=6, svd_dims=64)
    result = zero_shot_clustering(embeddings, labels, n_components=10, n_neighbors=15)
    assert result.n_clusters == len(set(labels["species"]))
    # Every rank is scored against the same clustering.
    for rank, values in labels.items():
        present = values >= 0
        assert result.ami[rank] == pytest.approx(adjusted_mutual_info_score(values[present], result.cluster_ids[present]))
    assert result.scores["subfamily"]["num_missing"] == int((labels["subfamily"] < 0).sum())
    # k-mer profiles separate species far better than chance.
    shuffled = np.random.default_rng(0).permutation(result.cluster_ids)
    assert result.ami["species"] > 0.8 > adjusted_mutual_info_score(labels["species"], shuffled) + 0.5


def test_umap_plot_is_a_png(real_records, tmp_path):
    sequences, _, orders = real_records
    path = plot_umap_2d(kmer_embeddings(sequences, svd_dims=32), orders, tmp_path / "umap.png", n_neighbors=15)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_bad_input_is_named(blobs):
    points, labels = blobs
    with pytest.raises(ValueError, match=r"labels\['species'\] has 3 entries but embeddings has 400 rows"):
        zero_shot_clustering(points, {"species": labels[:3]})
    with pytest.raises(ValueError, match="names a rank absent from labels"):
        zero_shot_clustering(points, {"genus": labels}, n_clusters="species")
    with pytest.raises(ValueError, match="non-empty 2-D array"):
        zero_shot_clustering(np.zeros((0, 4)), {"species": []})
    with pytest.raises(ValueError, match="NaN or infinite"):
        ward_clustering(np.full((5, 2), np.nan), n_clusters=2)
    with pytest.raises(ValueError, match="exactly one of n_clusters and distance_threshold"):
        ward_clustering(points, n_clusters=2, distance_threshold=1.0)
    with pytest.raises(ValueError, match=r"None of the records has a species label .* \(--n-clusters\)"):
        zero_shot_clustering(points, {"species": np.array([None] * len(points), dtype=object)})
