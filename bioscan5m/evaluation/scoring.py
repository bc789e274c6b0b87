"""Scores on plain labels: top-k taxonomic accuracy (micro, macro, per class) and clustering agreement.

The logic lives in the shipped metric folders, which must stand alone (``evaluate.load`` of a folder, or a metric
repo on the Hub, without this package). This module is the package's way in without importing ``evaluate``, so
retrieval, probes, clustering and the benchmark report score exactly as the metrics do.
"""

from .metrics.ami.clustering_scores import clustering_agreement
from .metrics.taxonomic_accuracy.accuracy_scores import (
    check_rank,
    grouped_topk_accuracy,
    harmonic_mean,
    is_missing,
    topk_accuracy,
)

__all__ = ["check_rank", "clustering_agreement", "grouped_topk_accuracy", "harmonic_mean", "is_missing",
           "topk_accuracy"]
