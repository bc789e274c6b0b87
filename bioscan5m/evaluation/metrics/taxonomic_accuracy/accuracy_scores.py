"""Top-k taxonomic accuracy (micro, macro, per class, per group) on plain labels.

This file belongs to the ``taxonomic_accuracy`` metric folder, which stands alone: ``evaluate.load`` copies it
beside the metric script, and it imports only numpy. ``bioscan5m.evaluation.scoring`` imports it from here, so
retrieval, probes and the benchmark score exactly as the metric does.
"""

from __future__ import annotations

from typing import Iterable, Sequence

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


def as_topk(predictions, n: int) -> np.ndarray:
    """Predictions as an ``(n, K)`` array: ranked candidate labels, best first (``K = 1`` for plain labels)."""
    if len(predictions) != n:
        raise ValueError(f"predictions and references differ in length: {len(predictions)} vs {n}.")
    if n and isinstance(predictions[0], (list, tuple, np.ndarray)):
        widths = {len(p) for p in predictions}
        if len(widths) != 1 or 0 in widths:
            raise ValueError(f"top-k predictions must all hold the same non-zero number of labels; found widths {sorted(widths)}.")
    array = np.asarray(predictions, dtype=object if has_text(predictions) else None)
    return array.reshape(n, -1)


def has_text(values) -> bool:
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
    references = np.asarray(references, dtype=object if has_text(references) else None).ravel()
    n = len(references)
    if n == 0:
        raise ValueError("references is empty: nothing to score.")
    ranked = as_topk(predictions, n)
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
    references = np.asarray(references, dtype=object if has_text(references) else None)
    ranked = as_topk(predictions, len(references))
    result: dict = {} if rank is None else {"rank": rank}
    names = list(dict.fromkeys(groups.tolist()))
    for name in names:
        rows = groups == name
        result[str(name)] = topk_accuracy(ranked[rows], references[rows], top_k=top_k, per_class=per_class)
    for key in (k for k in result[str(names[0])] if k.startswith(("micro_", "macro_"))):
        result[f"harmonic_mean_{key}"] = harmonic_mean([result[str(g)][key] for g in names])
    return result


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
