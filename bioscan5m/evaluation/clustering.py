"""Zero-shot clustering, the BIOSCAN-5M protocol: embeddings -> UMAP (50 dims, 30 neighbours, min_dist 0,
euclidean) -> Ward agglomerative clustering with the true number of species (or a distance threshold) -> AMI
at every rank, each scored against the same clustering.

Exact Ward (scipy) needs the condensed distance matrix, 4·n² bytes in float64 halves: 0.8 GB at 14 k points but
40 GB at 100 k. Above ``exact_ward_limit`` points Ward is therefore run on a k-nearest-neighbour connectivity
graph of the UMAP space (memory linear in n), which merges only neighbouring clusters; the result records which
variant ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .scoring import clustering_agreement

#: Largest number of points clustered with exact Ward (condensed distance matrix ~ 4·n² bytes ≈ 6.4 GB at 40 k).
EXACT_WARD_LIMIT = 40_000


@dataclass
class ClusteringResult:
    """Cluster ids per record and the agreement with the true labels at every rank given."""

    cluster_ids: np.ndarray
    scores: dict[str, dict]          # rank -> {ami, ari, nmi, num_references, num_missing}
    n_clusters: int
    ward: str                        # "exact" or "knn-connectivity"
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ami(self) -> dict[str, float]:
        return {rank: s["ami"] for rank, s in self.scores.items()}


def check_embeddings(embeddings, name: str = "embeddings") -> np.ndarray:
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (records x dimensions); got shape {embeddings.shape}.")
    if not np.isfinite(embeddings).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return embeddings.astype(np.float32, copy=False)


def reduce_umap(embeddings, n_components: int = 50, n_neighbors: int = 30, min_dist: float = 0.0,
                metric: str = "euclidean", seed: int | None = 0) -> np.ndarray:
    """UMAP reduction with the zero-shot clustering settings (Lowe et al.; BIOSCAN-5M)."""
    import umap

    embeddings = check_embeddings(embeddings)
    n = len(embeddings)
    if n <= n_components + 1:
        raise ValueError(f"UMAP to {n_components} dimensions needs more than {n_components + 1} points; got {n}.")
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                        metric=metric, random_state=seed, n_jobs=1 if seed is not None else -1)
    return reducer.fit_transform(embeddings).astype(np.float32)


def ward_clustering(points, n_clusters: int | None = None, distance_threshold: float | None = None,
                    exact_ward_limit: int = EXACT_WARD_LIMIT, connectivity_neighbors: int = 30) -> tuple[np.ndarray, str]:
    """Ward agglomerative clustering into ``n_clusters`` clusters or cut at ``distance_threshold``.

    Returns the cluster id per point and which Ward variant ran (``"exact"`` or ``"knn-connectivity"``).
    """
    from sklearn.cluster import AgglomerativeClustering

    points = check_embeddings(points, "points")
    if (n_clusters is None) == (distance_threshold is None):
        raise ValueError("give exactly one of n_clusters and distance_threshold.")
    if n_clusters is not None and not 1 <= n_clusters <= len(points):
        raise ValueError(f"n_clusters must be between 1 and the number of points ({len(points)}); got {n_clusters}.")
    connectivity, variant = None, "exact"
    if len(points) > exact_ward_limit:
        from sklearn.neighbors import kneighbors_graph

        connectivity = kneighbors_graph(points, n_neighbors=connectivity_neighbors, include_self=False, n_jobs=-1)
        variant = "knn-connectivity"
    model = AgglomerativeClustering(n_clusters=n_clusters, distance_threshold=distance_threshold, linkage="ward",
                                    metric="euclidean", connectivity=connectivity,
                                    compute_full_tree="auto" if distance_threshold is None else True)
    return model.fit_predict(points.astype(np.float64)), variant


def zero_shot_clustering(embeddings, labels: Mapping[str, np.ndarray], n_clusters: int | str = "species",
                         distance_threshold: float | None = None, n_components: int = 50, n_neighbors: int = 30,
                         min_dist: float = 0.0, metric: str = "euclidean", seed: int | None = 0,
                         exact_ward_limit: int = EXACT_WARD_LIMIT) -> ClusteringResult:
    """The zero-shot clustering benchmark on one set of embeddings.

    Args:
        embeddings: ``(n, d)`` array, one row per record.
        labels: rank -> ``(n,)`` true labels (``-1``/``""``/None = missing, left out of that rank's score).
        n_clusters: a number of clusters, or a rank whose number of distinct labels sets it (default ``"species"``,
            "AC with known C" as in the paper). Ignored when ``distance_threshold`` is given.
        distance_threshold: cut the Ward tree at this linkage distance instead.
        n_components, n_neighbors, min_dist, metric: UMAP settings (protocol defaults); ``n_components=0`` skips UMAP.
        seed: UMAP random state (0 as in the paper's runs; None = faster, non-deterministic).
    """
    embeddings = check_embeddings(embeddings)
    if not labels:
        raise ValueError("labels is empty: give at least one rank's labels to score the clustering against.")
    for rank, values in labels.items():
        if len(values) != len(embeddings):
            raise ValueError(f"labels[{rank!r}] has {len(values)} entries but embeddings has {len(embeddings)} rows.")
    if distance_threshold is None and isinstance(n_clusters, str):
        if n_clusters not in labels:
            raise ValueError(f"n_clusters={n_clusters!r} names a rank absent from labels ({', '.join(labels)}).")
        from .scoring import is_missing

        values = np.asarray(labels[n_clusters])
        rank, n_clusters = n_clusters, len(set(values[~is_missing(values)].tolist()))
        if not n_clusters:
            raise ValueError(f"None of the records has a {rank} label to set the number of clusters by; give the "
                             "number of clusters (--n-clusters) or a distance threshold.")
    seconds = {}
    start = time.perf_counter()
    points = embeddings if n_components == 0 else reduce_umap(embeddings, n_components, n_neighbors, min_dist, metric, seed)
    seconds["umap"] = time.perf_counter() - start
    start = time.perf_counter()
    cluster_ids, variant = ward_clustering(points, None if distance_threshold is not None else int(n_clusters),
                                           distance_threshold, exact_ward_limit=exact_ward_limit)
    seconds["ward"] = time.perf_counter() - start
    scores = {rank: clustering_agreement(values, cluster_ids) for rank, values in labels.items()
              if not _all_missing(values)}
    return ClusteringResult(cluster_ids, scores, int(cluster_ids.max()) + 1, variant, seconds)


def _all_missing(values) -> bool:
    from .scoring import is_missing

    return bool(is_missing(np.asarray(values)).all())


def plot_umap_2d(embeddings, colour_labels, path, title: str = "UMAP of embeddings", legend_title: str = "order",
                 seed: int | None = 0, n_neighbors: int = 30, max_legend: int = 10) -> Path:
    """A 2-D UMAP of the embeddings, one colour per label (e.g. order), saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    embeddings = check_embeddings(embeddings)
    colour_labels = np.asarray(colour_labels, dtype=object)
    if len(colour_labels) != len(embeddings):
        raise ValueError(f"colour_labels has {len(colour_labels)} entries but embeddings has {len(embeddings)} rows.")
    xy = reduce_umap(embeddings, n_components=2, n_neighbors=n_neighbors, min_dist=0.1, seed=seed)
    names, counts = np.unique(colour_labels.astype(str), return_counts=True)
    order = names[np.argsort(-counts)]
    fig, ax = plt.subplots(figsize=(8, 7), dpi=120)
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(order):
        rows = colour_labels.astype(str) == name
        shown = i < max_legend and name not in ("", "None", "nan")
        ax.scatter(xy[rows, 0], xy[rows, 1], s=2, alpha=0.6, linewidths=0,
                   color=cmap(i) if shown else "lightgrey", label=f"{name} ({rows.sum()})" if shown else None)
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(title=legend_title, markerscale=5, fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
