"""Every embedding the package makes, in one place: barcodes compared base by base in the reference frame (no
model), the k-mer baseline (SVD of k-mer counts), a saved BarcodeBERT and a saved CLIBD (photographs and DNA in one
space), resolved from ``"aligned"``, ``"kmer[:K]"`` or a model folder by :func:`make_encoder`; any timm image model
(`TimmImageEncoder`) and the photographs of a release's records (`embed_release_images`); and BarcodeBERT
embeddings at scale (batched, length-sorted, written to disk as they come).

    from bioscan5m.embedding import embed_sequences, make_encoder
    vectors = embed_sequences("runs/bb", barcodes, out_path="emb.npy", dtype=np.float16)
    encoder = make_encoder("kmer:6", fit_sequences=keys)          # or "aligned", a BarcodeBERT / CLIBD folder
    dna_vectors = encoder.embed_dna(barcodes)
    keys, queries = encoder.key_vectors(barcodes), encoder.query_vectors(more)  # inner product = similarity

k-mer counts: every overlapping k-mer of A/C/G/T (windows touching any other character are skipped) counted per
sequence into a sparse ``(n, 4**k)`` matrix; L2-normalised rows (:func:`l2_normalize_rows`) make cosine similarity an
inner product.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .staging import check_output, staged_file

if TYPE_CHECKING:
    import torch


# --- k-mer counts, the k-mer baseline's features ---

#: A/C/G/T (either case) to 0-3, every other byte to 4.
BASE_CODES = np.full(256, 4, dtype=np.uint8)
for _i, _base in enumerate(b"ACGT"):
    BASE_CODES[_base] = _i
    BASE_CODES[ord(chr(_base).lower())] = _i


def kmer_counts(sequences: Sequence[str], k: int = 6, chunk_size: int = 20_000):
    """Overlapping k-mer counts as a ``scipy.sparse.csr_matrix`` of shape ``(n, 4**k)`` (float32).

    Column ``j`` is the k-mer whose bases, read as base-4 digits A=0 C=1 G=2 T=3, spell ``j``.
    """
    import scipy.sparse as sp

    if not 1 <= k <= 12:
        raise ValueError(f"k must be between 1 and 12 (4**k columns); got {k}.")
    parts = []
    for start in range(0, len(sequences), chunk_size):
        parts.append(_kmer_counts_chunk(sequences[start:start + chunk_size], k))
    if not parts:
        return sp.csr_matrix((0, 4 ** k), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def _kmer_counts_chunk(sequences: Sequence[str], k: int):
    import scipy.sparse as sp

    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    codes = BASE_CODES[np.frombuffer("".join(sequences).encode("ascii", "replace"), dtype=np.uint8)]
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    total = len(codes)
    window_count = total - k + 1
    if window_count <= 0:
        return sp.csr_matrix((len(sequences), 4 ** k), dtype=np.float32)
    value = np.zeros(window_count, dtype=np.int64)
    for offset in range(k):
        value = value * 4 + np.minimum(codes[offset:offset + window_count], 3)
    # A window is valid when all its bases are ACGT and it does not cross into the next sequence.
    invalid = np.concatenate([[0], np.cumsum(codes == 4)])
    valid = (invalid[k:k + window_count] - invalid[:window_count]) == 0
    row = np.repeat(np.arange(len(sequences)), lengths)[:window_count]
    position = np.arange(window_count) - starts[row]
    valid &= position + k <= lengths[row]
    matrix = sp.coo_matrix((np.ones(valid.sum(), dtype=np.float32), (row[valid], value[valid])),
                           shape=(len(sequences), 4 ** k))
    return matrix.tocsr()


def kmer_length(spec) -> int | None:
    """The k of a k-mer model name (``"kmer"`` is k = 6, ``"kmer:K"`` any other k), or None for any other name."""
    spec = str(spec)
    if spec != "kmer" and not spec.startswith("kmer:"):
        return None
    k = spec.partition(":")[2] or "6"
    if not k.isdigit() or not 1 <= int(k) <= 12:
        raise ValueError(f"{spec!r}: the k-mer length must be an integer from 1 to 12, e.g. 'kmer:6'.")
    return int(k)


def l2_normalize_rows(matrix):
    """Rows scaled to unit L2 norm (zero rows stay zero); dense or scipy sparse."""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms).astype(np.float32) @ matrix
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def kmer_embeddings(sequences: Sequence[str], k: int = 6, svd_dims: int | None = 256, seed: int = 0,
                    fit_sequences: Sequence[str] | None = None) -> np.ndarray:
    """The k-mer baseline embedding: L2-normalised k-mer counts, projected to ``svd_dims`` by a truncated SVD.

    The SVD is fitted on ``fit_sequences`` when given (e.g. the keys), else on ``sequences`` themselves (it uses
    no labels). ``svd_dims=None`` returns the dense normalised counts (``4**k`` columns).
    """
    counts = l2_normalize_rows(kmer_counts(sequences, k))
    if svd_dims is None:
        return counts.toarray()
    fit_on = counts if fit_sequences is None else l2_normalize_rows(kmer_counts(fit_sequences, k))
    return kmer_svd(fit_on, svd_dims, seed).transform(counts).astype(np.float32)


def kmer_svd(counts, dims: int, seed: int = 0):
    """A truncated SVD of normalised k-mer counts (no labels), to ``dims`` components or fewer when the counts have
    fewer rows or columns: the projection of every k-mer embedding here."""
    from sklearn.decomposition import TruncatedSVD

    components = max(1, min(dims, counts.shape[0] - 1, counts.shape[1] - 1))
    return TruncatedSVD(n_components=components, algorithm="randomized", random_state=seed).fit(counts)


# --- Barcodes in the COI-5P reference frame, the aligned-identity features ---

def aligned_base_codes(sequences: Sequence[str], length: int = 660) -> np.ndarray:
    """Barcodes in COI-5P reference coordinates as base codes, ``(n, length)`` uint8: 0–3 for A, C, G, T and 4
    where the barcode has no base (``N``, other codes, before it starts, after it ends).

    Each barcode is placed by :func:`~bioscan5m.tokenization.reference_frame.place_bases`: as a whole (leading
    ``N`` or upstream bases dropped), then stretch by stretch where an insertion or deletion shifts the rest.
    """
    from .tokenization.reference_frame import place_bases

    return place_bases([str(sequence).upper() for sequence in sequences], length)


def one_hot_bases(codes: np.ndarray) -> np.ndarray:
    """``(n, 4 * L)`` float32 one-hot rows of `aligned_base_codes` (no 1 where a barcode has no base)."""
    vectors = np.zeros((len(codes), codes.shape[1], 4), dtype=np.float32)
    rows, positions = np.nonzero(codes < 4)
    vectors[rows, positions, codes[rows, positions]] = 1.0
    return vectors.reshape(len(codes), 4 * codes.shape[1])


# --- Encoders: one object per embedding model, with embed_dna (and embed_images for CLIBD) ---

class CosineEncoder:
    """An encoder whose keys and queries are the same embedding, compared by cosine similarity: the vectors a key
    index stores and searches by inner product are the L2-normalised embeddings."""

    #: The identification vote's temperature; None: fitted when an index is calibrated.
    temperature: float | None = None
    #: The FAISS index a key index uses by default (`~bioscan5m.evaluation.retrieval.faiss_index`).
    index_type = "flat"
    #: Key vectors are float embeddings, stored as float32.
    integer_vectors = False

    def key_vectors(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return l2_normalize_rows(self.embed_dna(sequences, batch_size=batch_size))

    def query_vectors(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.key_vectors(sequences, batch_size=batch_size)


class AlignedIdentityEncoder:
    """No model: barcodes compared base by base in the COI-5P reference frame, without gaps, as a BLAST top hit
    compares them; the similarity is an inner product, so FAISS searches it.

    A key is its one-hot bases (`one_hot_bases`); a query scores +1 for every base identical to the key's and -1
    for every base that differs, at the positions both barcodes cover, divided by the query's bases. So the
    similarity is 1 for a key identical over the whole query, ``2 * identity - 1`` for a full-length overlap (0.96
    is 98 % identity), and a fragment that matches a short stretch scores below a key that matches more of the query.
    Counting identical bases alone would prefer a long key with many differences to a shorter one identical to
    the query. Key vectors are ``4 * length`` zeros and ones, stored exactly as float16: the index costs
    ``8 * length`` bytes per key (5.3 kB at 660) plus the refine index's 256-d projection (1 kB; 256 bytes in the
    ``ivf`` index, for millions of keys).
    """

    kind = "aligned"
    modalities = ("dna",)
    #: The identification vote's temperature, in similarity units (1/658 is one base of a full barcode): the
    #: nearest key decides and keys as near vote. Chosen on the open-world protocol built from ``val`` and
    #: ``val_unseen`` (never on the test splits): softer temperatures lose accuracy far from the keys.
    temperature = 0.001
    #: Wide vectors: candidates from the keys' leading singular directions, scored exactly on the full vectors.
    index_type = "refine"
    #: One-hot keys: stored exactly as float16.
    integer_vectors = True

    def __init__(self, length: int = 660):
        self.length = int(length)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.key_vectors(sequences)

    def key_vectors(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return one_hot_bases(aligned_base_codes(list(sequences), self.length))

    def query_vectors(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        codes = aligned_base_codes(list(sequences), self.length)
        covered = codes < 4
        scores = 2 * one_hot_bases(codes).reshape(len(codes), self.length, 4) - covered[:, :, None]
        scores /= np.maximum(covered.sum(axis=1), 1)[:, None, None]
        return scores.reshape(len(codes), 4 * self.length)

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "length": self.length}

    @classmethod
    def load(cls, folder: Path, spec: dict):
        return cls(spec["length"])


KMER_PROJECTION_NAME = "kmer_projection.npy"


class KmerEncoder(CosineEncoder):
    """The k-mer baseline as an embedding: L2-normalised k-mer counts projected on an SVD fitted to the keys."""

    kind = "kmer"
    modalities = ("dna",)

    def __init__(self, k: int, projection: np.ndarray):
        self.k = k
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)  # (dims, 4**k)

    @classmethod
    def fit(cls, sequences: Sequence[str], k: int = 6, dims: int = 256, max_fit: int = 20_000, seed: int = 0):
        sequences = list(sequences)
        if len(sequences) > max_fit:  # the projection only needs the variety of the keys, not all of them
            chosen = np.random.default_rng(seed).choice(len(sequences), size=max_fit, replace=False)
            sequences = [sequences[i] for i in np.sort(chosen)]
        return cls(k, kmer_svd(l2_normalize_rows(kmer_counts(sequences, k)), dims, seed).components_)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        counts = l2_normalize_rows(kmer_counts(list(sequences), self.k))
        return np.asarray(counts @ self.projection.T, dtype=np.float32)

    def save(self, folder: Path) -> dict:
        np.save(folder / KMER_PROJECTION_NAME, self.projection, allow_pickle=False)
        return {"kind": self.kind, "k": self.k, "dims": int(self.projection.shape[0])}

    @classmethod
    def load(cls, folder: Path, spec: dict):
        return cls(spec["k"], np.load(folder / KMER_PROJECTION_NAME, allow_pickle=False))


class BarcodeBertEncoder(CosineEncoder):
    """A saved BarcodeBERT: the mean of its last hidden state is the barcode's embedding."""

    kind = "barcodebert"
    modalities = ("dna",)

    def __init__(self, model_dir: str | os.PathLike):
        self.model_dir = str(model_dir)
        self.model = load_encoder(self.model_dir)
        self.model.tokenizer  # noqa: B018  (load the tokenizer now, not inside the first request's thread)

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.model.embed(list(sequences), batch_size=batch_size, return_numpy=True)

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "model": self.model_dir}


class ClibdEncoder(CosineEncoder):
    """A saved CLIBD model: photographs and barcodes embedded in one space (``get_image_features`` /
    ``get_dna_features``), so a photograph can be matched against DNA keys and image keys alike."""

    kind = "clibd"
    modalities = ("dna", "image")

    def __init__(self, model_dir: str | os.PathLike):
        from transformers import AutoModel

        from .modeling.processing_clibd import ClibdProcessor

        self.model_dir = str(model_dir)
        self.model = AutoModel.from_pretrained(self.model_dir).eval()
        self.processor = ClibdProcessor.from_pretrained(self.model_dir)
        self.metadata_features = tuple(self.model.config.metadata_features or ())

    def embed_dna(self, sequences: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self._embed({"dna_barcode": list(sequences)}, "dna", batch_size)

    def embed_images(self, images: Sequence, metadata=None, batch_size: int = 64) -> np.ndarray:
        """Image embeddings; ``metadata`` (a DataFrame row-aligned with ``images``) feeds a model that fuses
        collection site or specimen size; without it (a user's photograph) those are unknown (None)."""
        from .training.train_clibd import METADATA_COLUMNS

        records = {"image": list(images)}
        for column in (c for feature in self.metadata_features for c in METADATA_COLUMNS.get(feature, {}).values()):
            known = metadata is not None and column in metadata
            records[column] = metadata[column].tolist() if known else [None] * len(records["image"])
        return self._embed(records, "image", batch_size)

    def _embed(self, records: dict, modality: str, batch_size: int) -> np.ndarray:
        from .evaluation.clibd_retrieval import embed_records

        return embed_records(self.model, records, (modality,), self.processor, batch_size)[modality]

    def save(self, folder: Path) -> dict:
        return {"kind": self.kind, "model": self.model_dir}


class TimmImageEncoder:
    """Any timm image model as a photograph embedding: its pooled features (``num_classes=0``), after the
    zero-shot clustering protocol's preprocessing: the shorter side resized to the model's input size (bilinear,
    antialiased), a centre crop, and the model's own mean and std (ImageNet's, or CLIP's for CLIP models).

    Weights come from the Hub (``weights=None``, timm's pretrained tag for ``name``) or from a local
    ``.safetensors`` file of the model's state dict; a classifier head in the file is ignored.
    """

    kind = "timm"
    modalities = ("image",)

    def __init__(self, name: str, weights: str | os.PathLike | None = None, num_threads: int | None = None):
        import timm
        import torch

        if not timm.is_model(name):
            raise ValueError(f"{name!r} is not a timm model name (see timm.list_models()).")
        self.name, self.weights = name, None if weights is None else str(weights)
        if weights is None:
            try:
                self.model = timm.create_model(name, pretrained=True, num_classes=0)
            except Exception as error:  # offline, or no pretrained tag: say how to give weights instead
                raise OSError(f"timm model {name!r}: its pretrained weights could not be fetched from the Hub "
                              f"({type(error).__name__}); give local weights instead (--weights FILE.safetensors).") from None
        else:
            self.model = timm.create_model(name, pretrained=False, num_classes=0)
            self.model.load_state_dict(_timm_state_dict(self.model, weights))
        self.model.eval()
        config = timm.data.resolve_data_config({}, model=self.model)
        self.image_size = int(config["input_size"][-1])
        self.mean = np.asarray(config["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(config["std"], np.float32).reshape(3, 1, 1)
        self.num_threads = num_threads or os.cpu_count() or 1
        self.dims = int(self.model.num_features)
        self._torch = torch

    def preprocess(self, image) -> np.ndarray:
        """One image (PIL or ``(H, W, 3)`` uint8 array) as the model's ``(3, size, size)`` float input."""
        from PIL import Image

        picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        width, height = picture.size
        short, long = sorted((width, height))
        long = int(self.image_size * long / short)  # truncated, as torchvision's Resize computes it
        size = (self.image_size, long) if width <= height else (long, self.image_size)
        picture = picture.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        left = int(round((size[0] - self.image_size) / 2.0))
        top = int(round((size[1] - self.image_size) / 2.0))
        pixels = np.asarray(picture)[top:top + self.image_size, left:left + self.image_size]
        return (pixels.transpose(2, 0, 1).astype(np.float32) / 255.0 - self.mean) / self.std

    def embed_images(self, images: Sequence, metadata=None, batch_size: int = 64) -> np.ndarray:
        """Pooled features of each image, ``(len(images), num_features)``; resizing runs on a thread pool (PIL
        releases the GIL while it resamples)."""
        from concurrent.futures import ThreadPoolExecutor

        torch = self._torch
        out = np.empty((len(images), self.dims), np.float32)
        with ThreadPoolExecutor(self.num_threads) as pool, torch.inference_mode():
            for start in range(0, len(images), batch_size):
                inputs = np.stack(list(pool.map(self.preprocess, images[start:start + batch_size])))
                out[start:start + len(inputs)] = self.model(torch.from_numpy(inputs)).float().numpy()
        return out


def _timm_state_dict(model, weights) -> dict:
    from safetensors.torch import load_file

    path = Path(weights).expanduser()
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: image weights are read from .safetensors files only (never unpickled).")
    if not path.is_file():
        raise FileNotFoundError(f"image weights {path} do not exist.")
    try:
        state = load_file(path)
    except Exception as error:  # safetensors raises its own error type for a damaged or foreign file
        raise ValueError(f"{path}: not a readable .safetensors file ({error}).") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{path}: not weights of this model: {len(missing)} tensors missing (e.g. {missing[0]!r}).")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"{path}: tensor {wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, the model's is "
                         f"{tuple(expected[wrong[0]].shape)}.")
    return {k: state[k] for k in expected}  # a classifier head in the file has no place in a num_classes=0 model


def embed_release_images(encoder, root, processids: Sequence[str], splits: Sequence[str], config: str = "cropped_256",
                         batch_size: int = 64, num_threads: int | None = None, progress: bool = True,
                         cache_dir=None) -> np.ndarray:
    """Embed the photographs of records of a release with an image encoder (`TimmImageEncoder`, `ClibdEncoder`),
    one row per processid in the order given.

    The images are read in place from the image package ``config`` (folders or the official zips) of the splits
    named in ``splits``, decoded in batches on a thread pool (`~bioscan5m.data.images.iter_image_batches`) while the
    model embeds the previous batch; the records' other columns go to an encoder that fuses metadata.
    """
    import bioscan5m
    import pandas as pd

    if config == "dna":
        raise ValueError("Image embeddings need an image package (e.g. cropped_256), not the 'dna' config.")
    dataset = bioscan5m.load_dataset(root, config, split="+".join(sorted(set(splits))), cache_dir=cache_dir)
    rows = pd.Index(dataset["processid"]).get_indexer(list(processids))
    if (rows < 0).any():
        missing = list(processids)[int(np.flatnonzero(rows < 0)[0])]
        raise ValueError(f"{root}: record {missing!r} has no image in the {config} package.")
    return embed_image_dataset(encoder, dataset.select(rows), batch_size, num_threads, progress,
                               desc=f"embedding {config} images")


def embed_image_dataset(encoder, dataset, batch_size: int = 64, num_threads: int | None = None,
                        progress: bool = True, desc: str = "embedding images") -> np.ndarray:
    """Embed the ``image`` column of a ``datasets.Dataset`` (a release's, or photographs of one's own), one row
    per record: batches decoded on a thread pool while the model embeds the previous one."""
    import pandas as pd

    from .data.images import iter_image_batches

    batches = iter_image_batches(dataset, batch_size=batch_size, num_threads=num_threads)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", total=-(-len(dataset) // batch_size))
    parts = []
    for batch in batches:
        images = batch.pop("image")
        parts.append(encoder.embed_images(images, metadata=pd.DataFrame(batch), batch_size=batch_size))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


#: The encoder that needs no model: barcodes compared base by base (`AlignedIdentityEncoder`).
ALIGNED = "aligned"


def make_encoder(model: str | os.PathLike, fit_sequences: Sequence[str] | None = None, seed: int = 0):
    """The embedding model named by ``model``: ``"aligned"`` (no model), ``"kmer"``/``"kmer:K"`` (fitted on
    ``fit_sequences``), or a saved BarcodeBERT or CLIBD folder (told apart by ``model_type`` in its
    ``config.json``)."""
    spec = str(model)
    if spec == ALIGNED:
        return AlignedIdentityEncoder()
    k = kmer_length(spec)
    if k is not None:
        if fit_sequences is None:
            raise ValueError("The k-mer embedding is fitted on the key barcodes; pass fit_sequences.")
        return KmerEncoder.fit(fit_sequences, k=k, seed=seed)
    model_type = model_type_of(spec)
    if model_type == "clibd":
        return ClibdEncoder(spec)
    if model_type == "barcodebert":
        return BarcodeBertEncoder(spec)
    raise ValueError(f"{spec}: model_type {model_type!r} is not an embedding model identify knows "
                     "(barcodebert or clibd).")


def model_type_of(model: str | os.PathLike) -> str:
    """``aligned`` or ``kmer`` for the encoders without a model, else the ``model_type`` in the folder's
    ``config.json``."""
    spec = str(model)
    if spec == ALIGNED:
        return ALIGNED
    if kmer_length(spec) is not None:
        return "kmer"
    config_path = Path(spec) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"Model {spec!r} is neither 'kmer[:K]' nor a saved model folder (no {config_path}).")
    return json.loads(config_path.read_text()).get("model_type", "")


# --- BarcodeBERT at scale ---

def load_encoder(model_dir_or_model, device: str | torch.device | None = None):
    """A BarcodeBERT encoder in eval mode from a folder (or Hub id), or the encoder inside a model object."""
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        from transformers import AutoModel

        from . import modeling  # noqa: F401  (registers the Auto classes)

        if (Path(model_dir_or_model) / "config.json").is_file() and model_type_of(model_dir_or_model) == "clibd":
            raise ValueError(f"{model_dir_or_model} is a CLIBD model; this reads BarcodeBERT models (CLIBD's "
                             "towers are embedding sources dna:DIR and image:DIR of cluster, retrieve and benchmark).")
        model = AutoModel.from_pretrained(str(model_dir_or_model))
    else:
        model = model_dir_or_model
        # Heads (MLM, classification) hold the encoder as .bert; embed() lives on the encoder.
        if not hasattr(model, "embed") and hasattr(model, "bert"):
            model = model.bert
    if device is not None:
        model = model.to(device)
    return model.eval()


def embed_sequences(model_dir_or_model, sequences, batch_size: int = 256, dtype=np.float32,
                    out_path: str | os.PathLike | None = None, progress: bool = True,
                    device: str | torch.device | None = None, reading_frames: int = 1,
                    overwrite: bool = False) -> np.ndarray:
    """Embed barcodes with a BarcodeBERT model: one pooled vector per sequence (``BarcodeBertModel.embed``).

    Sequences are processed in chunks sorted by length; with ``out_path`` the array is written to a ``.npy``
    file (memory-mapped, filled chunk by chunk, so the result need not fit in memory twice).

    Args:
        model_dir_or_model: a saved model folder, or a loaded BarcodeBERT model (any head).
        sequences: DNA barcodes (list, tuple, pandas Series or numpy array of strings).
        batch_size: sequences per forward pass.
        dtype: ``np.float32`` or ``np.float16`` for the returned / written array.
        out_path: optional ``.npy`` destination; an existing file is refused unless ``overwrite``, and the file
            appears only once every vector is written.
        progress: show a tqdm progress bar.
        device: where to run (default: where the model already is).
        reading_frames: average over this many start offsets (see ``BarcodeBertModel.embed``).

    Returns:
        ``(n, embedding_size)`` array in input order (the memory-mapped file when ``out_path`` is given).
    """
    if out_path is not None:
        check_output(out_path, overwrite, inputs=(model_dir_or_model,))
    model = load_encoder(model_dir_or_model, device)
    sequences = list(sequences)
    if out_path is None:
        return _embed_into(np.empty((len(sequences), model.config.embedding_size), dtype=dtype), model, sequences,
                           batch_size, dtype, progress, reading_frames)
    with staged_file(out_path, overwrite) as staging:
        result = np.lib.format.open_memmap(staging, mode="w+", dtype=dtype,
                                           shape=(len(sequences), model.config.embedding_size))
        _embed_into(result, model, sequences, batch_size, dtype, progress, reading_frames)
        result.flush()
    return result


def _embed_into(result: np.ndarray, model, sequences: list, batch_size: int, dtype, progress: bool,
                reading_frames: int) -> np.ndarray:
    # Chunks of many batches: each is length-sorted inside embed(), and progress advances per chunk.
    chunk = batch_size * 16
    starts = range(0, len(sequences), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="chunk", total=-(-len(sequences) // chunk))
    for start in starts:
        result[start:start + chunk] = model.embed(sequences[start:start + chunk], batch_size=batch_size,
                                                  return_numpy=True, reading_frames=reading_frames).astype(dtype)
    return result


def embed_dataset(dataset, model_dir: str | os.PathLike, column: str = "dna_barcode", batch_size: int = 256,
                  num_proc: int | None = None, output_column: str = "embedding"):
    """Add an ``embedding`` column to a ``datasets.Dataset`` with ``Dataset.map``; ``num_proc`` processes each
    load the model once (the model is loaded from ``model_dir`` inside the workers, not pickled)."""
    torch_threads = max(1, (os.cpu_count() or 1) // (num_proc or 1))

    def embed_batch(batch, _cache={}):  # noqa: B006  (per-process model cache)
        if "model" not in _cache:
            import torch

            torch.set_num_threads(torch_threads)
            _cache["model"] = load_encoder(model_dir)
        vectors = _cache["model"].embed(batch[column], batch_size=batch_size, return_numpy=True)
        return {output_column: list(vectors)}

    return dataset.map(embed_batch, batched=True, batch_size=batch_size * 4, num_proc=num_proc,
                       desc="embedding")
