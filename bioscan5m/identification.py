"""Identify a specimen from its DNA barcode and/or photograph against a key index of reference specimens.

    import bioscan5m
    bioscan5m.build_index("~/bioscan", "runs/index", model="runs/clibd", splits="train+key_unseen")
    index = bioscan5m.load_index("runs/index")
    result = bioscan5m.identify(index, dna="AACATTATATTTTATTTTTGG...")
    result.ranks[-1].label, result.ranks[-1].confidence, result.novelty.possibly_undescribed

The index folder holds everything needed to answer a query, in formats that are safe to load (no pickle):

* ``index.json``: the manifest: which embedding model, which splits, the calibrated novelty threshold and vote
  temperature, and how they were measured;
* ``keys.parquet``: one row per reference specimen (taxonomy, BIN, country, coordinates, thumbnail path);
* ``dna.faiss`` (and ``image.faiss`` for CLIBD with photographs): FAISS inner-product indexes over
  L2-normalised key embeddings, so the score is the cosine similarity;
* ``kmer_projection.npy`` for the k-mer embedding (its SVD projection, read with ``allow_pickle=False``);
* ``thumbnails/``: small JPEG photographs of the keys, when the release has images.

Embedding models (``model=``): ``"kmer"`` / ``"kmer:K"`` (the k-mer-count baseline, needs no training; DNA only),
a BarcodeBERT folder (DNA), or a CLIBD folder (DNA and photographs in one space).

How the answer is made: the query is embedded and its ``vote_k`` nearest keys vote for a label at every rank,
each with weight ``exp(similarity / T)``; the temperature ``T`` is fitted at build time so that these votes are
calibrated probabilities on held-out queries of known species. A query whose nearest key is less similar than
the novelty threshold is flagged "possibly undescribed species"; the threshold is the one that best separates
held-out queries whose species is among the keys from those whose species is not (``other_heldout``, unseen
species), by Youden's J.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .staging import STAGING_MARKER, check_output, staged_folder

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

#: Ranks the identification predicts, most general first.
RANKS = ("order", "family", "genus", "species")
#: Key columns kept in ``keys.parquet`` and shown with each nearest specimen.
KEY_COLUMNS = ("processid", "split", *RANKS, "dna_bin", "country", "province_state", "coord-lat", "coord-lon")

INDEX_FORMAT = 2
MANIFEST_NAME = "index.json"
KEYS_NAME = "keys.parquet"
DNA_INDEX_NAME = "dna.faiss"
IMAGE_INDEX_NAME = "image.faiss"
KMER_PROJECTION_NAME = "kmer_projection.npy"
THUMBNAIL_DIR = "thumbnails"
#: The only thumbnail paths an index may name: files the index build wrote, by key row (no id shapes a path).
_THUMBNAIL_PATH = re.compile(rf"{THUMBNAIL_DIR}/[0-9]{{8}}\.jpg")
#: Files of a model folder that decide its embeddings (with every ``*.safetensors`` weight file, sharded or not);
#: their content hash is recorded in the index manifest.
MODEL_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.txt", "vocab.json", "preprocessor_config.json",
               "processor_config.json")

# Input limits. A COI-5P barcode is ~658 bp; BOLD records reach ~1,550 bp. Anything far longer is not a barcode.
MIN_BARCODE_NUCLEOTIDES = 100
MAX_BARCODE_NUCLEOTIDES = 2000
MAX_FASTA_BYTES = 1_000_000
MAX_PHOTO_BYTES = 20_000_000
MAX_PHOTO_PIXELS = 40_000_000  # larger than any BIOSCAN original (1024x768) or camera photo; stops pixel bombs
THUMBNAIL_SIZE = 160
#: Key barcodes are cut to this length, as the release loader and BarcodeBERT do; queries are cut alike.
MAX_KEY_NUCLEOTIDES = 660

_NUCLEOTIDE_CODES = set("ACGTRYSWKMBDHVN")
_IGNORED_IN_BARCODE = re.compile(r"[\s\-.0-9]")  # whitespace, alignment gaps, GenBank-style position numbers


class InputError(ValueError):
    """A query that cannot be identified; the message says what is wrong, in words meant for the user."""


# ---------------------------------------------------------------------------------------------- input checks
def parse_barcode(text: str) -> tuple[str | None, str]:
    """Read one barcode from pasted text or FASTA: returns ``(record id or None, upper-case sequence)``.

    Whitespace, alignment gaps (``-``, ``.``) and position numbers are dropped; IUPAC ambiguity codes are kept.
    Raises `InputError` for an empty text, a FASTA with several records, a character that is no nucleotide
    code, or a sequence shorter than `MIN_BARCODE_NUCLEOTIDES` / longer than `MAX_BARCODE_NUCLEOTIDES`.
    """
    if text is None or not str(text).strip():
        raise InputError("The DNA barcode is empty: paste a sequence (plain or FASTA) or upload a FASTA file.")
    lines = str(text).strip().splitlines()
    headers = [line for line in lines if line.startswith(">")]
    if len(headers) > 1:
        names = ", ".join(h[1:].split()[0] if h[1:].split() else "(no name)" for h in headers[:3])
        raise InputError(f"The FASTA holds {len(headers)} records ({names}{', ...' if len(headers) > 3 else ''}); "
                         "identify one specimen at a time: keep a single record.")
    record_id = None
    if headers:
        if not lines[0].startswith(">"):
            raise InputError("The FASTA text has sequence before its '>' header line; put the header first.")
        record_id = lines[0][1:].strip() or None
        lines = lines[1:]
    raw = _IGNORED_IN_BARCODE.sub("", "".join(lines)).upper()
    for position, letter in enumerate(raw, start=1):
        if letter not in _NUCLEOTIDE_CODES:
            hint = " (U is RNA; a barcode is DNA, write T)" if letter == "U" else ""
            raise InputError(f"The barcode holds {letter!r} at position {position}, which is not a nucleotide{hint}. "
                             "Expected A, C, G, T or the IUPAC codes R Y S W K M B D H V N.")
    known = sum(raw.count(letter) for letter in "ACGT")
    if not raw:
        raise InputError("The FASTA record holds no sequence, only a header.")
    if len(raw) > MAX_BARCODE_NUCLEOTIDES:
        raise InputError(f"The sequence is {len(raw):,} nucleotides long; a DNA barcode (COI-5P) is about 658, so "
                         f"at most {MAX_BARCODE_NUCLEOTIDES:,} are accepted. Paste the barcode region only.")
    if known < MIN_BARCODE_NUCLEOTIDES:
        raise InputError(f"The sequence has only {known} determined nucleotides (A/C/G/T); at least "
                         f"{MIN_BARCODE_NUCLEOTIDES} are needed to identify a specimen (a barcode is about 658).")
    return record_id, raw


def read_fasta_file(path: str | os.PathLike) -> str:
    """The text of an uploaded FASTA file, refusing files too large or not text.

    The size is capped by the bytes actually read, so pipes and devices (``/dev/stdin``) are capped too.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_FASTA_BYTES + 1)
    if len(data) > MAX_FASTA_BYTES:
        raise InputError(f"The FASTA file {path.name!r} is over {MAX_FASTA_BYTES / 1e6:.0f} MB; at most "
                         f"{MAX_FASTA_BYTES / 1e6:.0f} MB (one barcode) is accepted.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"The file {path.name!r} is not a text FASTA file (it is not UTF-8 text).") from None


def open_photo(source) -> Image.Image:
    """An uploaded photograph as an RGB PIL image, after checking its file size, format and pixel count.

    ``source`` is a path, the file's bytes or a PIL image. Raises `InputError` for files that are too large, not
    images, or have more than `MAX_PHOTO_PIXELS` pixels (checked from the header, before decoding).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            name, size, opened = "(photograph)", len(source), io.BytesIO(source)
        else:
            path = Path(source)
            name, size, opened = repr(path.name), path.stat().st_size, path
        if size > MAX_PHOTO_BYTES:
            raise InputError(f"The photograph is {size / 1e6:.1f} MB; at most {MAX_PHOTO_BYTES / 1e6:.0f} MB is accepted.")
        try:
            image = Image.open(opened)
        except Image.DecompressionBombError:
            raise _too_many_pixels(name) from None
        except (UnidentifiedImageError, OSError):
            raise InputError(f"The file {name} is not an image PIL can read (JPEG, PNG, TIFF, WebP ...).") from None
    width, height = image.size
    if width * height > MAX_PHOTO_PIXELS:
        raise _too_many_pixels(f"{width}x{height} pixels ({width * height / 1e6:.0f} MP)")
    try:
        return image.convert("RGB")
    except Image.DecompressionBombError:
        raise _too_many_pixels(f"{width}x{height} pixels") from None
    except (OSError, ValueError) as error:
        raise InputError(f"The photograph could not be decoded (truncated or corrupt file?): {error}") from None


def _too_many_pixels(what: str) -> InputError:
    return InputError(f"The photograph ({what}) has too many pixels: at most {MAX_PHOTO_PIXELS / 1e6:.0f} MP is "
                      "accepted. Downscale it first.")


# ---------------------------------------------------------------------------------------------- embedding models
class KmerEncoder:
    """The k-mer baseline as an embedding: L2-normalised k-mer counts projected on an SVD fitted to the keys."""

    kind = "kmer"
    modalities = ("dna",)

    def __init__(self, k: int, projection: np.ndarray):
        self.k = k
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)  # (dims, 4**k)

    @classmethod
    def fit(cls, sequences: Sequence[str], k: int = 6, dims: int = 256, max_fit: int = 20_000, seed: int = 0):
        from sklearn.decomposition import TruncatedSVD

        from .evaluation.baselines import kmer_counts, l2_normalize_rows

        sequences = list(sequences)
        if len(sequences) > max_fit:  # the projection only needs the variety of the keys, not all of them
            chosen = np.random.default_rng(seed).choice(len(sequences), size=max_fit, replace=False)
            sequences = [sequences[i] for i in np.sort(chosen)]
        counts = l2_normalize_rows(kmer_counts(sequences, k))
        dims = min(dims, counts.shape[0] - 1, counts.shape[1] - 1)
        svd = TruncatedSVD(n_components=dims, algorithm="randomized", random_state=seed).fit(counts)
        return cls(k, svd.components_)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        from .evaluation.baselines import kmer_counts, l2_normalize_rows

        counts = l2_normalize_rows(kmer_counts(list(sequences), self.k))
        return np.asarray(counts @ self.projection.T, dtype=np.float32)

    def save(self, folder: Path) -> dict:
        np.save(folder / KMER_PROJECTION_NAME, self.projection, allow_pickle=False)
        return {"kind": self.kind, "k": self.k, "dims": int(self.projection.shape[0])}

    @classmethod
    def load(cls, folder: Path, spec: dict):
        return cls(spec["k"], np.load(folder / KMER_PROJECTION_NAME, allow_pickle=False))


class BarcodeBertEncoder:
    """A saved BarcodeBERT: the mean of its last hidden state is the barcode's embedding."""

    kind = "barcodebert"
    modalities = ("dna",)

    def __init__(self, model_dir: str | os.PathLike):
        from .training.embeddings import load_encoder

        self.model_dir = str(model_dir)
        self.model = load_encoder(self.model_dir)
        self.model.tokenizer  # noqa: B018  (load the tokenizer now, not inside the first request's thread)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.model.embed(list(sequences), batch_size=batch_size, return_numpy=True)

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "model": self.model_dir}


class ClibdEncoder:
    """A saved CLIBD model: photographs and barcodes embedded in one space (``get_image_features`` /
    ``get_dna_features``), so a photograph can be matched against DNA keys and image keys alike."""

    kind = "clibd"
    modalities = ("dna", "image")

    def __init__(self, model_dir: str | os.PathLike):
        from transformers import AutoModel

        self.model_dir = str(model_dir)
        self.model = AutoModel.from_pretrained(self.model_dir).eval()
        self.image_processor, self.tokenizer, _ = self.model.load_processors(self.model_dir)
        self.metadata_features = tuple(self.model.config.metadata_features or ())

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        import torch

        parts = []
        with torch.inference_mode():
            for start in range(0, len(sequences), batch_size):
                encoded = self.tokenizer(list(sequences[start:start + batch_size]), padding=True, truncation=True,
                                         return_tensors="pt")
                features = self.model.get_dna_features(input_ids=encoded["input_ids"],
                                                       attention_mask=encoded["attention_mask"])
                parts.append(_as_array(features))
        return np.concatenate(parts)

    def embed_images(self, images: Sequence, metadata=None, batch_size: int = 64) -> np.ndarray:
        """Image embeddings; ``metadata`` (a DataFrame row-aligned with ``images``) feeds a model that fuses
        collection site or specimen size; without it (a user's photograph) those are unknown (NaN)."""
        import torch

        parts = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = list(images[start:start + batch_size])
                pixels = self.image_processor(batch, return_tensors="pt")["pixel_values"]
                rows = None if metadata is None else metadata.iloc[start:start + batch_size]
                parts.append(_as_array(self.model.get_image_features(pixel_values=pixels,
                                                                     **self._metadata_inputs(rows, len(batch)))))
        return np.concatenate(parts)

    def _metadata_inputs(self, rows, count: int) -> dict:
        def column(name):
            if rows is None or name not in rows:
                return [float("nan")] * count
            return rows[name].astype(float).to_numpy()

        inputs = {}
        if "geo" in self.metadata_features:
            inputs.update(latitude=column("coord-lat"), longitude=column("coord-lon"))
        if "size" in self.metadata_features:
            inputs["size"] = column("image_measurement_value")
        return inputs

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "model": self.model_dir}


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
    from .modeling.modeling_clibd import DNA_TOKENIZER_SUBFOLDER

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


def _as_array(features) -> np.ndarray:
    return features.detach().float().cpu().numpy()


def load_encoder(model: str | os.PathLike, fit_sequences: Sequence[str] | None = None, seed: int = 0):
    """The embedding model named by ``model``: ``"kmer"``/``"kmer:K"`` (fitted on ``fit_sequences``), or a saved
    BarcodeBERT or CLIBD folder (told apart by ``model_type`` in its ``config.json``)."""
    spec = str(model)
    if spec == "kmer" or spec.startswith("kmer:"):
        k = spec.partition(":")[2] or "6"
        if not k.isdigit():
            raise ValueError(f"Model {spec!r}: the k-mer length must be an integer, e.g. 'kmer:6'.")
        if fit_sequences is None:
            raise ValueError("The k-mer embedding is fitted on the key barcodes; pass fit_sequences.")
        return KmerEncoder.fit(fit_sequences, k=int(k), seed=seed)
    model_type = _model_type(spec)
    if model_type == "clibd":
        return ClibdEncoder(spec)
    if model_type == "barcodebert":
        return BarcodeBertEncoder(spec)
    raise ValueError(f"{spec}: model_type {model_type!r} is not an embedding model identify knows "
                     "(barcodebert or clibd).")


def _model_type(model: str | os.PathLike) -> str:
    """``kmer`` for the k-mer embedding, else the ``model_type`` in the folder's ``config.json``."""
    spec = str(model)
    if spec == "kmer" or spec.startswith("kmer:"):
        return "kmer"
    config_path = Path(spec) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"Model {spec!r} is neither 'kmer[:K]' nor a saved model folder (no {config_path}).")
    return json.loads(config_path.read_text()).get("model_type", "")


# ---------------------------------------------------------------------------------------------- the key index
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

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.encoder.modalities

    @functools.cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """The key table as plain object arrays (None where missing): per-query lookups without pandas overhead."""
        return {name: np.array([_plain(value) for value in self.keys[name]], dtype=object)
                for name in (*KEY_COLUMNS, "thumbnail")}

    def describe(self) -> str:
        m = self.manifest
        return (f"{len(self.keys):,} reference specimens ({m['splits']}) from {m['data']}, embedded with "
                f"{m['encoder'].get('model', m['encoder']['kind'])}")


def build_index(data_root: str | os.PathLike, out_dir: str | os.PathLike | None = None, model: str = "kmer",
                splits: str = "train+key_unseen", calibration: str | None = "val+val_unseen+other_heldout",
                image_package: str = "cropped_256", thumbnails: bool = True, max_calibration_queries: int = 3000,
                index_type: str = "flat", batch_size: int = 128, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a key index from the records of ``splits`` of a release and save it to ``out_dir``.

    Args:
        data_root: a BIOSCAN-5M release root (e.g. ``../shared/data/bold-insects`` or a synthetic sample).
        out_dir: the index folder; default ``MODEL_DIR/index`` (beside the model), required for ``kmer``.
        model: ``"kmer"`` / ``"kmer:K"``, a BarcodeBERT folder or a CLIBD folder.
        splits: the key splits, any split expression (``"train+key_unseen"``, ``"all"``...).
        calibration: splits whose records calibrate the vote temperature and the novelty threshold (records of
            species absent from the keys are the "novel" examples); ``None`` skips calibration.
        image_package: where thumbnails (and CLIBD image keys) come from, when the release has images.
        thumbnails: store small key photographs for the nearest-specimen gallery.
        max_calibration_queries: calibration records used at most (a random sample).
        index_type: ``"flat"`` (exact) or ``"ivf"`` (approximate, for millions of keys).
        overwrite: replace an existing index at ``out_dir`` (only once the new one is complete); otherwise an
            existing ``out_dir`` is refused.
    """
    from .metadata import read_metadata

    if out_dir is None:
        if str(model).startswith("kmer"):
            raise ValueError("Give out_dir: the k-mer embedding has no model folder to save the index beside.")
        out_dir = Path(model) / "index"
    check_output(out_dir, overwrite, inputs=(data_root, model))  # before any work
    keys = read_metadata(data_root, split=splits, max_nucleotides=MAX_KEY_NUCLEOTIDES)
    if keys.empty:
        raise ValueError(f"No records in split(s) {splits!r} of {data_root}: the index would be empty.")
    calibration_records = None
    if calibration:
        calibration_records = read_metadata(data_root, split=calibration, max_nucleotides=MAX_KEY_NUCLEOTIDES)
        if len(calibration_records) > max_calibration_queries:
            calibration_records = calibration_records.sample(max_calibration_queries, random_state=seed)
    clibd = _model_type(model) == "clibd"
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

    from . import load_dataset, release

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
                images: dict | None = None, calibration_images: dict | None = None, index_type: str = "flat",
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

    from .evaluation.retrieval import build_index as build_faiss_index, l2_normalize

    started = time.perf_counter()
    keys = keys.reset_index(drop=True)
    barcodes = keys["dna_barcode"].fillna("").astype(str).str.slice(0, MAX_KEY_NUCLEOTIDES).tolist()
    encoder = load_encoder(model, fit_sequences=barcodes, seed=seed)
    dna_keys = l2_normalize(encoder.embed_dna(barcodes, batch_size=batch_size))
    dna_index = build_faiss_index(dna_keys, index=index_type)
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
            faiss.write_index(build_faiss_index(image_keys, index=index_type), str(out / IMAGE_INDEX_NAME))
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
        "index_type": index_type,
        "max_nucleotides": MAX_KEY_NUCLEOTIDES,
        "dimensions": int(dna_keys.shape[1]),
        "image_keys": 0 if image_rows is None else len(image_rows),
        "thumbnails": int(table["thumbnail"].notna().sum()),
        **{"data": None, "splits": None, "calibration_splits": None, "image_package": None, **(provenance or {})},
    }
    index = KeyIndex(out, manifest, table, encoder, dna_index)
    manifest["calibration"] = (calibrate(index, calibration_records, images=calibration_images, batch_size=batch_size)
                               if calibration_records is not None and len(calibration_records) else None)
    manifest["build_seconds"] = round(time.perf_counter() - started, 1)
    manifest["files"] = {path.name: path.stat().st_size for path in sorted(out.iterdir())
                         if path.is_file() and path.name != STAGING_MARKER}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


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
    if spec["kind"] == "kmer":
        encoder = KmerEncoder.load(folder, spec)
    else:
        model_dir = Path(model) if model is not None else folder / spec["model"]
        if not (model_dir / "config.json").is_file():
            raise KeyIndexError(f"{folder}: its model is not at {model_dir} (moved?); pass its folder with --model.")
        if model_fingerprint(model_dir) != spec.get("model_sha256"):
            raise KeyIndexError(f"{folder}: the model at {model_dir} is not the one this index was built with (its "
                                "content differs); pass the right folder with --model, or rebuild the index.")
        encoder = load_encoder(model_dir)
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
    index = KeyIndex(folder, manifest, keys, encoder, dna_index, image_index, image_rows)
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
    if encoder.get("kind") not in ("kmer", "barcodebert", "clibd"):
        raise KeyIndexError(f"{path}: unknown encoder kind {encoder.get('kind')!r}.")
    needed = {"k": int} if encoder["kind"] == "kmer" else {"model": str, "model_sha256": str}
    for name, kind in needed.items():
        if not isinstance(encoder.get(name), kind):
            raise KeyIndexError(f"{path}: encoder field {name!r} is {encoder.get(name)!r}, expected {kind.__name__}.")
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


# ---------------------------------------------------------------------------------------------- identification
@dataclass
class RankPrediction:
    rank: str
    label: str | None
    confidence: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # best first, the prediction included


@dataclass
class Novelty:
    possibly_undescribed: bool | None  # None when the index was built without calibration
    similarity: float
    threshold: float | None


@dataclass
class Identification:
    """The answer to one query: the predicted lineage, the novelty flag and the nearest reference specimens."""

    ranks: list[RankPrediction]
    novelty: Novelty
    neighbours: list[dict]
    query: dict
    seconds: float

    def prediction(self, rank: str) -> RankPrediction:
        return next(p for p in self.ranks if p.rank == rank)

    def to_dict(self) -> dict:
        return asdict(self)


def identify(index: KeyIndex | str | os.PathLike, dna: str | None = None, image=None, top_k: int = 10,
             vote_k: int = 25, key_modality: str = "dna") -> Identification:
    """Identify one specimen from its DNA barcode (pasted text or one FASTA record) and/or photograph.

    Args:
        index: a `KeyIndex` or the folder of one (loaded once and cached).
        dna: the barcode; checked by `parse_barcode`.
        image: a photograph (path or PIL image); needs an index built with a CLIBD model.
        top_k: nearest reference specimens returned.
        vote_k: nearest keys that vote for the labels.
        key_modality: ``"dna"`` (match against the keys' barcodes) or ``"image"`` (against their photographs,
            CLIBD indexes with image keys only).
    Returns:
        an `Identification`. Raises `InputError` with a message for the user when the query cannot be answered.
    """
    started = time.perf_counter()
    for name, value in (("top_k", top_k), ("vote_k", vote_k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(index, KeyIndex):
        index = _cached_index(str(index))
    has_dna = dna is not None and str(dna).strip() != ""
    if not has_dna and image is None:
        raise InputError("Nothing to identify: paste a DNA barcode, upload a FASTA file, or upload a photograph.")
    query: dict = {"modalities": []}
    vectors = {}
    if has_dna:
        record_id, sequence = parse_barcode(dna)
        sequence = sequence[:index.manifest["max_nucleotides"]]  # queries are cut like the keys were
        vectors["dna"] = _unit(index.encoder.embed_dna([sequence]))
        query.update(modalities=["dna"], record_id=record_id, nucleotides=len(sequence))
    if image is not None:
        photo = open_photo(image)
        if "image" not in index.modalities:
            raise InputError(f"This index was built with a DNA-only model ({index.encoder.kind}), so it cannot "
                             "identify photographs: paste the barcode instead, or serve an index built with a CLIBD model.")
        vectors["image"] = _unit(index.encoder.embed_images([photo]))
        query["modalities"].append("image")
        query["image_size"] = list(photo.size)
    query_vector = _unit(np.mean(list(vectors.values()), axis=0))  # DNA and photo together: the mean direction

    if key_modality == "image":
        if index.image_index is None:
            raise InputError("This index has no photograph keys; match against DNA keys (key_modality='dna').")
        scores, hits = index.image_index.search(query_vector, max(top_k, vote_k))
        hits = np.where(hits >= 0, index.image_rows[np.clip(hits, 0, None)], -1)
    elif key_modality == "dna":
        scores, hits = index.dna_index.search(query_vector, max(top_k, vote_k))
    else:
        raise ValueError(f"key_modality must be 'dna' or 'image'; got {key_modality!r}.")
    valid = hits[0] >= 0
    scores, hits = scores[0][valid], hits[0][valid]

    # Calibrated for a barcode (or a photograph alone) against DNA keys. With both, the barcode decides novelty,
    # being the surer of the two, and the ranking uses both.
    basis = "dna" if "dna" in vectors else "image"
    calibration = ((index.manifest.get("calibration") or {}).get(basis) or {}) if key_modality == "dna" else {}
    ranks = vote({rank: index.columns[rank][hits[:vote_k]] for rank in RANKS}, scores[:vote_k],
                 calibration.get("temperature", DEFAULT_TEMPERATURE))
    threshold = calibration.get("novelty_threshold")
    nearest = float(scores[0]) if len(vectors) == 1 else float(index.dna_index.search(vectors[basis], 1)[0][0, 0])
    novelty = Novelty(None if threshold is None else bool(nearest < threshold), nearest, threshold)
    neighbours = _neighbour_records(index, hits[:top_k], scores[:top_k])
    return Identification(ranks, novelty, neighbours, query, time.perf_counter() - started)


DEFAULT_TEMPERATURE = 0.02


def vote(neighbour_labels: dict[str, np.ndarray], similarities: np.ndarray, temperature: float) -> list[RankPrediction]:
    """Per rank, the share of ``exp(similarity / T)`` weight of the neighbours carrying each label.

    ``neighbour_labels`` maps each rank to the neighbours' labels; those without one (None, e.g. pretrain
    records) abstain at that rank.
    """
    weights = np.exp((similarities - similarities.max()) / temperature)
    predictions = []
    for rank in RANKS:
        labels = neighbour_labels[rank]
        labelled = np.array([isinstance(label, str) and label != "" for label in labels])
        if not labelled.any():
            predictions.append(RankPrediction(rank, None, 0.0))
            continue
        totals: dict[str, float] = {}
        for label, weight in zip(labels[labelled], weights[labelled]):
            totals[label] = totals.get(label, 0.0) + float(weight)
        mass = sum(totals.values())
        ranked = sorted(((label, value / mass) for label, value in totals.items()), key=lambda item: -item[1])
        predictions.append(RankPrediction(rank, ranked[0][0], ranked[0][1], ranked[:5]))
    return predictions


def _neighbour_records(index: KeyIndex, hits: np.ndarray, scores: np.ndarray) -> list[dict]:
    records = []
    for row, score in zip(hits, scores):
        record = {column: index.columns[column][row] for column in KEY_COLUMNS}
        record["similarity"] = round(float(score), 4)
        thumbnail = index.columns["thumbnail"][row]
        record["thumbnail"] = str(index.folder / thumbnail) if thumbnail else None
        records.append(record)
    return records


def _plain(value):
    """A JSON-ready value: NaN/NA become None, numpy scalars become Python ones."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


_INDEX_CACHE: dict[str, KeyIndex] = {}


def _cached_index(folder: str) -> KeyIndex:
    if folder not in _INDEX_CACHE:
        _INDEX_CACHE[folder] = load_index(folder)
    return _INDEX_CACHE[folder]


# ---------------------------------------------------------------------------------------------- calibration
def calibrate(index: KeyIndex, records, images: dict | None = None, batch_size: int = 128, vote_k: int = 25,
              species_out_k: int = 256) -> dict:
    """Fit the vote temperature and the novelty threshold on held-out ``records`` (a metadata DataFrame), for
    barcode queries and, with a CLIBD model and ``images`` (processid -> PIL image), for photograph queries.

    A record is *known* when its species is among the keys' species and *novel* when it is absent (records
    without a species label are left out). Held-out splits mostly give novel records of unseen genera
    (``other_heldout``), the easy case; so every known record is also used a second time as a novel one, with
    the keys of its own species left out ("leave-species-out"), which stands for an undescribed species of a
    known genus. The temperature minimises the negative log-likelihood of the known records' labels over the
    ranks; the threshold on the nearest key's similarity maximises Youden's J (novel flagged minus known flagged).
    Returns ``{"dna": {...}, "image": {...}}`` (``image`` only when photographs were calibrated).
    """
    records = records[records["species"].notna()].reset_index(drop=True)
    if len(records) == 0:
        return {"dna": {"records": 0, "note": "no calibration records with a species label"}}
    barcodes = records["dna_barcode"].fillna("").astype(str).str.slice(0, MAX_KEY_NUCLEOTIDES).tolist()
    result = {"dna": _calibrate_queries(index, records, index.encoder.embed_dna(barcodes, batch_size=batch_size),
                                        vote_k, species_out_k)}
    if images and "image" in index.modalities:
        with_photo = records[records["processid"].isin(images)].reset_index(drop=True)
        if len(with_photo):
            photos = [images[pid] for pid in with_photo["processid"]]
            result["image"] = _calibrate_queries(index, with_photo, index.encoder.embed_images(photos), vote_k,
                                                 species_out_k)
    return result


def _calibrate_queries(index: KeyIndex, records, vectors: np.ndarray, vote_k: int, species_out_k: int) -> dict:
    key_species = index.keys["species"].to_numpy()
    novel = ~records["species"].isin(set(index.keys["species"].dropna())).to_numpy()
    scores, hits = index.dna_index.search(_unit(vectors), min(len(index.keys), max(vote_k, species_out_k)))
    result = {"records": int(len(records)), "known": int((~novel).sum()), "novel": int(novel.sum()),
              "temperature": DEFAULT_TEMPERATURE, "novelty_threshold": None}
    known_rows = np.flatnonzero(~novel)
    if len(known_rows):
        result.update(_fit_temperature(index.keys, records.iloc[known_rows], scores[known_rows, :vote_k],
                                       hits[known_rows, :vote_k]))
    # Leave-species-out: the best key of another species (among the first species_out_k) for each known record.
    other_species = (key_species[np.clip(hits[known_rows], 0, None)] != records["species"].to_numpy()[known_rows, None])
    other_species &= hits[known_rows] >= 0
    found = other_species.any(axis=1)
    species_out = scores[known_rows][found, other_species[found].argmax(axis=1)]
    result["novel_leave_species_out"] = int(found.sum())
    nearest = np.concatenate([scores[:, 0], species_out])
    is_novel = np.concatenate([novel, np.ones(len(species_out), dtype=bool)])
    if is_novel.any() and (~is_novel).any():
        result.update(_fit_threshold(nearest, is_novel))
        result.update(_flag_rates(nearest, is_novel, result["novelty_threshold"], novel, len(species_out)))
    return result


def _flag_rates(nearest, is_novel, threshold, novel, species_out_count) -> dict:
    """Share of each kind of calibration record the threshold flags as possibly undescribed."""
    flagged = nearest < threshold
    held_out = flagged[:len(novel)][novel]
    return {"flagged_known": round(float(flagged[:len(novel)][~novel].mean()), 4) if (~novel).any() else None,
            "flagged_novel_held_out": round(float(held_out.mean()), 4) if len(held_out) else None,
            "flagged_leave_species_out": round(float(flagged[len(novel):].mean()), 4) if species_out_count else None}


def _fit_temperature(keys, records, scores: np.ndarray, hits: np.ndarray) -> dict:
    candidates = np.geomspace(1e-3, 1.0, 19)
    labels = {rank: keys[rank].to_numpy()[hits] for rank in RANKS}
    truths = {rank: records[rank].to_numpy() for rank in RANKS}
    losses = []
    for temperature in candidates:
        weights = np.exp((scores - scores[:, :1]) / temperature)
        loss = 0.0
        for rank in RANKS:
            known = np.array([isinstance(t, str) for t in truths[rank]])
            labelled = np.vectorize(lambda label: isinstance(label, str), otypes=[bool])(labels[rank])
            correct = (labels[rank] == truths[rank][:, None]) & labelled
            share = (weights * correct).sum(1) / np.maximum((weights * labelled).sum(1), 1e-12)
            loss -= np.log(np.clip(share[known], 1e-4, 1.0)).mean() if known.any() else 0.0
        losses.append(loss / len(RANKS))
    losses = np.asarray(losses)
    # On easily separated keys many temperatures fit alike; the softest of them avoids needless overconfidence.
    best = int(np.flatnonzero(losses <= losses.min() + 0.01).max())
    top1 = (labels["species"][:, 0] == truths["species"]).mean()
    return {"temperature": float(candidates[best]), "mean_nll": round(float(losses[best]), 4),
            "species_top1_known": round(float(top1), 4)}


def _fit_threshold(nearest: np.ndarray, novel: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    # Novel records should have LOW nearest-key similarity, so the novelty score is its negative.
    false_rate, true_rate, thresholds = roc_curve(novel, -nearest)
    best = int(np.argmax(true_rate - false_rate))
    # roc_curve flags similarity <= cut; the threshold goes midway to the next similarity seen, and flags below it.
    cut = -thresholds[best]
    above = nearest[nearest > cut]
    threshold = (cut + above.min()) / 2 if len(above) else cut
    return {"novelty_threshold": float(threshold), "novelty_auroc": round(float(roc_auc_score(novel, -nearest)), 4)}


def format_identification(result: Identification) -> str:
    """A plain-text report of an identification (the CLI's output)."""
    lines = []
    for p in result.ranks:
        lines.append(f"{p.rank:<8} {p.label or '(no label among the nearest keys)':<40} {100 * p.confidence:5.1f} %")
    n = result.novelty
    if n.possibly_undescribed:
        lines.append(f"POSSIBLY UNDESCRIBED SPECIES: the nearest reference is at similarity {n.similarity:.3f}, "
                     f"below the calibrated threshold {n.threshold:.3f}.")
    elif n.threshold is not None:
        lines.append(f"nearest reference similarity {n.similarity:.3f} (novelty threshold {n.threshold:.3f})")
    lines.append("")
    lines.append(f"{'similarity':>10}  {'processid':<14} {'species':<32} {'BIN':<14} country")
    for record in result.neighbours:
        lines.append(f"{record['similarity']:>10.4f}  {record['processid'] or '':<14} {record['species'] or '-':<32} "
                     f"{record['dna_bin'] or '-':<14} {record['country'] or '-'}")
    return "\n".join(lines)


__all__ = ["InputError", "KeyIndexError", "KeyIndex", "Identification", "RankPrediction", "Novelty", "build_index", "write_index",
           "load_index", "identify", "parse_barcode", "read_fasta_file", "open_photo", "format_identification",
           "MAX_BARCODE_NUCLEOTIDES", "MIN_BARCODE_NUCLEOTIDES", "MAX_PHOTO_BYTES", "MAX_PHOTO_PIXELS"]
