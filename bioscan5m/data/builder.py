"""The BIOSCAN-5M datasets builder.

Reads an official release root: the metadata CSV (or the official metadata zip) and one image package,
either extracted (``bioscan5m/images/{package}/{split}/[{chunk}/]{processid}.jpg``) or still inside the
official zip archives. One config per image package plus ``dna`` for metadata and barcodes only.

    builder = Bioscan5M(config_name="cropped_256", data_dir="~/bioscan")
    builder.download_and_prepare(); builder.as_dataset(split="train")
    builder.as_streaming_dataset(split="key_unseen")

Most users call :func:`bioscan5m.load_dataset`, which wraps this builder.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import datasets
from datasets.builder import Key
import pyarrow as pa
import pyarrow.compute as pc

from ..staging import STAGING_MARKER
from . import release
from .derived import barcode_reduction_mask, label_vocabularies
from .image_package import MAX_IMAGE_BYTES, ImagePackage, MissingImageError
from .metadata import MetadataError, check_max_nucleotides, find_metadata, iter_batches, record_table

logger = logging.getLogger(__name__)

IMAGE_BATCH_ROWS = 256
IMAGE_STORAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

_VERSION = datasets.Version("1.0.0")
#: Inside datasets' incomplete output folder: the records the first split's pass routed to the other splits.
ROUTED_FOLDER = ".records-by-split"


@dataclass
class Bioscan5MConfig(datasets.BuilderConfig):
    """One way of reading the release.

    Args:
        image_package: ``original_full``, ``cropped``, ``original_256``, ``cropped_256``, or ``None`` for
            metadata and DNA only.
        max_nucleotides: truncate barcodes to this many nucleotides (``None`` keeps them whole).
        reduce_repeated_barcodes: keep one record per barcode, as `bioscan-dataset` does.
        skip_missing_images: skip (and count) records whose image is missing or truncated instead of
            raising. Off by default: a missing image is an error.
        max_image_bytes: refuse an image file or zip member larger than this (``None``: no limit).
        splits: restrict the generated splits (``None``: all eight).
    """

    image_package: str | None = "cropped_256"
    max_nucleotides: int | None = release.MAX_NUCLEOTIDES
    reduce_repeated_barcodes: bool = False
    skip_missing_images: bool = False
    max_image_bytes: int | None = MAX_IMAGE_BYTES
    splits: tuple[str, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        self.validate()
        if self.splits is not None:
            self.splits = tuple(release.parse_split("+".join(self.splits)))

    def validate(self) -> None:
        """Refuse option values that mean nothing (datasets sets options after construction, so it is called again)."""
        if self.image_package is not None and self.image_package not in release.IMAGE_PACKAGES:
            raise ValueError(f"Unknown image_package {self.image_package!r}; choose one of {release.IMAGE_PACKAGES} or None.")
        check_max_nucleotides(self.max_nucleotides)
        if self.max_image_bytes is not None and (not isinstance(self.max_image_bytes, int) or self.max_image_bytes < 1):
            raise ValueError(f"max_image_bytes must be a positive integer or None, got {self.max_image_bytes!r}.")


def prepare(builder: Bioscan5M, splits: list[str]) -> None:
    """``builder.download_and_prepare()``, raising the problem with the release itself (a `MetadataError`, a
    missing image ...) rather than the ``DatasetGenerationError`` that ``datasets`` wraps it in, and naming the
    file when the requested splits hold no record at all (``datasets`` would only say the split "corresponds to
    no data")."""
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, (ValueError, OSError)):
            raise error.__cause__ from None
        raise
    if not any(builder.info.splits[name].num_examples for name in splits if name in builder.info.splits):
        skipped = " (records without an image were skipped)" if builder.config.skip_missing_images else ""
        raise MetadataError(f"{find_metadata(builder.config.data_dir)}: split {'+'.join(splits)!r} is empty: no "
                            f"record of the CSV is in it{skipped}.")


def features_for(image_package: str | None, vocabularies: dict[str, tuple[str, ...]]) -> datasets.Features:
    """The schema: every official column with its type, the image, and one ClassLabel target per rank."""
    features = {"processid": datasets.Value("string")}
    if image_package is not None:
        features["image"] = datasets.Image()
    for column in release.COLUMNS[1:]:
        if column in release.FLOAT_COLUMNS:
            features[column] = datasets.Value("float64")
        elif column in release.INT_COLUMNS:
            features[column] = datasets.Value("int64")
        else:
            features[column] = datasets.Value("string")
    for column in release.TARGET_COLUMNS:
        features[f"{column}_index"] = datasets.ClassLabel(names=list(vocabularies[column]))
    return datasets.Features(features)


@dataclass
class _RoutedSplits:
    """Splits whose records the first split's pass over the CSV wrote to ``folder``, one Arrow file each."""

    folder: Path
    splits: tuple[str, ...]
    complete: bool = False  # set once that pass has read the whole CSV

    @classmethod
    def create(cls, folder: Path, splits: tuple[str, ...]) -> _RoutedSplits:
        """A new routing folder. datasets reuses the incomplete folder of a killed run, so one left there with our
        marker is removed first; any other folder at that path is refused, never deleted."""
        if folder.exists() or folder.is_symlink():
            if folder.is_symlink() or not (folder / STAGING_MARKER).is_file():
                raise FileExistsError(f"{folder} exists and was not made by bioscan5m; move it away and prepare again.")
            shutil.rmtree(folder)
        folder.mkdir()
        (folder / STAGING_MARKER).touch()
        return cls(folder, splits)

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.arrow"

    def read(self, split: str) -> Iterator[tuple[int, pa.Table]]:
        if not self.complete:
            raise RuntimeError(f"split {split!r} was generated before the pass that routes its records.")
        if not self.path(split).exists():  # the pass found no record of this split
            return
        with pa.memory_map(str(self.path(split))) as file:
            reader = pa.ipc.open_file(file)
            for batch_index in range(reader.num_record_batches):
                yield batch_index, pa.Table.from_batches([reader.get_batch(batch_index)])


class Bioscan5M(datasets.ArrowBasedBuilder):
    """BIOSCAN-5M from the official release files."""

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = Bioscan5MConfig
    BUILDER_CONFIGS = [
        Bioscan5MConfig(name=package, version=_VERSION, image_package=package,
                        description=release.IMAGE_PACKAGE_DESCRIPTIONS[package])
        for package in release.IMAGE_PACKAGES
    ] + [Bioscan5MConfig(name="dna", version=_VERSION, image_package=None,
                         description="Metadata and DNA barcodes only, no images.")]
    DEFAULT_CONFIG_NAME = "cropped_256"
    #: Options for which ``None`` is a value of its own (whole barcodes, no size cap), not "keep the default".
    NONE_VALUED_OPTIONS = ("max_nucleotides", "max_image_bytes")
    #: While several splits are prepared: the splits generated from files the first split's pass routed them to.
    _routed: _RoutedSplits | None = None

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        # datasets leaves an option at its default when it is passed as None; here None must mean none.
        builder_config, config_id = super()._create_builder_config(config_name, custom_features, config_id,
                                                                   **config_kwargs)
        explicit_none = [key for key in self.NONE_VALUED_OPTIONS if key in config_kwargs and config_kwargs[key] is None]
        if explicit_none:
            builder_config = copy.deepcopy(builder_config)
            for key in explicit_none:
                setattr(builder_config, key, None)
        builder_config.validate()
        return builder_config, config_id

    def _info(self) -> datasets.DatasetInfo:
        if self.config.data_dir is None:
            raise ValueError("Bioscan5M needs data_dir: the release root that holds 'bioscan5m/metadata/...'.")
        vocabularies = label_vocabularies(find_metadata(self.config.data_dir))
        return datasets.DatasetInfo(
            description=release.DESCRIPTION,
            features=features_for(self.config.image_package, vocabularies),
            homepage=release.HOMEPAGE,
            license=release.LICENSE,
            citation=release.CITATION,
        )

    def _split_generators(self, dl_manager):
        splits = self.config.splits or release.SPLITS
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in splits]

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # Every split's records are spread over the whole CSV, so generating the splits one after the other would
        # read it once per split. Instead the first split generated reads the CSV and routes the other splits'
        # records to one Arrow file each, and those splits are then generated from their files. The files live in
        # datasets' incomplete output folder (only a local one: elsewhere each split reads the CSV itself), in a folder
        # that carries our marker, and are removed before datasets renames the incomplete folder into place.
        splits = self.config.splits or release.SPLITS
        if len(splits) > 1 and Path(self._output_dir).name.endswith(".incomplete"):
            self._routed = _RoutedSplits.create(Path(self._output_dir) / ROUTED_FOLDER, tuple(splits[1:]))
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        finally:
            if self._routed is not None:
                shutil.rmtree(self._routed.folder, ignore_errors=True)  # made by this run (create refuses any other)
            self._routed = None

    def _metadata_tables(self) -> Iterator[pa.Table]:
        """The whole CSV as typed record tables (before any split filter), with the barcode reduction applied."""
        source = find_metadata(self.config.data_dir)
        vocabularies = label_vocabularies(source)
        keep = (barcode_reduction_mask(source, self.config.max_nucleotides)
                if self.config.reduce_repeated_barcodes else None)
        for first_row, batch in iter_batches(source):
            table = record_table(source, first_row, batch, vocabularies, self.config.max_nucleotides)
            if keep is not None:
                table = table.filter(pa.array(keep[first_row:first_row + batch.num_rows]))
            yield table

    def _split_records(self, split: str) -> Iterator[tuple[int, pa.Table]]:
        """The typed records of one split, read from the CSV (routing the other splits' on the way when several
        are being prepared) or from the file routed for it."""
        routed = self._routed
        if routed is not None and split in routed.splits:
            yield from routed.read(split)
            return
        writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
        try:
            for batch_index, table in enumerate(self._metadata_tables()):
                split_of = table.column("split")
                for other in routed.splits if routed is not None else ():
                    part = table.filter(pc.equal(split_of, other))
                    if part.num_rows:
                        if other not in writers:
                            writers[other] = pa.ipc.new_file(routed.path(other), part.schema)
                        writers[other].write_table(part)
                own = table.filter(pc.equal(split_of, split))
                if own.num_rows:
                    yield batch_index, own
            if routed is not None:
                routed.complete = True
        finally:
            for writer in writers.values():
                writer.close()

    def _generate_tables(self, split: str):
        # Records are produced as Arrow tables, as datasets' own csv/parquet builders do: encoding features
        # one Python dict at a time cost ~0.7 ms per record (profiled), most of the time of a full pass.
        schema = self.info.features.arrow_schema
        images = (ImagePackage(Path(os.path.expanduser(self.config.data_dir)), self.config.image_package,
                               max_image_bytes=self.config.max_image_bytes, splits=(split,))
                  if self.config.image_package else None)
        skipped: list[str] = []
        try:
            for batch_index, table in self._split_records(split):
                if images is None:
                    yield Key(batch_index, 0), table.select(schema.names).cast(schema)
                    continue
                # Image batches stay small so streaming memory is bounded by IMAGE_BATCH_ROWS, not the CSV batch.
                for offset in range(0, table.num_rows, IMAGE_BATCH_ROWS):
                    chunk = self._attach_images(table.slice(offset, IMAGE_BATCH_ROWS), images, split, skipped)
                    yield Key(batch_index, offset), chunk.select(schema.names).cast(schema)
        finally:
            if images is not None:
                images.close()
        if skipped:
            logger.warning(
                "Skipped %d record(s) of split %r whose %r image is missing or truncated (first: %s).",
                len(skipped), split, self.config.image_package, ", ".join(skipped[:5]),
            )

    def _attach_images(self, table: pa.Table, images: ImagePackage, split: str, skipped: list[str]) -> pa.Table:
        """Add the ``image`` column (JPEG bytes and path inside the package); drop records skipped on request."""
        cells, present = [], []
        for processid, chunk in zip(table.column("processid").to_pylist(), table.column("chunk").to_pylist()):
            relpath = release.image_relpath(split, chunk, processid)
            try:
                _, data = images.read(relpath)
            except MissingImageError as error:
                if not self.config.skip_missing_images:
                    raise MissingImageError(f"record {processid!r} (split {split}): {error}") from None
                skipped.append(processid)
                present.append(False)
                continue
            cells.append({"bytes": data, "path": relpath})
            present.append(True)
        table = table.filter(pa.array(present, pa.bool_()))
        return table.append_column("image", pa.array(cells, type=IMAGE_STORAGE))


__all__ = ["Bioscan5M", "Bioscan5MConfig", "MetadataError", "MissingImageError", "features_for", "prepare"]
