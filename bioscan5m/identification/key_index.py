"""The key index: reference specimens embedded once, saved in formats that are safe to load (no pickle), and
checked on load against its manifest."""

from __future__ import annotations

import functools
import logging
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.release import MAX_NUCLEOTIDES, ORDER_TO_SPECIES, parse_split
from ..staging import STAGING_MARKER, check_output, staged_folder
from ..embedding import KMER_PROJECTION_NAME, AlignedIdentityEncoder, KmerEncoder, make_encoder, model_type_of
from .model_reference import model_fingerprint, model_reference
from .inputs import InputError, open_photo

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


#: Ranks the identification predicts, most general first.
#: Key columns kept in ``keys.parquet`` and shown with each nearest specimen.
KEY_COLUMNS = ("processid", "split", *ORDER_TO_SPECIES, "dna_bin", "country", "province_state", "coord-lat", "coord-lon")

INDEX_FORMAT = 2
MANIFEST_NAME = "index.json"
KEYS_NAME = "keys.parquet"
DNA_INDEX_NAME = "dna.faiss"
IMAGE_INDEX_NAME = "image.faiss"
THUMBNAIL_DIR = "thumbnails"
THUMBNAIL_SIZE = 160
#: Key barcodes are cut to this length, as the release loader and BarcodeBERT do; queries are cut alike.
MAX_KEY_NUCLEOTIDES = MAX_NUCLEOTIDES
#: The only thumbnail paths an index may name: files the index build wrote, by key row (no id shapes a path).
_THUMBNAIL_PATH = re.compile(rf"{THUMBNAIL_DIR}/[0-9]{{8}}\.jpg")


@dataclass
class KeyIndex:
    """A loaded key index: reference specimens, their FAISS indexes and the embedding model that made them."""

    folder: Path
    manifest: dict
    keys: pd.DataFrame
    encoder: object
    dna_index: object
    image_index: object | None = None
    image_rows: np.ndarray | None = None  # row in `keys` of each image-index entry
    model_dir: Path | None = None  # the model folder (None for the k-mer embedding, whose projection is in `folder`)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.encoder.modalities

    @functools.cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """The key table as plain object arrays (None where missing): per-query lookups without pandas overhead."""
        return {name: np.array([json_value(value) for value in self.keys[name]], dtype=object)
                for name in (*KEY_COLUMNS, "thumbnail")}

    def describe(self) -> str:
        m = self.manifest
        return (f"{len(self.keys):,} reference specimens ({m['splits']}) from {m['data']}, embedded with "
                f"{m['encoder'].get('model', m['encoder']['kind'])}")

    def library(self) -> dict:
        """The reference library in words, for people (no server paths): its size, source and licence, and
        whether it is synthetic (every key a generated ``SYNTH`` record)."""
        processids = self.keys["processid"].astype(str)
        synthetic = bool(len(processids)) and bool(processids.str.startswith("SYNTH").all())
        source = Path(self.manifest["data"]).name if self.manifest.get("data") else "a BIOSCAN-5M release"
        species = int(self.keys["species"].nunique())
        sentence = (f"{len(self.keys):,} reference specimens of {species:,} named species from "
                    + ("a synthetic BIOSCAN-5M sample" if synthetic else f"the release `{source}`")
                    + (f" ({self.manifest['splits']} splits)" if self.manifest.get("splits") else "")
                    + f", matched by their {'DNA barcodes and photographs' if 'image' in self.modalities else 'DNA barcodes'}"
                    + f" with the {self.manifest['encoder']['kind']} embedding. Data: BIOSCAN-5M, CC BY 3.0.")
        return {"sentence": sentence, "synthetic": synthetic, "records": len(self.keys), "species": species,
                "source": source}


def build_index(data_root: str | os.PathLike, out_dir: str | os.PathLike | None = None, model: str = "kmer",
                splits: str = "train+key_unseen", calibration: str | None = "val+val_unseen+other_heldout",
                image_package: str = "cropped_256", thumbnails: bool = True, max_calibration_queries: int = 3000,
                index_type: str | None = None, batch_size: int = 128, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a key index from the records of ``splits`` of a release and save it to ``out_dir``.

    Args:
        data_root: a BIOSCAN-5M release root (e.g. ``../shared/data/bold-insects`` or a synthetic sample).
        out_dir: the index folder; default ``MODEL_DIR/index`` (beside the model), required for ``kmer``.
        model: ``"aligned"`` (barcodes compared base by base, no model: the most accurate for DNA), ``"kmer"`` /
            ``"kmer:K"`` (compact, for millions of keys), a BarcodeBERT folder or a CLIBD folder.
        splits: the key splits, any split expression (``"train+key_unseen"``, ``"all"``...).
        calibration: splits whose records calibrate the vote temperature and the novelty threshold (records of
            species absent from the keys are the "novel" examples); ``None`` skips calibration.
        image_package: where thumbnails (and CLIBD image keys) come from, when the release has images.
        thumbnails: store small key photographs for the nearest-specimen gallery.
        max_calibration_queries: calibration records used at most (a random sample).
        index_type: the FAISS index of the DNA keys (`~bioscan5m.evaluation.retrieval.faiss_index`): ``"flat"``
            (exact), ``"refine"`` (candidates from a projection, scored exactly), ``"ivf"`` (for millions of
            keys); ``None``: the encoder's own (``refine`` for ``aligned``, else ``flat``). Photograph keys are
            searched flat unless ``ivf`` is asked for.
        overwrite: replace an existing index at ``out_dir`` (only once the new one is complete); otherwise an
            existing ``out_dir`` is refused.
    """
    from ..data.metadata import read_metadata

    shared = sorted(set(parse_split(calibration)) & set(parse_split(splits))) if calibration else []
    if shared:
        raise ValueError(f"The calibration splits share {', '.join(shared)} with the key splits: calibrating on the "
                         "keys themselves measures nothing; give other splits, or none (calibration=None, --calibration none).")
    if out_dir is None:
        if model_type_of(model) in ("aligned", "kmer"):
            raise ValueError(f"Give out_dir (--out): the {model_type_of(model)} encoder has no model folder to "
                             "save the index beside.")
        out_dir = Path(model) / "index"
    # The index beside its model (the default place) may replace an older one; nothing else inside the model may.
    beside_model = Path(out_dir).expanduser().resolve() == (Path(model) / "index").resolve()
    check_output(out_dir, overwrite, inputs=(data_root, None if beside_model else model))  # before any work
    keys = read_metadata(data_root, split=splits, max_nucleotides=MAX_KEY_NUCLEOTIDES)
    if keys.empty:
        raise ValueError(f"No records in split(s) {splits!r} of {data_root}: the index would be empty.")
    calibration_records = None
    if calibration:
        calibration_records = read_metadata(data_root, split=calibration, max_nucleotides=MAX_KEY_NUCLEOTIDES)
        if len(calibration_records) > max_calibration_queries:
            calibration_records = calibration_records.sample(max_calibration_queries, random_state=seed)
    clibd = model_type_of(model) == "clibd"
    images = _release_images(data_root, splits, image_package) if thumbnails or clibd else None
    calibration_images = (_release_images(data_root, calibration, image_package)
                          if clibd and calibration_records is not None else None)
    return write_index(keys, out_dir, model=model, calibration_records=calibration_records, images=images,
                       calibration_images=calibration_images, index_type=index_type, batch_size=batch_size, seed=seed,
                       overwrite=overwrite,
                       provenance={"data": str(Path(os.path.expanduser(str(data_root))).resolve()), "splits": splits,
                                   "calibration_splits": calibration,
                                   "image_package": image_package if images is not None else None})


def _release_images(data_root, splits: str, image_package: str):
    """``processid -> PIL image`` over the release's photographs of ``splits``, or None when it has none."""
    import datasets

    from .. import load_dataset
    from ..data import release

    if not (release.image_package_dir(data_root, image_package).is_dir()
            or release.image_zip_candidates(data_root, image_package)):
        return None
    dataset = load_dataset(data_root, image_package, split=splits, skip_missing_images=True)
    dataset = dataset.select_columns(["processid", "image"]).cast_column("image", datasets.Image(decode=False))
    photos = {}
    for row in dataset:
        try:
            photos[row["processid"]] = open_photo(row["image"]["bytes"])
        except InputError as error:
            raise InputError(f"record {row['processid']!r} ({row['image']['path']}): {error}") from None
    return photos


def write_index(keys, out_dir: str | os.PathLike, model: str = "kmer", calibration_records=None,
                images: dict | None = None, calibration_images: dict | None = None, index_type: str | None = None,
                batch_size: int = 128, seed: int = 0, provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Embed the ``keys`` records (a metadata DataFrame), calibrate on ``calibration_records`` and save the index.

    ``images`` maps processid to a PIL image (thumbnails; CLIBD image keys), ``calibration_images`` likewise for
    the calibration records (photograph queries of a CLIBD index). This is the layer under
    `build_index` for keys that do not come from one release (benchmarks, merged collections). The index is
    written to a staging folder and renamed into place when complete: an interrupted build leaves the old index
    (or none), never new keys under an old manifest.
    """
    with staged_folder(out_dir, overwrite) as staging:
        _write_index(keys, staging, Path(out_dir), model, calibration_records, images, calibration_images,
                     index_type, batch_size, seed, provenance)
    return Path(out_dir)


def _write_index(keys, out: Path, final: Path, model, calibration_records, images, calibration_images, index_type,
                 batch_size, seed, provenance) -> None:
    import faiss
    import pandas as pd

    from ..evaluation.retrieval import faiss_index, l2_normalize

    started = time.perf_counter()
    keys = keys.reset_index(drop=True)
    barcodes = keys["dna_barcode"].fillna("").astype(str).str.slice(0, MAX_KEY_NUCLEOTIDES).tolist()
    logger.info("index: embedding %s key barcodes with %s", f"{len(barcodes):,}", model)
    encoder = make_encoder(model, fit_sequences=barcodes, seed=seed)
    dna_index_type = index_type or encoder.index_type
    dna_index = _dna_key_index(encoder, barcodes, dna_index_type, batch_size, seed)
    faiss.write_index(dna_index, str(out / DNA_INDEX_NAME))

    table = pd.DataFrame({column: keys[column] if column in keys else None for column in KEY_COLUMNS})
    table["thumbnail"] = None
    image_rows = None
    if images:
        (out / THUMBNAIL_DIR).mkdir(exist_ok=True)
        rows = [i for i, pid in enumerate(table["processid"]) if pid in images]
        for row in rows:
            relative = f"{THUMBNAIL_DIR}/{row:08d}.jpg"  # by row, not processid, so no id can shape a path
            thumbnail = images[table.at[row, "processid"]].convert("RGB")
            thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            thumbnail.save(out / relative, quality=85)
            table.at[row, "thumbnail"] = relative
        if "image" in encoder.modalities and rows:
            image_keys = l2_normalize(encoder.embed_images([images[table.at[r, "processid"]] for r in rows],
                                                           metadata=keys.iloc[rows]))
            faiss.write_index(faiss_index(image_keys, index="ivf" if index_type == "ivf" else "flat"),
                              str(out / IMAGE_INDEX_NAME))
            image_rows = np.asarray(rows, dtype=np.int64)
    table["image_row"] = pd.array([None] * len(table), dtype="Int64")
    if image_rows is not None:
        table.loc[image_rows, "image_row"] = np.arange(len(image_rows))
    table.to_parquet(out / KEYS_NAME, index=False)

    encoder_spec = encoder.save(out)
    if "model" in encoder_spec:
        encoder_spec.update(model_reference(encoder_spec["model"], final))
    manifest = {
        "format": INDEX_FORMAT,
        "encoder": encoder_spec,
        "keys": len(table),
        "index_type": dna_index_type,
        "max_nucleotides": MAX_KEY_NUCLEOTIDES,
        "dimensions": int(dna_index.d),
        "image_keys": 0 if image_rows is None else len(image_rows),
        "thumbnails": int(table["thumbnail"].notna().sum()),
        **{"data": None, "splits": None, "calibration_splits": None, "image_package": None, **(provenance or {})},
    }
    index = KeyIndex(out, manifest, table, encoder, dna_index)
    from .calibration import calibrate  # calibration runs queries, which need the index

    if calibration_records is not None and len(calibration_records):
        logger.info("index: calibrating on %s held-out records", f"{len(calibration_records):,}")
    manifest["calibration"] = (calibrate(index, calibration_records, images=calibration_images, batch_size=batch_size)
                               if calibration_records is not None and len(calibration_records) else None)
    manifest["build_seconds"] = round(time.perf_counter() - started, 1)
    manifest["files"] = {path.name: path.stat().st_size for path in sorted(out.iterdir())
                         if path.is_file() and path.name != STAGING_MARKER}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


#: Key barcodes embedded and added to the FAISS index this many at a time (2.5 M aligned keys are 26 GB as float32).
KEY_CHUNK = 100_000
#: Keys a chunked build trains its index on (projection and cells), drawn at random.
KEY_TRAINING_SAMPLE = 160_000


def _dna_key_index(encoder, barcodes: list[str], index_type: str, batch_size: int, seed: int):
    """The FAISS index of the key barcodes' vectors; beyond `KEY_CHUNK` keys it is trained on a random sample and
    filled chunk by chunk, so that the float vectors of all keys are never in memory at once."""
    from ..evaluation.clustering import check_embeddings
    from ..evaluation.retrieval import empty_faiss_index, faiss_index

    def vectors(part: list[str]) -> np.ndarray:
        return np.ascontiguousarray(check_embeddings(encoder.key_vectors(part, batch_size=batch_size)))

    integer_vectors = getattr(encoder, "integer_vectors", False)
    if len(barcodes) <= KEY_CHUNK:
        return faiss_index(vectors(barcodes), index=index_type, seed=seed, integer_vectors=integer_vectors)
    drawn = np.sort(np.random.default_rng(seed).choice(len(barcodes), min(KEY_TRAINING_SAMPLE, len(barcodes)),
                                                       replace=False))
    index = empty_faiss_index(vectors([barcodes[i] for i in drawn]), len(barcodes), index_type, seed=seed,
                              integer_vectors=integer_vectors)
    for start in range(0, len(barcodes), KEY_CHUNK):
        logger.info("index: keys %s-%s", f"{start:,}", f"{min(start + KEY_CHUNK, len(barcodes)):,}")
        index.add(vectors(barcodes[start:start + KEY_CHUNK]))
    return index


def load_index(folder: str | os.PathLike, model: str | os.PathLike | None = None) -> KeyIndex:
    """Load a saved key index; ``model`` overrides the model folder recorded in it (e.g. after moving it).

    The model is found relative to the index folder and must have the content recorded at build time; the key
    table, vector files and thumbnails must match the manifest. Anything else is refused with a `KeyIndexError`.
    """
    import pandas as pd

    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} is not a key index (no {MANIFEST_NAME}); build one with "
                                "`bioscan5m index build`.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise KeyIndexError(f"{manifest_path}: not valid JSON ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise KeyIndexError(f"{folder}: index format {found!r}, this bioscan5m reads format {INDEX_FORMAT}; "
                            "rebuild the index.")
    _check_manifest(manifest_path, manifest)
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.is_symlink() or path.stat().st_size != size:
            raise KeyIndexError(f"{path}: missing or not the file the manifest records ({size:,} bytes); the index "
                                "is incomplete or was altered. Rebuild it.")
    spec = manifest["encoder"]
    # Every file read below must be one the manifest lists (and so checked above): a file added beside them, or
    # a link to one outside the folder, is never read.
    read = [KEYS_NAME, DNA_INDEX_NAME]
    if spec["kind"] == "kmer":
        read.append(KMER_PROJECTION_NAME)
    if (folder / IMAGE_INDEX_NAME).exists() or (folder / IMAGE_INDEX_NAME).is_symlink():
        read.append(IMAGE_INDEX_NAME)
    for name in read:
        if name not in manifest["files"]:
            raise KeyIndexError(f"{folder / name}: not a file the manifest lists; the index was altered. Rebuild it.")
    model_dir = None
    if spec["kind"] == "kmer":
        encoder = KmerEncoder.load(folder, spec)
    elif spec["kind"] == "aligned":
        encoder = AlignedIdentityEncoder.load(folder, spec)
    else:
        model_dir = Path(model) if model is not None else folder / spec["model"]
        if not (model_dir / "config.json").is_file():
            raise KeyIndexError(f"{folder}: its model is not at {model_dir} (moved?); pass its folder with --model.")
        if model_fingerprint(model_dir) != spec.get("model_sha256"):
            raise KeyIndexError(f"{folder}: the model at {model_dir} is not the one this index was built with (its "
                                "content differs); pass the right folder with --model, or rebuild the index.")
        encoder = make_encoder(model_dir)
        if encoder.kind != spec["kind"]:
            raise KeyIndexError(f"{folder} was built with a {spec['kind']} model but {model_dir} is a {encoder.kind} "
                                "model.")
    keys = pd.read_parquet(folder / KEYS_NAME)
    dna_index = _read_faiss(folder / DNA_INDEX_NAME)
    image_index = image_rows = None
    if (folder / IMAGE_INDEX_NAME).is_file():
        image_index = _read_faiss(folder / IMAGE_INDEX_NAME)
        image_rows = np.flatnonzero(keys["image_row"].notna().to_numpy())
    _check_index_contents(folder, manifest, keys, dna_index, image_index)
    index = KeyIndex(folder, manifest, keys, encoder, dna_index, image_index, image_rows, model_dir)
    index.columns  # noqa: B018  (build the lookup arrays now, not in the first request)
    probe = encoder.embed_dna(["ACGT" * 40])  # catches a model whose embedding size differs from the index's
    if probe.shape[1] != dna_index.d:
        raise ValueError(f"{folder} holds {dna_index.d}-dimensional keys but the model embeds into {probe.shape[1]}.")
    return index


class KeyIndexError(ValueError):
    """A key index folder whose files do not agree with its manifest, or whose model is not the one it was built
    with."""


def _read_faiss(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:  # faiss reports a damaged file as a RuntimeError from its C++ reader
        raise KeyIndexError(f"{path}: not a readable FAISS index ({str(error).splitlines()[0]}).") from None


#: Manifest fields a loaded index relies on, and their types.
_MANIFEST_FIELDS = {"encoder": dict, "keys": int, "image_keys": int, "thumbnails": int, "files": dict,
                    "max_nucleotides": int}


def _check_manifest(path: Path, manifest: dict) -> None:
    for name, kind in _MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(name), kind) or isinstance(manifest.get(name), bool):
            raise KeyIndexError(f"{path}: field {name!r} is {manifest.get(name)!r}, expected {kind.__name__}; the "
                                "manifest was altered. Rebuild the index.")
    encoder = manifest["encoder"]
    if encoder.get("kind") not in ("aligned", "kmer", "barcodebert", "clibd"):
        raise KeyIndexError(f"{path}: unknown encoder kind {encoder.get('kind')!r}.")
    needed = {"aligned": {"length": int}, "kmer": {"k": int}}.get(encoder["kind"], {"model": str, "model_sha256": str})
    for name, kind in needed.items():
        if not isinstance(encoder.get(name), kind):
            raise KeyIndexError(f"{path}: encoder field {name!r} is {encoder.get(name)!r}, expected {kind.__name__}.")
    if encoder["kind"] == "aligned" and not 1 <= encoder["length"] <= 10_000:
        raise KeyIndexError(f"{path}: encoder field 'length' is {encoder['length']}, not a barcode length (1-10,000).")
    for name, size in manifest["files"].items():
        if "/" in name or "\\" in name or name.startswith(".") or not isinstance(size, int):
            raise KeyIndexError(f"{path}: files lists {name!r}, which is not a file of this folder.")


def _check_index_contents(folder: Path, manifest: dict, keys, dna_index, image_index) -> None:
    """The key table, vector indexes and thumbnails must be those the manifest describes, and every thumbnail a
    regular file the build wrote inside the index folder (the page serves them to any visitor)."""
    expected = {"key rows": (len(keys), manifest["keys"]), "DNA vectors": (dna_index.ntotal, manifest["keys"]),
                "image vectors": (0 if image_index is None else image_index.ntotal, manifest["image_keys"])}
    for what, (found, recorded) in expected.items():
        if found != recorded:
            raise KeyIndexError(f"{folder}: {found:,} {what} but the manifest records {recorded:,}; the index is "
                                "incomplete or was altered. Rebuild it.")
    if "thumbnail" not in keys.columns:
        raise KeyIndexError(f"{folder / KEYS_NAME}: no 'thumbnail' column; rebuild the index.")
    thumbnail_dir = folder / THUMBNAIL_DIR
    if thumbnail_dir.is_symlink():
        raise KeyIndexError(f"{thumbnail_dir} is a symbolic link; thumbnails must lie inside the index folder.")
    # The name pattern keeps every thumbnail directly in this folder; one listing then tells which names are regular
    # files (not links), without a system call per key.
    regular = set()
    if thumbnail_dir.is_dir():
        with os.scandir(thumbnail_dir) as entries:
            regular = {f"{THUMBNAIL_DIR}/{entry.name}" for entry in entries if entry.is_file(follow_symlinks=False)}
    count = 0
    for row, name in enumerate(keys["thumbnail"]):
        if name is None or (isinstance(name, float) and np.isnan(name)):
            continue
        if not _THUMBNAIL_PATH.fullmatch(str(name)) or str(name) not in regular:
            raise KeyIndexError(f"{folder / KEYS_NAME}, row {row}: thumbnail {name!r} is not a photograph file of "
                                f"this index ({THUMBNAIL_DIR}/NNNNNNNN.jpg, no links); refusing to serve it.")
        count += 1
    if count != manifest["thumbnails"]:
        raise KeyIndexError(f"{folder}: {count:,} thumbnails but the manifest records {manifest['thumbnails']:,}.")


def json_value(value):
    """A JSON-ready value: NaN/NA become None, numpy scalars become Python ones."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
