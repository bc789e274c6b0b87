"""The embedding models an index can use: the k-mer baseline (SVD of k-mer counts), a saved BarcodeBERT, a saved
CLIBD (DNA and photographs in one space), and how a manifest names and fingerprints a model folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..evaluation.baselines import kmer_counts, kmer_length, kmer_svd, l2_normalize_rows


KMER_PROJECTION_NAME = "kmer_projection.npy"
#: Files of a model folder that decide its embeddings (with every ``*.safetensors`` weight file, sharded or not);
#: their content hash is recorded in the index manifest.
MODEL_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.txt", "vocab.json", "preprocessor_config.json",
               "processor_config.json")


class KmerEncoder:
    """The k-mer baseline as an embedding: L2-normalised k-mer counts projected on an SVD fitted to the keys."""

    kind = "kmer"
    modalities = ("dna",)

    def __init__(self, k: int, projection: np.ndarray):
        self.k = k
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)  # (dims, 4**k)

    @classmethod
    def fit(cls, sequences: Sequence[str], k: int = 6, dims: int = 256, max_fit: int = 20_000, seed: int = 0):
        sequences = list(sequences)
        if len(sequences) > max_fit:  # the projection only needs the variety of the keys, not all of them
            chosen = np.random.default_rng(seed).choice(len(sequences), size=max_fit, replace=False)
            sequences = [sequences[i] for i in np.sort(chosen)]
        return cls(k, kmer_svd(l2_normalize_rows(kmer_counts(sequences, k)), dims, seed).components_)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        counts = l2_normalize_rows(kmer_counts(list(sequences), self.k))
        return np.asarray(counts @ self.projection.T, dtype=np.float32)

    def save(self, folder: Path) -> dict:
        np.save(folder / KMER_PROJECTION_NAME, self.projection, allow_pickle=False)
        return {"kind": self.kind, "k": self.k, "dims": int(self.projection.shape[0])}

    @classmethod
    def load(cls, folder: Path, spec: dict):
        return cls(spec["k"], np.load(folder / KMER_PROJECTION_NAME, allow_pickle=False))


class BarcodeBertEncoder:
    """A saved BarcodeBERT: the mean of its last hidden state is the barcode's embedding."""

    kind = "barcodebert"
    modalities = ("dna",)

    def __init__(self, model_dir: str | os.PathLike):
        from ..embedding import load_encoder

        self.model_dir = str(model_dir)
        self.model = load_encoder(self.model_dir)
        self.model.tokenizer  # noqa: B018  (load the tokenizer now, not inside the first request's thread)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.model.embed(list(sequences), batch_size=batch_size, return_numpy=True)

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "model": self.model_dir}


class ClibdEncoder:
    """A saved CLIBD model: photographs and barcodes embedded in one space (``get_image_features`` /
    ``get_dna_features``), so a photograph can be matched against DNA keys and image keys alike."""

    kind = "clibd"
    modalities = ("dna", "image")

    def __init__(self, model_dir: str | os.PathLike):
        from transformers import AutoModel

        self.model_dir = str(model_dir)
        self.model = AutoModel.from_pretrained(self.model_dir).eval()
        self.image_processor, self.tokenizer, _ = self.model.load_processors(self.model_dir)
        self.metadata_features = tuple(self.model.config.metadata_features or ())

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self._embed({"dna_barcode": list(sequences)}, "dna", batch_size)

    def embed_images(self, images: Sequence, metadata=None, batch_size: int = 64) -> np.ndarray:
        """Image embeddings; ``metadata`` (a DataFrame row-aligned with ``images``) feeds a model that fuses
        collection site or specimen size; without it (a user's photograph) those are unknown (None)."""
        from ..training.train_clibd import METADATA_COLUMNS

        records = {"image": list(images)}
        for column in (c for feature in self.metadata_features for c in METADATA_COLUMNS.get(feature, {}).values()):
            known = metadata is not None and column in metadata
            records[column] = metadata[column].tolist() if known else [None] * len(records["image"])
        return self._embed(records, "image", batch_size)

    def _embed(self, records: dict, modality: str, batch_size: int) -> np.ndarray:
        from ..evaluation.clibd_retrieval import embed_records

        processors = (self.image_processor, self.tokenizer, None)
        return embed_records(self.model, records, (modality,), processors, batch_size)[modality]

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "model": self.model_dir}


def model_reference(model_dir: str | os.PathLike, index_folder: Path) -> dict:
    """How the manifest names a model: its path relative to the index folder (so the index answers the same from
    any working directory, and still does when the two are moved together) and the hash of its content."""
    model_dir = Path(model_dir).resolve()
    try:
        location = os.path.relpath(model_dir, Path(index_folder).resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        location = str(model_dir)
    return {"model": location, "model_sha256": model_fingerprint(model_dir)}


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """SHA-256 over the files that decide a model's embeddings (weights, configuration, tokenizers)."""
    from ..modeling.modeling_clibd import DNA_TOKENIZER_SUBFOLDER

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"No model at {model_dir} (no config.json there).")
    digest = hashlib.sha256()
    for folder in (Path(model_dir), Path(model_dir) / DNA_TOKENIZER_SUBFOLDER):
        weights = sorted(path.name for path in folder.glob("*.safetensors"))
        for name in (*MODEL_FILES, *weights):
            path = folder / name
            if path.is_file():
                digest.update(f"{path.relative_to(model_dir).as_posix()}\0".encode())
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()


def make_encoder(model: str | os.PathLike, fit_sequences: Sequence[str] | None = None, seed: int = 0):
    """The embedding model named by ``model``: ``"kmer"``/``"kmer:K"`` (fitted on ``fit_sequences``), or a saved
    BarcodeBERT or CLIBD folder (told apart by ``model_type`` in its ``config.json``)."""
    spec = str(model)
    k = kmer_length(spec)
    if k is not None:
        if fit_sequences is None:
            raise ValueError("The k-mer embedding is fitted on the key barcodes; pass fit_sequences.")
        return KmerEncoder.fit(fit_sequences, k=k, seed=seed)
    model_type = model_type_of(spec)
    if model_type == "clibd":
        return ClibdEncoder(spec)
    if model_type == "barcodebert":
        return BarcodeBertEncoder(spec)
    raise ValueError(f"{spec}: model_type {model_type!r} is not an embedding model identify knows "
                     "(barcodebert or clibd).")


def model_type_of(model: str | os.PathLike) -> str:
    """``kmer`` for the k-mer embedding, else the ``model_type`` in the folder's ``config.json``."""
    spec = str(model)
    if kmer_length(spec) is not None:
        return "kmer"
    config_path = Path(spec) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"Model {spec!r} is neither 'kmer[:K]' nor a saved model folder (no {config_path}).")
    return json.loads(config_path.read_text()).get("model_type", "")


