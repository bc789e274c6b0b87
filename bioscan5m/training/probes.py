"""Probes of a pretrained encoder, with BarcodeBERT's protocol on unique barcodes:

* linear probe, closed world: a linear classifier on frozen embeddings of ``train``, species accuracy on ``test``;
* 1-NN probe, open world: cosine nearest ``train`` key for each ``test_unseen`` query, genus accuracy (the
  species are unseen, their genera are not).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from .data import load_barcode_sets
from .embeddings import embed_sequences, load_encoder


def nearest_neighbours(keys: np.ndarray, queries: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of the cosine-nearest key for every query (exact search, chunked matrix products)."""
    keys = torch.nn.functional.normalize(torch.as_tensor(keys, dtype=torch.float32), dim=1)
    queries = torch.as_tensor(queries, dtype=torch.float32)
    best = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = torch.nn.functional.normalize(queries[start:start + chunk], dim=1)
        best[start:start + chunk] = (block @ keys.T).argmax(dim=1).numpy()
    return best


def knn_probe(keys: np.ndarray, key_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray) -> dict:
    """1-NN (cosine) classification accuracy in percent, and the search time."""
    started = time.perf_counter()
    predicted = np.asarray(key_labels)[nearest_neighbours(keys, queries)]
    seconds = time.perf_counter() - started
    return {"accuracy": 100.0 * float(np.mean(predicted == np.asarray(query_labels))), "queries": len(queries),
            "search_seconds": seconds}


def fit_linear_classifier(train_x: np.ndarray, train_y: np.ndarray, num_classes: int, epochs: int = 300,
                          learning_rate: float = 1e-2, weight_decay: float = 1e-4,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on frozen embeddings, full-batch AdamW on standardised features.

    Returns ``(weight, bias)`` acting on the *raw* embeddings (the standardisation is folded in), ready to be
    copied into an ``nn.Linear``.
    """
    torch.manual_seed(seed)
    x = torch.tensor(np.asarray(train_x), dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    y = torch.tensor(np.asarray(train_y), dtype=torch.long)
    classifier = torch.nn.Linear(x.shape[1], num_classes)
    optimiser = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(classifier(x), y).backward()
        optimiser.step()
    with torch.no_grad():
        weight = classifier.weight / std
        return weight, classifier.bias - weight @ mean


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 num_classes: int | None = None, **fit_options) -> dict:
    """Accuracy (percent) on the test embeddings of :func:`fit_linear_classifier` trained on the train ones."""
    num_classes = num_classes or int(max(np.max(train_y), np.max(test_y)) + 1)
    weight, bias = fit_linear_classifier(train_x, train_y, num_classes, **fit_options)
    predicted = (torch.as_tensor(np.asarray(test_x), dtype=torch.float32) @ weight.T + bias).argmax(1).numpy()
    return {"accuracy": 100.0 * float(np.mean(predicted == np.asarray(test_y))), "queries": len(test_y)}


def probe(model_dir: str | os.PathLike, data_root: str | os.PathLike, out_path: str | os.PathLike | None = None,
          batch_size: int = 256, species_rank: str = "species", genus_rank: str = "genus") -> dict:
    """Linear probe (species@test) and 1-NN probe (genus@test_unseen) of a saved BarcodeBERT encoder.

    Also reports identification speed: queries per second for embedding the ``test_unseen`` queries and finding
    their nearest ``train`` key, the work a user does to identify new specimens against a key index.

    Returns:
        A dict of results (also written as JSON to ``out_path`` when given).
    """
    sets = load_barcode_sets(data_root, roles=("train", "test", "test_unseen"))
    model = load_encoder(model_dir)
    train = sets.labelled("train", species_rank)
    test = sets.labelled("test", species_rank)
    keys = sets.labelled("train", genus_rank)
    unseen = sets.labelled("test_unseen", genus_rank)

    train_x = embed_sequences(model, train["dna_barcode"], batch_size=batch_size)
    test_x = embed_sequences(model, test["dna_barcode"], batch_size=batch_size)
    linear = linear_probe(train_x, train[f"{species_rank}_index"].to_numpy(), test_x,
                          test[f"{species_rank}_index"].to_numpy(), num_classes=len(sets.label_names[species_rank]))

    key_x = train_x if len(keys) == len(train) and (keys.index == train.index).all() else \
        embed_sequences(model, keys["dna_barcode"], batch_size=batch_size)
    started = time.perf_counter()
    query_x = embed_sequences(model, unseen["dna_barcode"], batch_size=batch_size, progress=False)
    knn = knn_probe(key_x, keys[f"{genus_rank}_index"].to_numpy(), query_x, unseen[f"{genus_rank}_index"].to_numpy())
    identify_seconds = time.perf_counter() - started

    results = {
        "model": str(model_dir),
        f"linear_probe_{species_rank}_test": linear["accuracy"],
        f"knn_{genus_rank}_test_unseen": knn["accuracy"],
        "train_barcodes": len(train), "test_queries": len(test), "test_unseen_queries": len(unseen),
        "queries_per_second": len(unseen) / identify_seconds,
        "torch_threads": torch.get_num_threads(),
    }
    if out_path is not None:
        Path(out_path).write_text(json.dumps(results, indent=2))
    return results
