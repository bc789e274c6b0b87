"""Where the package keeps what it derives from a release: ``<datasets cache>/bioscan5m/<kind>/``.

Label vocabularies, barcode masks, archive member indexes and benchmark embeddings live beside the ``datasets``
cache, so that one setting (``HF_DATASETS_CACHE`` or ``HF_HOME``) moves them all. The folder is resolved as
``datasets`` resolves its cache, without importing it when it is not loaded yet: reading a cached entry must not
cost the second that importing ``datasets`` takes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def datasets_cache() -> Path:
    """``datasets.config.HF_DATASETS_CACHE``: from the loaded module if there is one, else from the environment by
    the same rule (``HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``)."""
    if "datasets.config" in sys.modules:
        return Path(sys.modules["datasets.config"].HF_DATASETS_CACHE)
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"])
    xdg_cache = os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return Path(os.path.expanduser(os.getenv("HF_HOME", os.path.join(xdg_cache, "huggingface")))) / "datasets"


def cache_folder(kind: str) -> Path:
    """The folder for one kind of derived data (not created)."""
    return datasets_cache() / "bioscan5m" / kind


def write_atomically(path: Path, write) -> None:
    """Create or replace a cache entry whole: ``write(staging_path)``, then a rename, so a reader (or a process
    killed mid-write) never leaves half an entry under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name created here and now (exclusively), so the clean-up below can only remove this call's own file.
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp makes it private; a cache entry is as readable as any file
    partial = Path(name)
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
