"""Probes on frozen embeddings: k-nearest-neighbour (cosine, as BarcodeBERT's 1-NN probe) and linear.

Both train on labelled keys (e.g. ``train``) and score queries (e.g. ``test`` for species, ``test_unseen`` for
genus) with `scoring.topk_accuracy`, so probe accuracies are directly comparable with retrieval and BLAST.
"""

from __future__ import annotations


import numpy as np

from .clustering import check_embeddings
from .scoring import is_missing, topk_accuracy


def _labelled(embeddings, labels, name: str):
    embeddings = check_embeddings(embeddings, name)
    labels = np.asarray(labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"{name} has {len(embeddings)} rows but {len(labels)} labels.")
    keep = ~is_missing(labels)
    if not keep.any():
        raise ValueError(f"every {name} label is missing: nothing to probe.")
    return embeddings[keep], labels[keep]


def knn_predict(train_embeddings, train_labels, query_embeddings, k: int = 1, **search_kwargs) -> np.ndarray:
    """Majority label of the ``k`` nearest train embeddings (cosine) per query; ties go to the nearer neighbour."""
    from .retrieval import search

    train_embeddings, train_labels = _labelled(train_embeddings, train_labels, "train embeddings")
    query_embeddings = check_embeddings(query_embeddings, "query embeddings")
    _, indices = search(query_embeddings, train_embeddings, k=k, **search_kwargs)
    neighbours = train_labels[indices]
    if k == 1:
        return neighbours[:, 0]
    predictions = np.empty(len(neighbours), dtype=neighbours.dtype)
    for i, row in enumerate(neighbours):
        values, first, counts = np.unique(row, return_index=True, return_counts=True)
        # Most votes first, then the label whose nearest occurrence is closest.
        predictions[i] = values[np.lexsort((first, -counts))[0]]
    return predictions


def knn_probe(train_embeddings, train_labels, query_embeddings, query_labels, k: int = 1, **search_kwargs) -> dict:
    """Accuracy (micro, macro, per class) of the k-NN cosine classifier fitted on the train embeddings."""
    predictions = knn_predict(train_embeddings, train_labels, query_embeddings, k=k, **search_kwargs)
    return topk_accuracy(predictions, query_labels, top_k=(1,))


def fit_linear_classifier(train_x, train_y, num_classes: int, epochs: int = 300, learning_rate: float = 1e-2,
                          weight_decay: float = 1e-4, seed: int = 0, progress: bool = False, device=None):
    """Multinomial logistic regression on frozen embeddings: full-batch AdamW on standardised features.

    Returns ``(weight, bias)`` CPU tensors acting on the *raw* embeddings (the standardisation is folded in), ready
    to be copied into an ``nn.Linear`` (the fine-tuning script starts its heads from them). ``device``: where
    to fit (default CPU).
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(train_x), dtype=torch.float32, device=device)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.long, device=device)
    classifier = torch.nn.Linear(x.shape[1], num_classes, device=device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in tqdm(range(epochs), desc="linear probe", unit="epoch", disable=not progress, leave=False):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        weight = classifier.weight / std
        return weight.cpu(), (classifier.bias - weight @ mean).cpu()


def linear_probe(train_embeddings, train_labels, query_embeddings, query_labels, epochs: int = 300,
                 learning_rate: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0, progress: bool = True,
                 device=None) -> dict:
    """A softmax linear classifier (:func:`fit_linear_classifier`) on frozen train embeddings, scored on the queries.

    Query labels absent from the train labels count as errors (the classifier cannot predict them). ``device``:
    where to fit the classifier (default CPU).
    """
    import torch

    train_x, train_y = _labelled(train_embeddings, train_labels, "train embeddings")
    query_x = check_embeddings(query_embeddings, "query embeddings")
    if query_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"query embeddings have {query_x.shape[1]} dimensions but train embeddings have {train_x.shape[1]}.")
    classes, targets = np.unique(train_y, return_inverse=True)
    weight, bias = fit_linear_classifier(train_x, targets, len(classes), epochs=epochs, learning_rate=learning_rate,
                                         weight_decay=weight_decay, seed=seed, progress=progress, device=device)
    with torch.no_grad():
        predicted = (torch.from_numpy(query_x) @ weight.T + bias).argmax(dim=1).numpy()
    return topk_accuracy(classes[predicted], query_labels, top_k=(1,))
