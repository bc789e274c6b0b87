"""Embedding sources, named by a spec: the k-mer baseline (``kmer:6``), a saved BarcodeBERT or CLIBD
(``dna:DIR``), photographs through a timm model or a CLIBD image tower (``image:NAME``, ``image:DIR``), a ``.npy``
file, and fusions of them (``dna:A+image:B``, ``2*dna:A+image:B``). Embeddings are cached on disk between runs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...data.caching import cache_folder
from .records import RecordSet
from ...staging import staged_file
from ... import embedding


@dataclass
class EmbeddingSource:
    """A named way to turn records into vectors.

    ``embed`` takes barcodes (``keyed_by="sequence"``: each distinct barcode is embedded once) or a `RecordSet`
    (``keyed_by="record"``: photographs, embedded per record). A fused source has ``parts`` instead: each part's
    embedding (compacted, L2-normalised, times its weight), concatenated. ``compact`` (optional) projects a set of
    embeddings to fewer dimensions before clustering and retrieval, where very wide embeddings (4,096-d k-mer
    counts) would make UMAP and exact search needlessly slow.
    """

    name: str
    description: str
    embed: Callable | None = None
    compact: Callable[[np.ndarray], np.ndarray] | None = None
    kind: str = "model"
    cache_key: str = ""
    keyed_by: str = "sequence"
    modality: str = "dna"
    parts: tuple[tuple[EmbeddingSource, float], ...] = ()

    def keys(self, records: RecordSet) -> list[str]:
        """What identifies a record's embedding: its barcode, or its processid."""
        return records.sequences if self.keyed_by == "sequence" else list(records.processids)


class EmbeddingTable:
    """One source's embeddings of many records, each distinct barcode (or photograph) held once."""

    def __init__(self, source: EmbeddingSource, rows: dict):
        self.source, self._rows = source, rows

    def rows(self, records: RecordSet) -> np.ndarray:
        """The embeddings of ``records``, one row each, in their order."""
        return np.stack([self._rows[key] for key in self.source.keys(records)])


def kmer_source(k: int = 6, svd_dims: int = 256) -> EmbeddingSource:
    """The k-mer baseline: L2-normalised k-mer counts (cosine 1-NN classification on the counts themselves);
    clustering and retrieval use a truncated SVD of them to ``svd_dims``, fitted on the records of that task."""

    def reduce(counts: np.ndarray) -> np.ndarray:
        return embedding.kmer_svd(counts, svd_dims).transform(counts).astype(np.float32)

    return EmbeddingSource(
        f"{k}-mer counts", f"L2-normalised overlapping {k}-mer counts ({4 ** k} dims; clustering and retrieval: "
        f"truncated SVD to {svd_dims} dims, fitted without labels on that task's records)",
        lambda sequences: embedding.kmer_embeddings(sequences, k=k, svd_dims=None), reduce, kind="baseline",
        cache_key=f"kmer{k}")


def model_source(model_dir, batch_size: int = 128, reading_frames: int = 1) -> EmbeddingSource:
    """A saved model folder's DNA embedding: BarcodeBERT's ``embed`` (pooled as its config says, averaged over
    ``reading_frames`` start offsets when more than one), or a CLIBD model's DNA tower."""
    model_dir = Path(model_dir).expanduser()
    config = _model_config(model_dir)
    is_clibd = config.get("model_type") == "clibd"
    if is_clibd and reading_frames != 1:
        raise ValueError(f"{model_dir}: reading frames apply to BarcodeBERT models; a CLIBD model embeds each "
                         "barcode once.")
    state = []

    def embed(sequences: list[str]) -> np.ndarray:
        if not state:
            state.append(embedding.ClibdEncoder(model_dir) if is_clibd else embedding.load_encoder(model_dir))
        model = state[0]
        if is_clibd:
            return model.embed_dna(list(sequences), batch_size=batch_size)
        if not hasattr(model, "embed"):
            raise ValueError(f"{model_dir}: {type(model).__name__} has no .embed(sequences); cannot embed DNA with it.")
        vectors = model.embed(list(sequences), batch_size=batch_size, progress=True, reading_frames=reading_frames)
        return np.asarray(vectors.detach().cpu() if hasattr(vectors, "detach") else vectors, dtype=np.float32)

    described = ", ".join(f"{key} {config[key]}" for key in ("k_mer", "num_hidden_layers", "num_attention_heads",
                                                             "hidden_size", "pooling") if key in config)
    name = model_dir.name + (" (DNA)" if is_clibd else "")
    if reading_frames > 1:
        described += f"; mean over {reading_frames} reading frames"
        name += f" ({reading_frames} frames)"
    what = "CLIBD DNA tower" if is_clibd else config.get("model_type", "model")
    return EmbeddingSource(name, f"{what} from {model_dir}" + (f" ({described})" if described else ""), embed,
                           cache_key=f"{model_dir.resolve()}|{_folder_stamp(model_dir)}|frames={reading_frames}")


def image_source(model: str, root, config: str = "cropped_256", weights=None, batch_size: int = 64,
                 num_threads: int | None = None) -> EmbeddingSource:
    """Photographs of a release's records (image package ``config``) through a CLIBD folder's image tower or a
    timm model (weights from the Hub, or ``weights``, a local ``.safetensors`` file)."""
    if root is None:
        raise ValueError(f"image:{model} embeds the photographs of a release; give the release root.")
    folder = Path(model).expanduser()
    is_clibd = (folder / "config.json").is_file() and _model_config(folder).get("model_type") == "clibd"
    if is_clibd and weights is not None:
        raise ValueError(f"image:{model} is a CLIBD folder with its own weights; --weights applies to timm models.")
    if not is_clibd:
        import timm

        if not timm.is_model(model):
            raise ValueError(f"image:{model}: neither a saved CLIBD folder nor a timm model name "
                             "(e.g. image:vit_base_patch16_224.dino).")
    if weights is not None:
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise FileNotFoundError(f"image weights {weights} do not exist.")
    # Loaded now, so that weights that do not fit fail before any image is read.
    encoder = (embedding.ClibdEncoder(folder) if is_clibd
               else embedding.TimmImageEncoder(model, weights, num_threads=num_threads))

    def embed(records: RecordSet) -> np.ndarray:
        return embedding.embed_release_images(encoder, root, records.processids, records.splits, config=config,
                                              batch_size=batch_size, num_threads=num_threads)

    if is_clibd:
        name, stamp = f"{folder.name} (image)", f"{folder.resolve()}|{_folder_stamp(folder)}"
        described = f"CLIBD image tower from {folder}"
    else:
        name = model
        stamp = f"timm:{model}|" + (f"{weights.resolve()}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}"
                                    if weights else "hub")
        described = f"timm {model} ({f'weights {weights}' if weights else 'pretrained weights from the Hub'})"
    return EmbeddingSource(name, f"{described}, {config} photographs", embed, kind="model",
                           cache_key=f"image|{stamp}|{Path(root).resolve()}|{config}", keyed_by="record",
                           modality="image")


def fused_source(parts: Sequence[tuple[EmbeddingSource, float]]) -> EmbeddingSource:
    """Several sources side by side: each part's embedding (compacted, L2-normalised, times its weight),
    concatenated, so that each weighs as its weight says whatever its width."""
    if len(parts) < 2:
        raise ValueError("A fused source needs at least two parts, e.g. 'dna:A+image:B'.")
    for source, weight in parts:
        if source.kind == "file":
            raise ValueError(f"{source.name}: a .npy file cannot be fused; fuse sources that embed records.")
        if not weight > 0:
            raise ValueError(f"{source.name}: a fused part's weight must be positive, got {weight}.")
    label = lambda source, weight: source.name if weight == 1 else f"{weight:g}*{source.name}"  # noqa: E731
    modalities = "+".join(sorted({source.modality for source, _ in parts}))
    return EmbeddingSource(" + ".join(label(*part) for part in parts),
                           "fused, each part L2-normalised and weighted: "
                           + "; ".join(f"{weight:g} x {source.description}" for source, weight in parts),
                           keyed_by="record", modality=modalities, parts=tuple(parts),
                           kind="model" if any(source.kind == "model" for source, _ in parts) else "baseline")


def npy_source(path) -> EmbeddingSource:
    """Precomputed embeddings, one row per record of the evaluated split in file order (``cluster`` only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file {path} does not exist.")

    def embed(sequences: list[str]) -> np.ndarray:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            # numpy's own message about pickled data suggests allow_pickle=True, which would run code from the file.
            reason = "it holds Python objects (pickled data), which are never loaded" if "pickle" in str(error) else \
                str(error)
            raise ValueError(f"{path}: not a numeric .npy array of embeddings ({reason}).") from None
        if len(array) != len(sequences):
            raise ValueError(f"{path} has {len(array)} rows but the split has {len(sequences)} records.")
        return array

    return EmbeddingSource(path.stem, f"precomputed embeddings {path}", embed, kind="file")


#: ``W*`` in front of a fused part: its weight.
_WEIGHT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\*(.+)$")
#: A fused spec splits at ``+`` before a modality (``+dna:``, ``+image:``, ``+kmer``, ``+2*...``), not at a ``+``
#: inside a path.
_PART_BOUNDARY = re.compile(r"\+(?=(?:\d+(?:\.\d*)?\*|\.\d+\*)?(?:dna:|image:|kmer\b))")


def parse_source(spec: str, batch_size: int = 128, reading_frames: int = 1, root=None, config: str = "cropped_256",
                 weights=None, num_threads: int | None = None) -> EmbeddingSource:
    """The source a spec names:

    - ``kmer`` / ``kmer:K``: the k-mer baseline;
    - ``dna:MODEL_DIR`` or ``MODEL_DIR``: a saved BarcodeBERT, or a CLIBD folder's DNA tower;
    - ``image:TIMM_NAME`` (``weights``: a local ``.safetensors`` instead of the Hub) or ``image:CLIBD_DIR``: the
      photographs of the records in image package ``config`` of the release at ``root``;
    - ``FILE.npy``: precomputed embeddings;
    - ``A+B`` (``W*A+B`` to weight a part): fused, each part L2-normalised.
    """
    parts = _PART_BOUNDARY.split(spec)
    if len(parts) > 1:
        if weights is not None and sum(part.lstrip("0123456789.*").startswith("image:") for part in parts) > 1:
            raise ValueError(f"{spec!r}: --weights names one timm model's file, but the spec has several image parts.")
        weighted = [_weight_and_part(part) for part in parts]
        if reading_frames != 1 and reads_no_frames(spec):
            raise ValueError(f"{spec!r}: --reading-frames applies to BarcodeBERT models (dna:DIR), and the spec has "
                             "none.")
        return fused_source([(parse_source(part, batch_size, 1 if reads_no_frames(part) else reading_frames, root,
                                           config, weights if part.startswith("image:") else None, num_threads),
                              weight) for weight, part in weighted])
    if reading_frames != 1 and reads_no_frames(spec):
        raise ValueError(f"{spec!r}: --reading-frames applies to BarcodeBERT models (dna:DIR), not to this source.")
    if weights is not None and not spec.startswith("image:"):
        raise ValueError(f"{spec!r}: --weights applies to image:TIMM_NAME sources.")
    k = embedding.kmer_length(spec)
    if k is not None:
        return kmer_source(k)
    if spec.endswith(".npy"):
        return npy_source(spec)
    modality, _, path = spec.partition(":")
    if path and modality == "image":
        return image_source(path, root, config=config, weights=weights, batch_size=min(batch_size, 64),
                            num_threads=num_threads)
    if path and modality != "dna":
        raise ValueError(f"embedding source {spec!r}: the modalities are 'dna:DIR' and 'image:NAME_OR_DIR'.")
    return model_source(path or spec, batch_size=batch_size, reading_frames=reading_frames)


def _weight_and_part(part: str) -> tuple[float, str]:
    """``2*dna:A`` -> ``(2.0, "dna:A")``; a part without a weight weighs 1."""
    match = _WEIGHT.match(part)
    return (float(match.group(1)), match.group(2)) if match else (1.0, part)


def reads_no_frames(spec: str) -> bool:
    """Whether reading frames mean nothing to a source spec: none of its parts is a BarcodeBERT model (they are
    k-mers, files or photographs)."""
    parts = [_weight_and_part(part)[1] for part in _PART_BOUNDARY.split(spec)]
    return all(embedding.kmer_length(part) is not None or part.endswith(".npy") or part.startswith("image:")
               for part in parts)


def spec_paths(spec: str) -> list[str]:
    """The files and folders a spec reads (its model folders, .npy files, timm names), for output checks."""
    parts = [_weight_and_part(part)[1] for part in _PART_BOUNDARY.split(spec)]
    return [part.partition(":")[2] if part.startswith(("dna:", "image:")) else part for part in parts]


def _model_config(model_dir: Path) -> dict:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder: {config_path} is missing.")
    return json.loads(config_path.read_text())


def _folder_stamp(model_dir: Path) -> str:
    """Changes whenever the folder's config or weights do (cache invalidation)."""
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    return "|".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in [model_dir / "config.json", *weights])


def embedding_cache_dir() -> Path:
    """Where embeddings of the benchmark's records are kept between runs: beside the ``datasets`` cache."""
    return cache_folder("embeddings")


def embed_records(source: EmbeddingSource, record_sets: Sequence[RecordSet], cache_dir: Path | None = None
                  ) -> EmbeddingTable:
    """Embed every record of ``record_sets`` with ``source``: each distinct barcode (or record, for photographs)
    once, cached in ``cache_dir`` when given (a killed run leaves no half-written cache file)."""
    if source.parts:
        union = RecordSet.union("fused", record_sets)
        blocks = []
        for part, weight in source.parts:
            rows = embed_records(part, [union], cache_dir).rows(union)
            rows = part.compact(rows) if part.compact else rows
            blocks.append(weight * embedding.l2_normalize_rows(rows))
        return EmbeddingTable(source, dict(zip(union.processids, np.concatenate(blocks, axis=1))))
    if source.keyed_by == "sequence":
        keys = sorted({s for record_set in record_sets for s in record_set.sequences})
        inputs = keys
    else:
        inputs = RecordSet.union("embedded", record_sets)
        keys = list(inputs.processids)
    cache = None
    if cache_dir is not None and source.cache_key:
        digest = hashlib.sha1((source.cache_key + "\n" + "\n".join(keys)).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{digest}.npy"
        if cache.is_file():
            return EmbeddingTable(source, dict(zip(keys, np.load(cache, allow_pickle=False))))
    array = np.asarray(source.embed(inputs), dtype=np.float32)
    if len(array) != len(keys):
        raise ValueError(f"{source.name} returned {len(array)} embeddings for {len(keys)} inputs.")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(cache, overwrite=True) as staging, open(staging, "wb") as handle:
            np.save(handle, array)
    return EmbeddingTable(source, dict(zip(keys, array)))
