"""The official BIOSCAN-5M release, written down once.

Everything about the release's layout lives here: the metadata columns and their types, the split
names and metasplits, the image packages and where their files sit (in folders or inside the official
zip archives), and the download URLs with their checksums. The builder, the exporter, the synthetic
sample and the downloader all ask this module rather than repeating the layout.

Sources: the `bioscan-dataset` package (bioscan-ml/dataset, v1.3.0) and the BIOSCAN-5M repository.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

HOMEPAGE = "https://github.com/bioscan-ml/BIOSCAN-5M"
LICENSE = "cc-by-3.0"
CITATION = """\
@inproceedings{gharaee2024bioscan5m,
  title={{BIOSCAN-5M}: A Multimodal Dataset for Insect Biodiversity},
  author={Gharaee, Zahra and Lowe, Scott C. and Gong, ZeMing and Millan Arias, Pablo and Pellegrino, Nicholas
          and Wang, Austin T. and Haurum, Joakim Bruslund and Zarubiieva, Iuliia and Kari, Lila and Steinke, Dirk
          and Taylor, Graham W. and Fieguth, Paul and Chang, Angel X.},
  booktitle={Advances in Neural Information Processing Systems},
  volume={37},
  year={2024},
}
"""
DESCRIPTION = (
    "BIOSCAN-5M: 5,150,850 insect specimens, each with a microscope photograph, a COI DNA barcode, "
    "taxonomic labels from phylum to species, a Barcode Index Number, collection site and size."
)

# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------

RELEASE_FOLDER = "bioscan5m"
METADATA_RELPATH = "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"
METADATA_ZIP_NAME = "BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip"

#: The 23 columns of the official metadata CSV, in the official order.
COLUMNS = (
    "processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus",
    "species", "dna_bin", "dna_barcode", "country", "province_state", "coord-lat", "coord-lon",
    "image_measurement_value", "area_fraction", "scale_factor", "inferred_ranks", "split",
    "index_bioscan_1M_insect", "chunk",
)
FLOAT_COLUMNS = ("coord-lat", "coord-lon", "image_measurement_value", "area_fraction", "scale_factor")
INT_COLUMNS = ("inferred_ranks", "index_bioscan_1M_insect")
STRING_COLUMNS = tuple(c for c in COLUMNS if c not in FLOAT_COLUMNS + INT_COLUMNS)

#: Barcodes are cut to this many nucleotides by default, as bioscan-dataset and BarcodeBERT do: a COI-5P barcode is
#: 658 bp, plus two for the primer; reads past it are mostly sequencing noise.
MAX_NUCLEOTIDES = 660

#: Order to species: the ranks CLIBD's retrieval scores and its taxonomy text spells, and the ranks identification
#: predicts (every record is an insect, so phylum and class never tell two apart).
ORDER_TO_SPECIES = ("order", "family", "genus", "species")

#: Label columns that get an integer target (``{column}_index``), identical across splits.
TAXONOMIC_RANKS = ("phylum", "class", "order", "family", "subfamily", "genus", "species")
TARGET_COLUMNS = TAXONOMIC_RANKS + ("dna_bin",)

COLUMN_DESCRIPTIONS = {
    "processid": "BOLD process ID, unique per specimen record.",
    "sampleid": "Sample ID assigned by the collector / institution.",
    "taxon": "The most specific taxon the specimen was identified to.",
    "phylum": "Phylum label.",
    "class": "Class label.",
    "order": "Order label.",
    "family": "Family label.",
    "subfamily": "Subfamily label.",
    "genus": "Genus label.",
    "species": "Species label (may be a placeholder name for undescribed species).",
    "dna_bin": "Barcode Index Number (BOLD BIN), a species-level cluster of barcodes.",
    "dna_barcode": "COI-5P DNA barcode (nucleotides; truncated to `max_nucleotides`, default 660).",
    "country": "Country where the specimen was collected.",
    "province_state": "Province or state where the specimen was collected.",
    "coord-lat": "Latitude of the collection site (degrees).",
    "coord-lon": "Longitude of the collection site (degrees).",
    "image_measurement_value": "Specimen size: number of foreground pixels in the original image.",
    "area_fraction": "Fraction of the original image covered by the specimen.",
    "scale_factor": "Ratio of the cropped image size to the 256-pixel resized size.",
    "inferred_ranks": "How many taxonomic ranks were inferred from the BIN rather than identified.",
    "split": "Official partition name.",
    "index_bioscan_1M_insect": "Row index of this specimen in BIOSCAN-1M, if it is part of it.",
    "chunk": "Sub-folder of the image inside its split folder (empty for small splits).",
    "image": "Specimen photograph from the selected image package.",
}

# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------

SPLITS = ("pretrain", "train", "val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout")
SPLIT_ALIASES = {"validation": "val"}
METASPLITS = {
    "all": SPLITS,
    "seen": ("train", "val", "test"),
    "unseen": ("key_unseen", "val_unseen", "test_unseen"),
}
SPLIT_DESCRIPTIONS = {
    "pretrain": "Unlabelled at species level: self-supervised pretraining.",
    "train": "Seen species: supervised training, retrieval keys.",
    "val": "Seen species: model development, retrieval queries.",
    "test": "Seen species: final evaluation (closed world), retrieval queries.",
    "key_unseen": "Unseen species: retrieval keys.",
    "val_unseen": "Unseen species: model development, retrieval queries.",
    "test_unseen": "Unseen species: final evaluation (open world), retrieval queries.",
    "other_heldout": "Species of genera absent elsewhere: novelty-detector training.",
}


def parse_split(split: str | None) -> list[str]:
    """Expand a split expression into official split names, in release order.

    Accepts a single split, a metasplit (``all``, ``seen``, ``unseen``), the alias ``validation``, and
    ``+``-joined combinations such as ``"train+val"``. ``None`` means all splits.

    >>> parse_split("seen+key_unseen")
    ['train', 'val', 'test', 'key_unseen']
    """
    if split is None:
        return list(SPLITS)
    wanted: set[str] = set()
    for part in str(split).split("+"):
        name = SPLIT_ALIASES.get(part.strip(), part.strip())
        if name in METASPLITS:
            wanted.update(METASPLITS[name])
        elif name in SPLITS:
            wanted.add(name)
        else:
            raise ValueError(
                f"Unknown split {name!r} in {split!r}. Valid names: {', '.join(SPLITS)}; "
                f"metasplits: {', '.join(METASPLITS)}; join several with '+'."
            )
    return [s for s in SPLITS if s in wanted]


# ----------------------------------------------------------------------------------------------
# Image packages
# ----------------------------------------------------------------------------------------------

IMAGE_PACKAGES = ("original_full", "cropped", "original_256", "cropped_256")
IMAGE_PACKAGE_DESCRIPTIONS = {
    "original_full": "Original 1024x768 microscope photographs.",
    "cropped": "Photographs cropped to the specimen, full resolution.",
    "original_256": "Original photographs resized to 256 pixels on the shorter side.",
    "cropped_256": "Cropped photographs resized to 256 pixels on the shorter side (the paper's default).",
}

#: Image archives are downloaded per split group, as in `bioscan-dataset`.
SPLIT_GROUPS = {
    "pretrain": ("pretrain",),
    "train": ("train",),
    "eval": ("val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout"),
}

#: RGB normalisation constants of the cropped_256 package (from `bioscan-dataset`).
RGB_MEAN = (0.76281859, 0.76503749, 0.76373138)
RGB_STD = (0.14205404, 0.15642502, 0.17309470)


def image_relpath(split: str, chunk: str | None, processid: str) -> str:
    """Path of one image inside its package folder: ``{split}/[{chunk}/]{processid}.jpg``."""
    return f"{split}/{chunk}/{processid}.jpg" if chunk else f"{split}/{processid}.jpg"


def image_package_dir(root: str | os.PathLike, package: str) -> Path:
    return Path(root) / RELEASE_FOLDER / "images" / package


def image_zip_candidates(root: str | os.PathLike, package: str) -> list[Path]:
    """Official image archives of ``package`` found under ``root`` (or its ``bioscan5m`` folder).

    Official names are ``BIOSCAN_5M_{package}.zip`` and ``BIOSCAN_5M_{package}_{group}[.NN].zip``.
    """
    # The glob also matches other packages ('cropped' would pick up 'cropped_256'); the name check sorts them out.
    return [path for folder in (Path(root), Path(root) / RELEASE_FOLDER)
            for path in sorted(folder.glob(f"BIOSCAN_5M_{package}*.zip")) if _archive_group(path, package) is not None]


def archive_splits(path: str | os.PathLike, package: str) -> tuple[str, ...]:
    """The splits an official image archive of ``package`` holds, from its name: ``..._{group}[.NN].zip`` holds
    that split group's, ``BIOSCAN_5M_{package}.zip`` every split."""
    return SPLIT_GROUPS.get(_archive_group(path, package), SPLITS)


def _archive_group(path: str | os.PathLike, package: str) -> str | None:
    """``""`` for the single-archive name, the split group for a group archive, None for any other name."""
    rest = Path(path).name[len(f"BIOSCAN_5M_{package}"):]
    if rest == ".zip":
        return ""
    group = rest.split(".")[0]
    return group[1:] if group.startswith("_") and group[1:] in SPLIT_GROUPS else None


# ----------------------------------------------------------------------------------------------
# Downloads (official URLs and MD5 checksums, from bioscan-dataset v1.3.0)
# ----------------------------------------------------------------------------------------------

ZENODO = "https://zenodo.org/records/11973457/files"
#: The Hub mirror of the release, a dataset repo fetched with ``huggingface_hub``.
HUB_REPO_ID = "bioscan-ml/BIOSCAN-5M"
#: The mirror's revision that bioscan-dataset pins the metadata to; files with a published MD5 are fetched at it.
HUB_REVISION = "eeefb30"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of the release and where it goes under the root.

    ``hub_revision`` is the revision of the Hub mirror to fetch it at (``None``: not on the mirror); ``urls`` are
    the plain HTTP sources (Zenodo) tried after it. ``md5`` is the published checksum; without one, ``size``
    (bytes, where known) and the archive's structure are what a download is checked against.
    """

    filename: str
    urls: tuple[str, ...]
    md5: str | None
    size: int | None = None
    hub_revision: str | None = HUB_REVISION


METADATA_REMOTE = RemoteFile(
    filename=METADATA_ZIP_NAME,
    urls=(f"{ZENODO}/{METADATA_ZIP_NAME}",),
    md5="ac381b69fafdbaedc2f9cfb89e3571f7",
)
METADATA_CSV_MD5 = "603020b433ef566946efba7a08dbb23d"

#: Image archives per (package, split group). Only cropped_256 has published checksums; original_256 is on the
#: Hub mirror only, at ``main`` (no revision of it is pinned anywhere), and is checked against its size where it
#: is recorded, and must open as a zip archive whose member names are safe, before it is marked verified.
IMAGE_REMOTES: dict[tuple[str, str], tuple[RemoteFile, ...]] = {
    ("cropped_256", "pretrain"): (
        RemoteFile("BIOSCAN_5M_cropped_256_pretrain.01.zip",
                   (f"{ZENODO}/BIOSCAN_5M_cropped_256_pretrain.01.zip",), "0e1cfa86dc7fa4d9c10036990992a2dd"),
        RemoteFile("BIOSCAN_5M_cropped_256_pretrain.02.zip",
                   (f"{ZENODO}/BIOSCAN_5M_cropped_256_pretrain.02.zip",), "ca3191d307957732e8108121b20a2059"),
    ),
    ("cropped_256", "train"): (
        RemoteFile("BIOSCAN_5M_cropped_256_train.zip",
                   (f"{ZENODO}/BIOSCAN_5M_cropped_256_train.zip",), "3f170db5d95610644883dafc73389049"),
    ),
    ("cropped_256", "eval"): (
        RemoteFile("BIOSCAN_5M_cropped_256_eval.zip",
                   (f"{ZENODO}/BIOSCAN_5M_cropped_256_eval.zip",), "16a997f72a8cd08cbcf7becafe2dda50"),
    ),
    ("original_256", "eval"): (
        RemoteFile("BIOSCAN_5M_original_256_eval.zip", (), None, hub_revision="main"),
    ),
}


def split_groups(splits: Iterable[str]) -> list[str]:
    """The download groups needed for ``splits``."""
    splits = set(splits)
    return [g for g, members in SPLIT_GROUPS.items() if splits & set(members)]


# ----------------------------------------------------------------------------------------------
# Safe zip access
# ----------------------------------------------------------------------------------------------


class UnsafeArchiveError(ValueError):
    """A zip member whose path would escape the folder it is extracted to."""


def check_member_name(archive: str | os.PathLike, name: str) -> str:
    """Return the normalised member ``name``, refusing absolute paths and ``..`` escapes."""
    normalised = posixpath.normpath(name.replace("\\", "/"))
    if normalised.startswith("/") or normalised == ".." or normalised.startswith("../") or ":" in normalised.split("/")[0]:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} escapes the extraction folder; refusing to read this archive."
        )
    return normalised


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open an archive of the release, naming it when it is truncated or not a zip at all."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise zipfile.BadZipFile(f"{path}: not a valid zip archive (truncated or corrupt download?): {error}") from None
