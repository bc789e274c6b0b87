"""Barcode embeddings at scale: batched, sorted by length, ``torch.inference_mode``, written to disk as they come.

    from bioscan5m.embedding import embed_sequences
    vectors = embed_sequences("runs/bb", barcodes, out_path="emb.npy", dtype=np.float16)
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .staging import check_output, staged_file


def load_encoder(model_dir_or_model, device: str | torch.device | None = None):
    """A BarcodeBERT encoder in eval mode from a folder (or Hub id), or the encoder inside a model object."""
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        from transformers import AutoModel

        from . import modeling  # noqa: F401  (registers the Auto classes)

        model = AutoModel.from_pretrained(str(model_dir_or_model))
    else:
        model = model_dir_or_model
        # Heads (MLM, classification) hold the encoder as .bert; embed() lives on the encoder.
        if not hasattr(model, "embed") and hasattr(model, "bert"):
            model = model.bert
    if device is not None:
        model = model.to(device)
    return model.eval()


def embed_sequences(model_dir_or_model, sequences, batch_size: int = 256, dtype=np.float32,
                    out_path: str | os.PathLike | None = None, progress: bool = True,
                    device: str | torch.device | None = None, reading_frames: int = 1,
                    overwrite: bool = False) -> np.ndarray:
    """Embed barcodes with a BarcodeBERT model: one pooled vector per sequence (``BarcodeBertModel.embed``).

    Sequences are processed in chunks sorted by length; with ``out_path`` the array is written to a ``.npy``
    file (memory-mapped, filled chunk by chunk, so the result need not fit in memory twice).

    Args:
        model_dir_or_model: a saved model folder, or a loaded BarcodeBERT model (any head).
        sequences: DNA barcodes (list, tuple, pandas Series or numpy array of strings).
        batch_size: sequences per forward pass.
        dtype: ``np.float32`` or ``np.float16`` for the returned / written array.
        out_path: optional ``.npy`` destination; an existing file is refused unless ``overwrite``, and the file
            appears only once every vector is written.
        progress: show a tqdm progress bar.
        device: where to run (default: where the model already is).
        reading_frames: average over this many start offsets (see ``BarcodeBertModel.embed``).

    Returns:
        ``(n, embedding_size)`` array in input order (the memory-mapped file when ``out_path`` is given).
    """
    if out_path is not None:
        check_output(out_path, overwrite)
    model = load_encoder(model_dir_or_model, device)
    sequences = list(sequences)
    if out_path is None:
        return _embed_into(np.empty((len(sequences), model.config.embedding_size), dtype=dtype), model, sequences,
                           batch_size, dtype, progress, reading_frames)
    with staged_file(out_path, overwrite) as staging:
        result = np.lib.format.open_memmap(staging, mode="w+", dtype=dtype,
                                           shape=(len(sequences), model.config.embedding_size))
        _embed_into(result, model, sequences, batch_size, dtype, progress, reading_frames)
        result.flush()
    return result


def _embed_into(result: np.ndarray, model, sequences: list, batch_size: int, dtype, progress: bool,
                reading_frames: int) -> np.ndarray:
    # Chunks of many batches: each is length-sorted inside embed(), and progress advances per chunk.
    chunk = batch_size * 16
    starts = range(0, len(sequences), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="chunk", total=-(-len(sequences) // chunk))
    for start in starts:
        result[start:start + chunk] = model.embed(sequences[start:start + chunk], batch_size=batch_size,
                                                  return_numpy=True, reading_frames=reading_frames).astype(dtype)
    return result


def embed_dataset(dataset, model_dir: str | os.PathLike, column: str = "dna_barcode", batch_size: int = 256,
                  num_proc: int | None = None, output_column: str = "embedding"):
    """Add an ``embedding`` column to a ``datasets.Dataset`` with ``Dataset.map``; ``num_proc`` processes each
    load the model once (the model is loaded from ``model_dir`` inside the workers, not pickled)."""
    torch_threads = max(1, (os.cpu_count() or 1) // (num_proc or 1))

    def embed_batch(batch, _cache={}):  # noqa: B006  (per-process model cache)
        if "model" not in _cache:
            torch.set_num_threads(torch_threads)
            _cache["model"] = load_encoder(model_dir)
        vectors = _cache["model"].embed(batch[column], batch_size=batch_size, return_numpy=True)
        return {output_column: list(vectors)}

    return dataset.map(embed_batch, batched=True, batch_size=batch_size * 4, num_proc=num_proc,
                       desc="embedding")
