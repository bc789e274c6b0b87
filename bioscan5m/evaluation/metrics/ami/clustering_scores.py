"""Clustering agreement (AMI, ARI, NMI) between true labels and cluster ids, on plain labels.

This file belongs to the ``ami`` metric folder, which stands alone: ``evaluate.load`` copies it beside the metric
script, and it imports only numpy and scikit-learn. ``bioscan5m.evaluation.scoring`` imports it from here, so
zero-shot clustering and the benchmark score exactly as the metric does. The label rules (ranks, what counts as
missing) are those of ``taxonomic_accuracy/accuracy_scores.py``; each metric folder carries its own copy.
"""

from __future__ import annotations

import numpy as np

#: The ranks a label can belong to (the release's target columns).
RANKS = ("phylum", "class", "order", "family", "subfamily", "genus", "species", "dna_bin")


def check_rank(rank: str | None) -> None:
    if rank is not None and rank not in RANKS:
        raise ValueError(f"Unknown rank {rank!r}; choose one of {', '.join(RANKS)}.")


def is_missing(labels: np.ndarray) -> np.ndarray:
    """Missing labels: ``None``, NaN, ``""`` (text) or a negative index (the ``{rank}_index`` convention)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        return labels < 0
    if labels.dtype.kind == "f":
        return np.isnan(labels) | (labels < 0)
    return np.array([v is None or v == "" or (isinstance(v, float) and np.isnan(v))
                     or (isinstance(v, (int, np.integer)) and v < 0) for v in labels.ravel()],
                    dtype=bool).reshape(labels.shape)


def has_text(values) -> bool:
    first = values[0] if len(values) else None
    while isinstance(first, (list, tuple, np.ndarray)) and len(first):
        first = first[0]
    return isinstance(first, str) or first is None


def clustering_agreement(labels_true, labels_pred, average_method: str = "arithmetic") -> dict:
    """AMI, ARI and NMI between true labels and cluster ids, over the records whose true label is present.

    Missing true labels (None, "", NaN, negative index) are left out, so a rank labelled for only part of the
    records (e.g. subfamily) is scored on that part; ``num_missing`` says how many were left out.
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    labels_true = np.asarray(labels_true, dtype=object if has_text(labels_true) else None).ravel()
    labels_pred = np.asarray(labels_pred).ravel()
    if len(labels_true) != len(labels_pred):
        raise ValueError(f"predictions and references differ in length: {len(labels_pred)} vs {len(labels_true)}.")
    if len(labels_true) == 0:
        raise ValueError("references is empty: nothing to score.")
    missing = is_missing(labels_true)
    if missing.all():
        raise ValueError("every reference label is missing: nothing to score.")
    labels_true, labels_pred = labels_true[~missing], labels_pred[~missing]
    if labels_true.dtype == object:
        labels_true = labels_true.astype(str)
    return {
        "ami": float(adjusted_mutual_info_score(labels_true, labels_pred, average_method=average_method)),
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred, average_method=average_method)),
        "num_references": int(len(labels_true)),
        "num_classes": int(len(np.unique(labels_true))),
        "num_missing": int(missing.sum()),
    }


def fill_missing(references, predictions=()):
    """References with ``None`` replaced by the missing value of their type (``""`` for text, -1 for indices; the
    predictions' type when no reference is present), so that a missing first reference cannot decide the input
    format ``evaluate`` checks the batch against."""
    if references is None:
        return None
    references = list(references)
    present = [value for value in references if value is not None]
    text = isinstance(present[0], str) if present else has_text(list(predictions))
    return [("" if text else -1) if value is None else value for value in references]
