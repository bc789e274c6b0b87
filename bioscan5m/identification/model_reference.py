"""How an index manifest names its embedding model: a path relative to the index folder and a SHA-256 of the
files that decide the embeddings, so a moved or changed model is noticed at load."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


#: Files of a model folder that decide its embeddings (with every ``*.safetensors`` weight file, sharded or not);
#: their content hash is recorded in the index manifest.
MODEL_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.txt", "vocab.json", "preprocessor_config.json",
               "processor_config.json")


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
    from ..modeling.processing_clibd import DNA_TOKENIZER_SUBFOLDER

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
