"""``BIOSCAN5M``: the PyTorch dataset of `bioscan-dataset`, on this package's Arrow cache and archive reader.

    from bioscan5m import BIOSCAN5M           # instead of: from bioscan_dataset import BIOSCAN5M
    dataset = BIOSCAN5M("~/bioscan", split="train", modality=("image", "dna"), target_type=["species", "genus"])
    image, dna, (species, genus) = dataset[0]

The signature, the outputs (tuple or dict, index or text targets, missing values as ``-1`` or NaN), the label
indices (bioscan-dataset's pandas category codes, in the same integer widths) and ``index2label`` / ``label2index``
are bioscan-dataset's, record for record. Underneath, records come from the memory-mapped Arrow files of the ``dna``
config (prepared once per CSV and options, then reused by every process and DataLoader worker), only the requested
columns are read, and images come straight from the official zip archives or the extracted folder. ``metadata`` is
built on first access.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import math
import os
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image

from . import release
from .caching import cache_folder, write_atomically
from .image_package import MAX_IMAGE_PIXELS, ImagePackage
from .derived import barcode_reduction_mask, label_vocabularies, split_codes
from .metadata import find_metadata

__all__ = ["BIOSCAN5M", "RGB_MEAN", "RGB_STDEV"]

RGB_MEAN = torch.tensor(release.RGB_MEAN)
RGB_STDEV = torch.tensor(release.RGB_STD)

_DNA_MODALITIES = ("dna", "dna_barcode", "barcode")
_NUMERIC_COLUMNS = release.FLOAT_COLUMNS + release.INT_COLUMNS


def category_code_dtype(num_categories: int) -> np.dtype:
    """The integer width pandas gives the codes of a categorical with this many categories."""
    for dtype in (np.int8, np.int16, np.int32):
        if num_categories < np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


class _TextColumn:
    """One string column over Arrow chunks, read a value at a time without copying the column; missing is NaN, as
    in a pandas row."""

    def __init__(self, chunked):
        self._chunks = [chunk for chunk in chunked.chunks if len(chunk)]
        self._starts = np.cumsum([0] + [len(chunk) for chunk in self._chunks]).tolist()

    def __getitem__(self, position: int):
        k = bisect.bisect_right(self._starts, position) - 1
        value = self._chunks[k][position - self._starts[k]].as_py()
        return math.nan if value is None else value


def _listed_files(manifest) -> list[list[str]] | None:
    """The files a manifest lists, if every one is still there unchanged; else None (prepare again)."""
    try:
        listing = json.loads(manifest.read_text())
        for entry in (entry for split_files in listing for entry in split_files):
            status = os.stat(entry["path"])
            if (status.st_size, status.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                return None
        return [[entry["path"] for entry in split_files] for split_files in listing]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class BIOSCAN5M(torch.utils.data.Dataset):
    """`BIOSCAN-5M <https://github.com/bioscan-ml/BIOSCAN-5M>`_ as a map-style PyTorch dataset, with the arguments
    and outputs of ``bioscan_dataset.BIOSCAN5M``.

    Args:
        root: the release root (holding ``bioscan5m/metadata/...`` and the image archives or folders).
        split: a split, a metasplit (``all``, ``seen``, ``unseen``) or a ``+``-joined combination; records keep
            the CSV's order.
        modality: any of ``"image"``, ``"dna"`` and the metadata columns (``"coord-lat"``, ``"country"``, ...).
        image_package: ``cropped_256``, ``original_256``, ``cropped`` or ``original_full``.
        reduce_repeated_barcodes: keep one record per barcode (bioscan-dataset's rule).
        max_nucleotides: truncate barcodes to this length (``None`` keeps them whole).
        target_type: one rank or several (``phylum`` ... ``species``, ``dna_bin``; ``uri`` means ``dna_bin``).
        target_format: ``"index"`` (integers, ``-1`` where missing) or ``"text"`` (labels, NaN where missing).
        output_format: ``"tuple"`` or ``"dict"``.
        transform, dna_transform, target_transform: applied to the PIL image, the barcode string and the target.
        download: fetch the metadata and the image archives of these splits first (:func:`bioscan5m.download`).
        cache_dir: where the prepared Arrow files are kept (default: the ``datasets`` cache).
    """

    _mapped_tables = None
    _columns: dict[str, Any]

    def __init__(
        self,
        root,
        split: str = "train",
        modality: str | Iterable[str] = ("image", "dna"),
        image_package: str = "cropped_256",
        reduce_repeated_barcodes: bool = False,
        max_nucleotides: int | None = release.MAX_NUCLEOTIDES,
        target_type: str | Iterable[str] = "species",
        target_format: str = "index",
        output_format: str = "tuple",
        transform: Callable | None = None,
        dna_transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.root = os.path.expanduser(str(root))
        self.split = release.SPLIT_ALIASES.get(split, split)
        self.modality = [modality] if isinstance(modality, str) else list(modality)
        self.image_package = image_package
        self.reduce_repeated_barcodes = reduce_repeated_barcodes
        self.max_nucleotides = max_nucleotides
        targets = [target_type] if isinstance(target_type, str) else list(target_type)
        self.target_type = ["dna_bin" if t == "uri" else t for t in targets]
        self.target_format = target_format
        self.output_format = "dict" if output_format == "dictionary" else output_format
        self.transform, self.dna_transform, self.target_transform = transform, dna_transform, target_transform
        self._columns = {}
        self._check_arguments()
        splits = release.parse_split(None if self.split in (None, "all") else self.split)
        if download:
            from .download import download as fetch_release

            fetch_release(self.root, package=image_package if "image" in self.modality else None,
                          split="+".join(splits))
        self._splits = splits
        self._source = find_metadata(self.root)
        self._vocabularies = label_vocabularies(self._source)
        self._record_files = self._prepared_record_files(splits, cache_dir)
        self._lengths = [table.num_rows for table in self._tables]
        self._positions = self._file_order(splits)
        self._images = None
        self._images_pid = None
        self._metadata = None

    def _check_arguments(self) -> None:
        if not self.target_type and self.target_transform is not None:
            raise RuntimeError("target_transform is specified but target_type is empty")
        if self.target_format not in ("index", "text"):
            raise ValueError(f"Unknown target_format: {self.target_format!r}")
        if self.output_format not in ("tuple", "dict"):
            raise ValueError(f"Unknown output_format: {self.output_format!r}")
        if "image" in self.modality and self.image_package not in release.IMAGE_PACKAGES:
            raise ValueError(f"Unknown image_package {self.image_package!r}; choose one of {release.IMAGE_PACKAGES}.")
        known = set(release.COLUMNS) | {f"{t}_index" for t in release.TARGET_COLUMNS} | {"image", "image_path"}
        for modality in self.modality:
            if modality not in known and modality not in _DNA_MODALITIES:
                raise ValueError(f"Unfamiliar modality: {modality!r}")
        for target in self.target_type:
            if target not in release.TARGET_COLUMNS:
                raise ValueError(f"Unknown target_type {target!r}; choose from {', '.join(release.TARGET_COLUMNS)}.")

    def _prepared_record_files(self, splits: list[str], cache_dir) -> list[list[str]]:
        """The Arrow files holding each split's records in the ``dna`` config's cache, prepared if need be.

        They are listed, with their sizes and modification times, in a manifest kept per CSV and options, so a later
        start memory-maps them without building a ``datasets`` builder (importing ``datasets`` alone takes about a
        second, a third of this dataset's whole start-up on the real train split)."""
        key = (*self._source.stamp(), tuple(splits), self.max_nucleotides, self.reduce_repeated_barcodes,
               None if cache_dir is None else os.path.abspath(os.path.expanduser(str(cache_dir))))
        manifest = cache_folder("torch-dataset") / f"{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}.json"
        files = _listed_files(manifest)
        if files is not None:
            return files
        from .builder import Bioscan5M, prepare

        builder = Bioscan5M(config_name="dna", data_dir=self.root, cache_dir=cache_dir, splits=tuple(splits),
                            max_nucleotides=self.max_nucleotides, reduce_repeated_barcodes=self.reduce_repeated_barcodes)
        prepare(builder, splits)
        files = [[entry["filename"] for entry in builder.as_dataset(split=name).cache_files] for name in splits]
        listing = [[{"path": path, "size": os.stat(path).st_size, "mtime_ns": os.stat(path).st_mtime_ns}
                    for path in split_files] for split_files in files]
        write_atomically(manifest, lambda path: path.write_text(json.dumps(listing)))
        return files

    @property
    def _tables(self) -> list:
        """Each split's records, memory-mapped from the prepared Arrow files (mapped again in each process)."""
        if self._mapped_tables is None:
            import pyarrow as pa

            self._mapped_tables = [pa.concat_tables([pa.ipc.open_stream(pa.memory_map(path)).read_all()
                                                     for path in split_files]) for split_files in self._record_files]
        return self._mapped_tables

    def _file_order(self, splits: list[str]) -> np.ndarray | None:
        """Where each record of the CSV's order sits in the splits' concatenation (``None``: the same place).

        Several splits are prepared one after the other, but bioscan-dataset keeps the CSV's interleaving; each
        record's split, in file order, says which split's next record comes next."""
        if len(splits) == 1:
            return None
        codes = split_codes(self._source)
        if self.reduce_repeated_barcodes:
            codes = codes[barcode_reduction_mask(self._source, self.max_nucleotides)]
        wanted = np.array([release.SPLITS.index(s) for s in splits], dtype=np.uint8)
        codes = codes[np.isin(codes, wanted)]
        lengths = self._lengths
        starts = np.cumsum([0] + lengths[:-1])
        positions = np.empty(len(codes), dtype=np.int64)
        for code, start, length in zip(wanted, starts, lengths):
            rows = np.flatnonzero(codes == code)
            if len(rows) != length:
                raise RuntimeError(f"split {release.SPLITS[code]!r}: {len(rows)} records in the CSV, {length} prepared.")
            positions[rows] = start + np.arange(length)
        return positions

    # -- columns, read on first use and rebuilt in each process ------------------------------------------------

    def _column(self, name: str):
        if name not in self._columns:
            self._columns[name] = self._read_column(name)
        return self._columns[name]

    def _read_column(self, name: str):
        import pyarrow as pa
        import pyarrow.compute as pc

        chunked = pa.chunked_array([chunk for table in self._tables for chunk in table.column(name).chunks],
                                   type=self._tables[0].schema.field(name).type)
        if name.endswith("_index"):
            return chunked.to_numpy().astype(category_code_dtype(len(self._vocabularies[name[:-len("_index")]])))
        if name in _NUMERIC_COLUMNS:
            values = pc.cast(chunked, pa.float64()) if chunked.null_count else chunked
            return pc.fill_null(values, math.nan).to_numpy() if chunked.null_count else values.to_numpy()
        return _TextColumn(chunked)

    def __getstate__(self):
        # Workers map the Arrow files, rebuild columns and open the archives themselves: only paths are pickled.
        state = self.__dict__.copy()
        state.update(_mapped_tables=None, _columns={}, _images=None, _images_pid=None, _metadata=None)
        return state

    # -- the torch Dataset ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._positions) if self._positions is not None else sum(self._lengths)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} records")
        index %= len(self)
        position = int(self._positions[index]) if self._positions is not None else index
        values = []
        for modality in self.modality:
            if modality == "image":
                value = self._image(position)
                if self.transform is not None:
                    value = self.transform(value)
            elif modality in _DNA_MODALITIES:
                value = self._column("dna_barcode")[position]
                if self.dna_transform is not None:
                    value = self.dna_transform(value)
            elif modality == "image_path":
                value = self._image_path(position)
            else:
                value = self._column(modality)[position]
            values.append((modality, value))
        target = []
        for rank in self.target_type:
            target.append(self._column(f"{rank}_index")[position] if self.target_format == "index"
                          else self._column(rank)[position])
            if self.output_format == "dict":
                values.append((rank, self._column(rank)[position]))
                values.append((f"{rank}_index", self._column(f"{rank}_index")[position]))
        if target:
            target = tuple(target) if len(target) > 1 else target[0]
            if self.target_transform is not None:
                target = self.target_transform(target)
        else:
            target = None
        values.append(("target", target))
        return tuple(v for _, v in values) if self.output_format == "tuple" else dict(values)

    def _image_path(self, position: int) -> str:
        chunk = self._column("chunk")[position]
        return release.image_relpath(self._column("split")[position], chunk if isinstance(chunk, str) else None,
                                     self._column("processid")[position])

    def _image(self, position: int) -> Image.Image:
        # Each process (each DataLoader worker) opens the archives itself; their member indexes are memory-mapped
        # from the cache, so the workers share one copy.
        if self._images is None or self._images_pid != os.getpid():
            self._images = ImagePackage(self.root, self.image_package, splits=self._splits)
            self._images_pid = os.getpid()
        where, data = self._images.read(self._image_path(position))
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image {where}: {image.width}x{image.height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}.")
        return image

    # -- labels ----------------------------------------------------------------------------------------------------

    def _label_column(self, column: str | None) -> str:
        if column is not None:
            return column
        if len(self.target_type) == 1:
            return self.target_type[0]
        raise ValueError("column must be specified if there isn't a single target_type")

    def index2label(self, index, column: str | None = None):
        """Integer index (or indices) of ``column`` to its label(s); negative indices give ``""``."""
        names = self._vocabularies[self._label_column(column)]
        if not hasattr(index, "__len__"):
            return "" if index < 0 else names[index]
        if isinstance(index, str):
            raise TypeError(f"index must be an int or array-like of ints, not a string: {index!r}."
                            " Did you mean to call label2index?")
        index = np.asarray(index)
        out = np.asarray(names, dtype=object)[index]
        out[index < 0] = ""
        return out

    def label2index(self, label, column: str | None = None):
        """Label (or labels) of ``column`` to its integer index; ``""`` and NaN give ``-1``."""
        column = self._label_column(column)
        positions = self._label_positions(column)

        def one(value):
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
                return -1
            try:
                return positions[value]
            except KeyError:
                raise KeyError(f"Label {value!r} not found in metadata column {column!r}") from None

        if isinstance(label, str) or label is None or isinstance(label, float):
            return one(label)
        if isinstance(label, (int, np.integer)):
            raise TypeError(f"label must be a string or list of strings, not an int: {label!r}."
                            " Did you mean to call index2label?")
        return np.asarray([one(value) for value in label])

    def _label_positions(self, column: str) -> dict[str, int]:
        key = f"positions:{column}"
        if key not in self._columns:
            self._columns[key] = {name: i for i, name in enumerate(self._vocabularies[column])}
        return self._columns[key]

    # -- the rest of bioscan-dataset's surface ---------------------------------------------------------------------

    @property
    def metadata(self):
        """The selected records as a pandas DataFrame (built on first access: it holds every column in memory)."""
        if self._metadata is None:
            import pandas as pd

            frame = pd.concat([table.to_pandas() for table in self._tables], ignore_index=True)
            if self._positions is not None:
                frame = frame.iloc[self._positions].reset_index(drop=True)
            frame["image_path"] = [release.image_relpath(s, c if isinstance(c, str) else None, p) for s, c, p in
                                   zip(frame["split"], frame["chunk"], frame["processid"])]
            self._metadata = frame
        return self._metadata

    def extra_repr(self) -> str:
        lines = [f"split: {self.split!r}", f"modality: {self.modality!r}"]
        if "image" in self.modality:
            lines.append(f"image_package: {self.image_package!r}")
        if self.reduce_repeated_barcodes:
            lines.append(f"reduce_repeated_barcodes: {self.reduce_repeated_barcodes!r}")
        has_dna = any(m in self.modality for m in _DNA_MODALITIES)
        if has_dna and self.max_nucleotides != release.MAX_NUCLEOTIDES:
            lines.append(f"max_nucleotides: {self.max_nucleotides!r}")
        lines.append(f"target_type: {self.target_type!r}")
        if self.target_type:
            lines.append(f"target_format: {self.target_format!r}")
        lines.append(f"output_format: {self.output_format!r}")
        if has_dna and self.dna_transform is not None:
            lines.append(f"dna_transform: {self.dna_transform!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        body = [f"Number of datapoints: {len(self)}", f"Root location: {self.root}", *self.extra_repr().splitlines()]
        for name in ("transform", "target_transform"):
            if getattr(self, name) is not None:
                body.append(f"{name}: {getattr(self, name)!r}")
        return "\n".join([f"Dataset {type(self).__name__}"] + ["    " + line for line in body])
