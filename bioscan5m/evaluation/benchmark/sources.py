"""Embedding sources: the k-mer baseline, a saved model folder or a .npy file, each embedding a barcode once
(cached on disk between runs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...data.caching import cache_folder
from ...staging import staged_file
from ... import embedding


@dataclass
class EmbeddingSource:
    """A named way to turn DNA sequences into vectors.

    ``compact`` (optional) projects a set of embeddings to fewer dimensions before clustering and retrieval,
    where very wide embeddings (4,096-d k-mer counts) would make UMAP and exact search needlessly slow.
    """

    name: str
    description: str
    embed: Callable[[list[str]], np.ndarray]
    compact: Callable[[np.ndarray], np.ndarray] | None = None
    kind: str = "model"
    cache_key: str = ""


def kmer_source(k: int = 6, svd_dims: int = 256) -> EmbeddingSource:
    """The k-mer baseline: L2-normalised k-mer counts (cosine 1-NN classification on the counts themselves);
    clustering and retrieval use a truncated SVD of them to ``svd_dims``, fitted on the records of that task."""

    def reduce(counts: np.ndarray) -> np.ndarray:
        return embedding.kmer_svd(counts, svd_dims).transform(counts).astype(np.float32)

    return EmbeddingSource(
        f"{k}-mer counts", f"L2-normalised overlapping {k}-mer counts ({4 ** k} dims; clustering and retrieval: "
        f"truncated SVD to {svd_dims} dims, fitted without labels on that task's records)",
        lambda sequences: embedding.kmer_embeddings(sequences, k=k, svd_dims=None), reduce, kind="baseline",
        cache_key=f"kmer{k}")


def model_source(model_dir, batch_size: int = 128, reading_frames: int = 1) -> EmbeddingSource:
    """A saved model folder: ``AutoModel.from_pretrained(model_dir).embed(sequences)`` (pooled as its config says),
    averaged over ``reading_frames`` start offsets when more than one."""
    model_dir = Path(model_dir).expanduser()
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder: {config_path} is missing.")
    config = json.loads(config_path.read_text())
    state = []

    def embed(sequences: list[str]) -> np.ndarray:
        if not state:
            from ...embedding import load_encoder

            state.append(load_encoder(model_dir))
        model = state[0]
        if not hasattr(model, "embed"):
            raise ValueError(f"{model_dir}: {type(model).__name__} has no .embed(sequences); cannot embed DNA with it.")
        vectors = model.embed(list(sequences), batch_size=batch_size, progress=True, reading_frames=reading_frames)
        return np.asarray(vectors.detach().cpu() if hasattr(vectors, "detach") else vectors, dtype=np.float32)

    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    stamp = "|".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in [config_path, *weights])
    described = ", ".join(f"{key} {config[key]}" for key in ("k_mer", "num_hidden_layers", "num_attention_heads",
                                                             "hidden_size", "pooling") if key in config)
    name = model_dir.name
    if reading_frames > 1:
        described += f"; mean over {reading_frames} reading frames"
        name += f" ({reading_frames} frames)"
    return EmbeddingSource(name, f"{config.get('model_type', 'model')} from {model_dir} ({described})",
                           embed, cache_key=f"{model_dir.resolve()}|{stamp}|frames={reading_frames}")


def npy_source(path) -> EmbeddingSource:
    """Precomputed embeddings, one row per record of the evaluated split in file order (``cluster`` only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file {path} does not exist.")

    def embed(sequences: list[str]) -> np.ndarray:
        array = np.load(path)
        if len(array) != len(sequences):
            raise ValueError(f"{path} has {len(array)} rows but the split has {len(sequences)} records.")
        return array

    return EmbeddingSource(path.stem, f"precomputed embeddings {path}", embed, kind="file")


def parse_source(spec: str, batch_size: int = 128, reading_frames: int = 1) -> EmbeddingSource:
    """``kmer`` / ``kmer:K`` (baseline), ``dna:MODEL_DIR`` or ``MODEL_DIR`` (saved model), ``FILE.npy``."""
    k = embedding.kmer_length(spec)
    if k is not None:
        return kmer_source(k)
    if spec.endswith(".npy"):
        return npy_source(spec)
    modality, _, path = spec.partition(":")
    if path and modality != "dna":
        raise ValueError(f"embedding source {spec!r}: only the 'dna' modality exists in this release; use 'dna:DIR'.")
    return model_source(path or spec, batch_size=batch_size, reading_frames=reading_frames)


def embedding_cache_dir() -> Path:
    """Where embeddings of the benchmark's records are kept between runs: beside the ``datasets`` cache."""
    return cache_folder("embeddings")


def embed_unique(source: EmbeddingSource, sequences: Sequence[str], cache_dir: Path | None = None) -> dict:
    """Embed each distinct sequence once; returns ``{sequence: row}`` views into one array (cached on disk)."""
    unique = sorted(set(sequences))
    cache = None
    if cache_dir is not None and source.cache_key:
        digest = hashlib.sha1((source.cache_key + "\n" + "\n".join(unique)).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{digest}.npy"
        if cache.is_file():
            array = np.load(cache)
            return dict(zip(unique, array))
    array = np.asarray(source.embed(unique), dtype=np.float32)
    if len(array) != len(unique):
        raise ValueError(f"{source.name} returned {len(array)} embeddings for {len(unique)} sequences.")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(cache, overwrite=True) as staging, open(staging, "wb") as handle:
            np.save(handle, array)  # a killed run leaves no half-written cache file
    return dict(zip(unique, array))


def embedding_rows(table: dict, sequences: Sequence[str]) -> np.ndarray:
    return np.stack([table[s] for s in sequences])


