"""Summary tables of a release folder and of an exported Hub folder, for people to read."""

from __future__ import annotations

import os
from pathlib import Path

from . import release
from .derived import count_records_per_split
from .metadata import find_metadata


def _table(header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summarize_release(root: str | os.PathLike) -> str:
    """Records per split from the metadata, and how many of them have an image in each package present."""
    from .image_package import ImagePackage

    root = Path(os.path.expanduser(str(root)))
    source = find_metadata(root)
    counts = count_records_per_split(source)
    packages = {}
    for package in release.IMAGE_PACKAGES:
        if release.image_package_dir(root, package).is_dir() or release.image_zip_candidates(root, package):
            store = ImagePackage(root, package)
            counts = store.count_per_split()
            store.close()
            packages[package] = {s: counts.get(s, 0) for s in release.SPLITS}
    header = ["split", "records"] + [f"{p} images" for p in packages]
    rows = [[s, f"{counts.get(s, 0):,}"] + [f"{packages[p][s]:,}" for p in packages] for s in release.SPLITS]
    rows.append(["total", f"{sum(counts.values()):,}"] + [f"{sum(packages[p].values()):,}" for p in packages])
    return f"metadata: {source}\n" + _table(header, rows)


def summarize_export(folder: str | os.PathLike) -> str:
    """Load every config and split of an exported folder with stock ``datasets`` and tabulate what came back."""
    import datasets

    folder = str(folder)
    rows = []
    for config in datasets.get_dataset_config_names(folder):
        for split, dataset in datasets.load_dataset(folder, config).items():
            species = len(set(dataset["species"]) - {None}) if len(dataset) else 0
            image = dataset[0]["image"].size if "image" in dataset.column_names and len(dataset) else None
            rows.append([config, split, f"{len(dataset):,}", f"{species:,}",
                         "x".join(map(str, image)) if image else "-"])
    return _table(["config", "split", "records", "species", "first image"], rows)
