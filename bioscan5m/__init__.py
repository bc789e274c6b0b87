"""bioscan5m: the BIOSCAN-5M insect biodiversity dataset, Hugging Face-native.

    import bioscan5m
    ds = bioscan5m.load_dataset("~/bioscan", "cropped_256", split="train+val")
    it = bioscan5m.load_dataset("~/bioscan", "dna", split="pretrain", streaming=True)

The data layer needs no torch (``pip install bioscan5m``); the models, evaluation and the identification page come
with the ``models``, ``evaluation`` and ``app`` extras, and load only where they are used: the model classes join
the transformers Auto classes when ``bioscan5m.modeling`` is imported (every model-loading function of the package
does so), not on ``import bioscan5m``, which stays a light import for data loading.
"""

from __future__ import annotations

import os

from .data import release
from .data.release import IMAGE_PACKAGES, SPLITS, parse_split

__version__ = "0.1.0"

CONFIG_NAMES = (*IMAGE_PACKAGES, "dna")


def load_dataset(root, config: str = "cropped_256", split: str | None = None, streaming: bool = False,
                 cache_dir: str | None = None, download: bool = False, **config_kwargs):
    """Load BIOSCAN-5M from an official release folder as a ``datasets`` object.

    Args:
        root: the release root (the folder holding ``bioscan5m/``) or the metadata CSV itself.
        config: an image package (``cropped_256``, ``original_256``, ``cropped``, ``original_full``) or ``dna``.
        split: an official split, a metasplit (``all``, ``seen``, ``unseen``) or a ``+``-joined combination
            such as ``"train+val"``; ``None`` returns a ``DatasetDict`` (or ``IterableDatasetDict``) of all splits.
        streaming: iterate records straight from the release files, without preparing an Arrow cache.
        cache_dir: where prepared Arrow files go (default: the ``datasets`` cache).
        download: first fetch the metadata and the image archives these splits need from the official
            mirrors (resumable, MD5-verified; see :func:`bioscan5m.download`).
        **config_kwargs: ``max_nucleotides``, ``reduce_repeated_barcodes``, ``skip_missing_images``.
    """
    import datasets

    from .data.builder import Bioscan5M, prepare

    if config not in CONFIG_NAMES:
        raise ValueError(f"Unknown config {config!r}; choose one of {', '.join(CONFIG_NAMES)}.")
    splits = parse_split(split)
    if download:
        from .data.download import download as fetch_release

        fetch_release(root, package=None if config == "dna" else config, split="+".join(splits))
    builder = Bioscan5M(config_name=config, data_dir=os.path.expanduser(str(root)), cache_dir=cache_dir,
                        splits=tuple(splits), **config_kwargs)
    if streaming:
        parts = {s: builder.as_streaming_dataset(split=s) for s in splits}
        if split is None:
            return datasets.IterableDatasetDict(parts)
        return parts[splits[0]] if len(parts) == 1 else datasets.concatenate_datasets(list(parts.values()))
    prepare(builder, splits)
    if split is None:
        return builder.as_dataset()
    return builder.as_dataset(split="+".join(splits))


def __getattr__(name):
    # The public API beyond loading is imported on first use, so `import bioscan5m` stays light.
    lazy = {
        "read_metadata": ("data.metadata", "read_metadata"),
        "BIOSCAN5M": ("data.torch_dataset", "BIOSCAN5M"),
        "RGB_MEAN": ("data.torch_dataset", "RGB_MEAN"),
        "RGB_STDEV": ("data.torch_dataset", "RGB_STDEV"),
        "Bioscan5M": ("data.builder", "Bioscan5M"),
        "Bioscan5MConfig": ("data.builder", "Bioscan5MConfig"),
        "export": ("data.export", "export"),
        "make_sample": ("data.synthetic", "make_sample"),
        "download": ("data.download", "download"),
        "iter_image_batches": ("data.images", "iter_image_batches"),
        # identification.py, not identify.py: a submodule named `identify` would shadow the function.
        "identify": ("identification", "identify"),
        "identify_many": ("identification", "identify_many"),
        "build_index": ("identification", "build_index"),
        "load_index": ("identification", "load_index"),
        "InputError": ("identification", "InputError"),
        "read_fasta_file": ("identification", "read_fasta_file"),
    }
    if name in ("data", "modeling", "evaluation", "training", "tokenization", "apps"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in lazy:
        import importlib

        module, attribute = lazy[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module 'bioscan5m' has no attribute {name!r}")


__all__ = ["load_dataset", "BIOSCAN5M", "read_metadata", "parse_split", "SPLITS", "IMAGE_PACKAGES", "CONFIG_NAMES", "release"]
