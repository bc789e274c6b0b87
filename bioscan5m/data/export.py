"""Export a release as a Hub-native dataset: Parquet shards per config and split, plus a dataset card.

The result loads with stock ``datasets`` and no code of ours, locally or from the Hub, streaming included:

    datasets.load_dataset("./bioscan-5m", "cropped_256", split="key_unseen")

The export is written to a hidden staging folder beside ``out`` and renamed into place only when complete
(:mod:`bioscan5m.staging`), so an interrupted export never leaves a folder that loads as if it were whole.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

from . import release
from .builder import Bioscan5M, prepare
from .card import split_statistics, write_dataset_card
from .metadata import check_max_nucleotides, find_metadata
from ..hub import upload
from ..staging import check_output, staged_folder

logger = logging.getLogger(__name__)


def available_configs(root: str | os.PathLike) -> list[str]:
    """``dna`` plus every image package present under ``root`` as a folder or official archive."""
    present = [p for p in release.IMAGE_PACKAGES
               if release.image_package_dir(root, p).is_dir() or release.image_zip_candidates(root, p)]
    return present + ["dna"]


def shard_path(config: str, split: str, index: int, count: int) -> str:
    return f"{config}/{split}-{index:05d}-of-{count:05d}.parquet"


def export(root: str | os.PathLike, out: str | os.PathLike, configs: list[str] | None = None, split: str = "all",
           max_shard_bytes: int = 500 << 20, skip_missing_images: bool = False, max_nucleotides: int | None = release.MAX_NUCLEOTIDES,
           push_to_hub: str | None = None, private: bool = False, overwrite: bool = False) -> Path:
    """Write ``out/{config}/{split}-NNNNN-of-MMMMM.parquet`` and ``out/README.md``; return ``out``.

    Args:
        root: the release root.
        out: the folder to create; an existing one is refused unless ``overwrite``.
        configs: configs to export (default: ``dna`` and every image package present).
        split: split expression (default: all eight splits).
        max_shard_bytes: target size of one Parquet shard (images embedded).
        skip_missing_images: skip records whose image is missing or truncated; the number skipped per split
            is logged and written into the card. Off by default: a missing image stops the export.
        max_nucleotides: barcode truncation, as in the builder (``None`` keeps whole barcodes).
        push_to_hub: a Hub dataset repo id to upload the finished folder to (see `bioscan5m.hub.upload`).
        private: create that repo private.
        overwrite: replace ``out`` if it exists (only once the new export is complete).
    """
    root = Path(os.path.expanduser(str(root)))
    out = check_output(out, overwrite, inputs=(root,))
    if max_shard_bytes is None or int(max_shard_bytes) < 1:
        raise ValueError(f"max_shard_bytes must be a positive number of bytes, got {max_shard_bytes!r}.")
    check_max_nucleotides(max_nucleotides)
    if private and not push_to_hub:
        raise ValueError("private applies to the Hub repo of push_to_hub (--push-to-hub REPO), and none was given.")
    if push_to_hub:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(push_to_hub)  # a malformed repo id fails here, not after the export is written
    find_metadata(root)  # fail before any work if the release is not there
    configs = configs or available_configs(root)
    splits = release.parse_split(split)
    for config in configs:
        if config not in (*release.IMAGE_PACKAGES, "dna"):
            raise ValueError(f"Unknown config {config!r}; choose from {', '.join((*release.IMAGE_PACKAGES, 'dna'))}.")

    with staged_folder(out, overwrite) as staging:
        statistics, data_files, features, example = {}, {}, {}, None
        for config in configs:
            cache = staging / ".cache"
            builder = Bioscan5M(config_name=config, data_dir=str(root), cache_dir=str(cache), splits=tuple(splits),
                                max_nucleotides=max_nucleotides, skip_missing_images=skip_missing_images)
            prepare(builder, splits)
            data_files[config] = {}
            features[config] = builder.info.features
            for name in splits:
                dataset = builder.as_dataset(split=name)
                count = max(1, math.ceil(dataset.data.nbytes / max_shard_bytes))
                data_files[config][name] = f"{config}/{name}-*.parquet"
                for index in range(count):
                    path = staging / shard_path(config, name, index, count)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    dataset.shard(count, index, contiguous=True).to_parquet(str(path))
                statistics.setdefault(config, {})[name] = split_statistics(dataset)
                if example is None and len(dataset):
                    example = {key: value for key, value in dataset[0].items() if key != "image"}
                del dataset
            del builder
            shutil.rmtree(cache)
        write_dataset_card(staging / "README.md", root, configs, splits, data_files, statistics,
                           max_nucleotides=max_nucleotides, features=features, example=example,
                           repo_id=push_to_hub or out.name)
    if push_to_hub:
        upload(out, push_to_hub, repo_type="dataset", private=private,
               commit_message="Upload BIOSCAN-5M (exported by bioscan5m)")
    return out
