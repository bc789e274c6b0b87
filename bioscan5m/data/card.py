"""The dataset card of an exported release: its Hub metadata (``huggingface_hub.DatasetCardData``: configs,
``dataset_info`` features, tasks that fit the configs, source, paper), statistics computed from the data, an example
record, field descriptions, how the data was collected, its limitations, licence and citation."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from . import release
from .derived import count_records_per_split
from .metadata import find_metadata


def split_statistics(dataset) -> dict:
    """Counts a reader wants before downloading: records, unique barcodes, labelled records and classes per rank."""
    table = dataset.data.table
    barcodes = pc.utf8_rtrim(table.column("dna_barcode"), characters="N")
    lengths = pc.utf8_length(table.column("dna_barcode"))
    stats = {
        "records": table.num_rows,
        "unique_barcodes": len(pc.unique(barcodes)) if table.num_rows else 0,
        "median_barcode_length": float(pc.approximate_median(lengths).as_py() or 0),
        "ranks": {},
    }
    for rank in (*release.TAXONOMIC_RANKS[2:], "dna_bin"):
        column = table.column(rank)
        labelled = table.num_rows - column.null_count
        stats["ranks"][rank] = {"labelled": labelled, "classes": len(pc.unique(column.drop_null())) if labelled else 0}
    return stats


def _table(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _feature_type(feature) -> str:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel ({feature.num_classes} names, -1 = missing)"
    if isinstance(feature, datasets.Image):
        return "Image (JPEG bytes)"
    return feature.dtype


#: The BIOSCAN-5M paper (Papers with Code id and arXiv).
PAPERSWITHCODE_ID = "bioscan-5m"
ARXIV = "https://arxiv.org/abs/2406.12723"

COLLECTION = (
    "Specimens were collected by the BIOSCAN programme, mostly with Malaise traps, and processed at the Centre for "
    "Biodiversity Genomics (University of Guelph): each was photographed under a microscope (the `original_full` "
    "images, 1024×768), its COI-5P barcode region sequenced, and the barcode assigned to a BOLD Barcode Index Number "
    "(BIN). Taxonomic labels come from expert identification and BIN-based assignment in BOLD; `cropped` images are "
    "the specimen cut out by a detector, `*_256` their resized versions.")
LIMITATIONS = [
    "Most specimens were collected in a few countries (Costa Rica, Canada, South Africa and others), so the "
    "distribution of taxa and sites is far from global.",
    "Labels thin out towards species: most records are labelled to order and family, far fewer to genus and species "
    "(see the table above); `pretrain` has species and most genus labels removed on purpose.",
    "Splits are made at barcode level (identical barcodes of a species stay in one split); `test_unseen`, "
    "`key_unseen` and `val_unseen` hold species absent from `train`, `other_heldout` genera absent elsewhere.",
    "A species name containing `sp.`, `cf.` or a BOLD placeholder is an interim name, not a described species.",
]


def write_dataset_card(path: Path, root: Path, configs: list[str], splits: list[str], data_files: dict,
                       statistics: dict, max_nucleotides: int | None, features: dict | None = None,
                       example: dict | None = None, repo_id: str | None = None) -> None:
    """Write the export's README.md; ``features`` maps each config to its ``datasets.Features``, ``example`` is one
    record shown on the card, ``repo_id`` the Hub id (or folder) the usage snippet loads."""
    from huggingface_hub import DatasetCardData

    from .builder import Bioscan5M

    synthetic = (root / "SYNTHETIC_DATA.md").is_file()
    default = "cropped_256" if "cropped_256" in configs else configs[0]
    configs = [default] + [c for c in configs if c != default]
    image_configs = [c for c in configs if c != "dna"]
    features = features or {}
    if any(config not in features for config in configs):
        features = {config: Bioscan5M(config_name=config, data_dir=str(root)).info.features for config in configs}
    tasks = ["feature-extraction", "text-classification"]  # DNA barcodes: embeddings, taxon classification
    if image_configs:
        tasks = ["image-classification", "zero-shot-image-classification", *tasks]
    card_data = DatasetCardData(
        license="cc-by-3.0", pretty_name="BIOSCAN-5M" + (" (synthetic sample)" if synthetic else ""), language=["en"],
        task_categories=tasks, source_datasets=["original"], paperswithcode_id=None if synthetic else PAPERSWITHCODE_ID,
        tags=["biology", "biodiversity", "insects", "dna", "dna-barcoding", "taxonomy"]
        + (["multimodal"] if image_configs else []),
        size_categories=[_size_category(sum(s["records"] for s in next(iter(statistics.values())).values()))],
        configs=[{"config_name": config, **({"default": True} if config == default else {}),
                  "data_files": [{"split": name, "path": pattern} for name, pattern in data_files[config].items()]}
                 for config in configs],
        dataset_info=[{"config_name": config, **_features_yaml(features[config])} for config in configs])
    metadata_counts = count_records_per_split(find_metadata(root))
    features = features["dna"] if "dna" in features else Bioscan5M(config_name="dna", data_dir=str(root)).info.features
    repo_id = repo_id or "path/to/this/folder"
    lines = ["---", card_data.to_yaml(), "---", ""]
    lines += [f"# {card_data.pretty_name}", ""]
    if synthetic:
        lines += ["> **Synthetic data.** Every record, barcode and image in this export was generated by "
                  "`bioscan5m sample` to exercise code end to end. It is not real biodiversity data.", ""]
    description = release.DESCRIPTION if image_configs else (
        release.DESCRIPTION + " This export holds the metadata and DNA barcodes only (config `dna`), no images.")
    lines += [description, "", f"Homepage: {release.HOMEPAGE}; paper: [{ARXIV}]({ARXIV}). Exported by the `bioscan5m` "
              "package from the official release files; barcodes truncated to "
              f"{max_nucleotides if max_nucleotides else 'full length (no truncation)'} nucleotides.", ""]
    lines += ["## Usage", "", "```python", "import datasets",
              f'ds = datasets.load_dataset("{repo_id}", "{default}", split="train")',
              f'it = datasets.load_dataset("{repo_id}", "{default}", split="key_unseen", streaming=True)',
              "```", ""]
    if example is not None:
        shown = {key: (value[:60] + "…" if isinstance(value, str) and len(value) > 60 else value)
                 for key, value in example.items()}
        lines += ["## An example record", "", "The first record of the export" + (
            " (its `image` field, a JPEG photograph, left out here)" if image_configs else "") + ":", "",
                  "```python", repr(shown), "```", ""]
    lines += ["## Configs", "", _table([{"config": f"`{config}`", "content": release.IMAGE_PACKAGE_DESCRIPTIONS.get(
        config, "Metadata and DNA barcodes only, no images.")} for config in configs])]
    lines += ["", "## Splits", "", "Counts computed from the exported data.", ""]
    reference = statistics.get("dna") or next(iter(statistics.values()))
    rank_columns = {"order": "orders", "family": "families", "genus": "genera", "species": "species", "dna_bin": "BINs"}
    lines.append(_table([{"split": f"`{name}`", "purpose": release.SPLIT_DESCRIPTIONS[name],
                          "records": f"{s['records']:,}", "unique barcodes": f"{s['unique_barcodes']:,}",
                          "median length": f"{s['median_barcode_length']:.0f}",
                          **{title: f"{s['ranks'][rank]['classes']:,}" for rank, title in rank_columns.items()}}
                         for name, s in ((name, reference[name]) for name in splits)]))
    if image_configs:
        lines += ["", "Records with an image, per image config (records without one were skipped at export, "
                  "when asked to):", ""]
        rows = []
        for config in image_configs:
            counts = [statistics[config][n]["records"] for n in splits]
            skipped = sum(metadata_counts.get(n, 0) for n in splits) - sum(counts)
            rows.append({"config": f"`{config}`", **{f"`{n}`": f"{c:,}" for n, c in zip(splits, counts)},
                         "skipped": f"{skipped:,}"})
        lines.append(_table(rows))
    lines += ["", "Labelled records per rank (exported splits; classes over the whole release):", ""]
    rows = []
    for rank in reference[splits[0]]["ranks"]:
        labelled = sum(reference[n]["ranks"][rank]["labelled"] for n in splits)
        total = sum(reference[n]["records"] for n in splits)
        rows.append({"rank": rank, "labelled": f"{labelled:,} ({100 * labelled / max(total, 1):.1f} %)",
                     "classes": f"{features[f'{rank}_index'].num_classes:,}"})
    lines.append(_table(rows))
    lines += ["", "## Fields", ""]
    rows = [{"field": f"`{name}`", "type": _feature_type(feature), "description": (
        f"Integer target for `{name[:-6]}`: position in the sorted list of all labels of the release (identical "
        "across splits)." if name.endswith("_index") else release.COLUMN_DESCRIPTIONS[name])}
        for name, feature in features.items()]
    if image_configs:
        rows.append({"field": "`image`", "type": "Image (JPEG bytes)", "description": release.COLUMN_DESCRIPTIONS["image"]})
    lines.append(_table(rows))
    lines += ["", "## How the data was collected", "", COLLECTION, "", "## Limitations", ""]
    lines += [f"- {limitation}" for limitation in LIMITATIONS]
    lines += ["", "## Licence", "", "Images and metadata: [CC BY 3.0](https://creativecommons.org/licenses/by/3.0/) "
              "(CBG Photography Group, Centre for Biodiversity Genomics). Cite the dataset paper below.", "",
              "## Citation", "", "```bibtex", release.CITATION.rstrip(), "```", ""]
    path.write_text("\n".join(lines))


def _features_yaml(features) -> dict:
    """``dataset_info`` entry of one config: its features as the Hub's YAML lists them."""
    import datasets

    return datasets.DatasetInfo(features=features)._to_yaml_dict()


def _size_category(records: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if records < limit:
            return name
    return "n>10M"
