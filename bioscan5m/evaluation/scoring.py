"""Scores on plain labels: top-k taxonomic accuracy (micro, macro, per class) and clustering agreement.

The shipped ``evaluate`` modules, retrieval, probes and the benchmark report all score through these
functions, so a number means the same thing wherever it appears.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..data.release import TARGET_COLUMNS



def check_rank(rank: str | None) -> None:
    if rank is not None and rank not in TARGET_COLUMNS:
        raise ValueError(f"Unknown rank {rank!r}; choose one of {', '.join(TARGET_COLUMNS)}.")


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


def _as_topk(predictions, n: int) -> np.ndarray:
    """Predictions as an ``(n, K)`` array: ranked candidate labels, best first (``K = 1`` for plain labels)."""
    if len(predictions) != n:
        raise ValueError(f"predictions and references differ in length: {len(predictions)} vs {n}.")
    if n and isinstance(predictions[0], (list, tuple, np.ndarray)):
        widths = {len(p) for p in predictions}
        if len(widths) != 1 or 0 in widths:
            raise ValueError(f"top-k predictions must all hold the same non-zero number of labels; found widths {sorted(widths)}.")
    array = np.asarray(predictions, dtype=object if _has_text(predictions) else None)
    return array.reshape(n, -1)


def _has_text(values) -> bool:
    first = values[0] if len(values) else None
    while isinstance(first, (list, tuple, np.ndarray)) and len(first):
        first = first[0]
    return isinstance(first, str) or first is None


def topk_accuracy(predictions, references, top_k: Iterable[int] = (1,), rank: str | None = None,
                  per_class: bool = True) -> dict:
    """Micro and macro top-k accuracy of ranked label predictions.

    Args:
        predictions: one label per reference, or a ranked list of labels per reference (best first),
            e.g. the labels of the retrieved keys. Text or integer labels.
        references: the true labels. Missing ones (None, "", NaN, negative index) are left out and counted.
        top_k: the k values to score; each must not exceed the number of ranked predictions.
        rank: the taxonomic rank of the labels; only checked and echoed in the result.
        per_class: also return each class's top-1 recall.

    Returns:
        ``micro_top{k}``: fraction of references whose label is among the first k predictions.
        ``macro_top{k}``: mean over the classes present in the references of each class's top-k recall (as CLIBD).
        ``per_class_top1`` (dict label -> recall), ``num_references``, ``num_classes``, ``num_missing``.
    """
    check_rank(rank)
    references = np.asarray(references, dtype=object if _has_text(references) else None).ravel()
    n = len(references)
    if n == 0:
        raise ValueError("references is empty: nothing to score.")
    ranked = _as_topk(predictions, n)
    ks = sorted({int(k) for k in top_k})
    if not ks or ks[0] < 1:
        raise ValueError(f"top_k must hold positive integers, got {list(top_k)}.")
    if ks[-1] > ranked.shape[1]:
        raise ValueError(f"top-{ks[-1]} accuracy needs at least {ks[-1]} ranked predictions per reference; got {ranked.shape[1]}.")
    missing = is_missing(references)
    references, ranked = references[~missing], ranked[~missing]
    if len(references) == 0:
        raise ValueError("every reference label is missing: nothing to score.")
    hits = ranked == references[:, None]
    classes, class_of = np.unique(references.astype(str) if references.dtype == object else references, return_inverse=True)
    counts = np.bincount(class_of, minlength=len(classes))
    result: dict = {} if rank is None else {"rank": rank}
    for k in ks:
        correct = hits[:, :k].any(axis=1)
        recall = np.bincount(class_of, weights=correct, minlength=len(classes)) / counts
        result[f"micro_top{k}"] = float(correct.mean())
        result[f"macro_top{k}"] = float(recall.mean())
        if per_class and k == 1:
            result["per_class_top1"] = {_plain(c): float(r) for c, r in zip(classes, recall)}
    result.update(num_references=int(len(references)), num_classes=int(len(classes)), num_missing=int(missing.sum()))
    return result


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean, as CLIBD combines seen and unseen accuracy; 0 when any value is 0."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("harmonic_mean needs at least one value.")
    if (values <= 0).any():
        return 0.0
    return float(len(values) / np.sum(1.0 / values))


def grouped_topk_accuracy(predictions, references, groups, top_k: Iterable[int] = (1,), rank: str | None = None,
                          per_class: bool = True) -> dict:
    """`topk_accuracy` per group (e.g. ``seen``/``unseen``) plus the harmonic mean of each score over the groups."""
    groups = np.asarray(groups, dtype=object)
    if len(groups) != len(references):
        raise ValueError(f"groups and references differ in length: {len(groups)} vs {len(references)}.")
    references = np.asarray(references, dtype=object if _has_text(references) else None)
    ranked = _as_topk(predictions, len(references))
    result: dict = {} if rank is None else {"rank": rank}
    names = list(dict.fromkeys(groups.tolist()))
    for name in names:
        rows = groups == name
        result[str(name)] = topk_accuracy(ranked[rows], references[rows], top_k=top_k, per_class=per_class)
    for key in (k for k in result[str(names[0])] if k.startswith(("micro_", "macro_"))):
        result[f"harmonic_mean_{key}"] = harmonic_mean([result[str(g)][key] for g in names])
    return result


def clustering_agreement(labels_true, labels_pred, average_method: str = "arithmetic") -> dict:
    """AMI, ARI and NMI between true labels and cluster ids, over the records whose true label is present.

    Missing true labels (None, "", NaN, negative index) are left out, so a rank labelled for only part of the
    records (e.g. subfamily) is scored on that part; ``num_missing`` says how many were left out.
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    labels_true = np.asarray(labels_true, dtype=object if _has_text(labels_true) else None).ravel()
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
