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

import torch

from ..embedding import embed_sequences, load_encoder
from ..staging import OutputExistsError, check_output, staged_file
from ..training.data import load_barcode_sets
from .probes import knn_probe, linear_probe


def probe(model_dir: str | os.PathLike, data_root: str | os.PathLike, out_path: str | os.PathLike | None = None,
          batch_size: int = 256, species_rank: str = "species", genus_rank: str = "genus",
          reading_frames: int = 1, device: str | torch.device | None = None, overwrite: bool = False) -> dict:
    """Linear probe (species@test) and 1-NN probe (genus@test_unseen) of a saved BarcodeBERT encoder.

    Also reports identification speed: queries per second for embedding the ``test_unseen`` queries and finding
    their nearest ``train`` key, the work a user does to identify new specimens against a key index.
    ``reading_frames`` > 1 averages every barcode's vectors over that many start offsets (``BarcodeBertModel.embed``).
    ``device``: where the encoder runs (default: the GPU when there is one, else the CPU).

    Returns:
        A dict of results (also written as JSON to ``out_path`` when given; an existing file there is refused
        unless ``overwrite``).
    """
    if out_path is not None:
        check_output(out_path, overwrite, inputs=(model_dir, data_root))
        if Path(out_path).is_dir():
            raise OutputExistsError(f"{out_path} is a folder; the probe results are a file (e.g. probe.json).")
    sets = load_barcode_sets(data_root, roles=("train", "test", "test_unseen"))
    model = load_encoder(model_dir, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train = sets.labelled("train", species_rank)
    test = sets.labelled("test", species_rank)
    keys = sets.labelled("train", genus_rank)
    unseen = sets.labelled("test_unseen", genus_rank)

    train_x = embed_sequences(model, train["dna_barcode"], batch_size=batch_size, reading_frames=reading_frames)
    test_x = embed_sequences(model, test["dna_barcode"], batch_size=batch_size, reading_frames=reading_frames)
    linear = linear_probe(train_x, train[f"{species_rank}_index"].to_numpy(), test_x,
                          test[f"{species_rank}_index"].to_numpy(), device=model.device)

    key_x = train_x if len(keys) == len(train) and (keys.index == train.index).all() else \
        embed_sequences(model, keys["dna_barcode"], batch_size=batch_size, reading_frames=reading_frames)
    started = time.perf_counter()
    query_x = embed_sequences(model, unseen["dna_barcode"], batch_size=batch_size, progress=False,
                              reading_frames=reading_frames)
    knn = knn_probe(key_x, keys[f"{genus_rank}_index"].to_numpy(), query_x, unseen[f"{genus_rank}_index"].to_numpy())
    identify_seconds = time.perf_counter() - started

    results = {
        "model": str(model_dir), "reading_frames": reading_frames,
        f"linear_probe_{species_rank}_test": 100 * linear["micro_top1"],
        f"knn_{genus_rank}_test_unseen": 100 * knn["micro_top1"],
        "train_barcodes": len(train), "test_queries": len(test), "test_unseen_queries": len(unseen),
        "queries_per_second": len(unseen) / identify_seconds,
        "device": str(model.device), "torch_threads": torch.get_num_threads(),
    }
    if out_path is not None:
        with staged_file(out_path, overwrite) as staging:
            staging.write_text(json.dumps(results, indent=2))
    return results
