"""Answering a query: embed it, vote over its nearest keys at every rank with calibrated weights, flag possible
novelty, and the result as a user reads it."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..embedding import l2_normalize_rows
from .inputs import InputError, open_photo, parse_barcode
from ..data.release import ORDER_TO_SPECIES
from .key_index import KEY_COLUMNS, KeyIndex, load_index


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
    check_counts(top_k=top_k, vote_k=vote_k)
    index = resolve_index(index)
    has_dna = dna is not None and str(dna).strip() != ""
    if not has_dna and image is None:
        raise InputError("Nothing to identify: paste a DNA barcode, upload a FASTA file, or upload a photograph.")
    query: dict = {"modalities": []}
    vectors = {}
    if has_dna:
        record_id, sequence = parse_barcode(dna)
        sequence = sequence[:index.manifest["max_nucleotides"]]  # queries are cut like the keys were
        vectors["dna"] = index.encoder.query_vectors([sequence])
        query.update(modalities=["dna"], record_id=record_id, nucleotides=len(sequence))
    if image is not None:
        photo = open_photo(image)
        if "image" not in index.modalities:
            raise InputError(f"This index was built with a DNA-only model ({index.encoder.kind}), so it cannot "
                             "identify photographs: paste the barcode instead, or serve an index built with a CLIBD model.")
        vectors["image"] = l2_normalize_rows(index.encoder.embed_images([photo]))
        query["modalities"].append("image")
        query["image_size"] = list(photo.size)
    (ranks, novelty, hits, scores), = predict(index, vectors, top_k, vote_k, key_modality)
    neighbours = _neighbour_records(index, hits[:top_k], scores[:top_k])
    return Identification(ranks, novelty, neighbours, query, time.perf_counter() - started)


def predict(index: KeyIndex, vectors: dict[str, np.ndarray], top_k: int, vote_k: int, key_modality: str = "dna"):
    """The core of `identify` for a batch: ``vectors`` maps each query modality to ``(n, dims)`` query vectors
    of the same ``n`` queries (the encoder's ``query_vectors`` for DNA, L2-normalised embeddings for photographs).
    Returns, per query, ``(ranks, novelty, key rows, similarities)`` with the key rows and similarities of its
    ``max(top_k, vote_k)`` nearest keys, best first."""
    if len(vectors) == 1:
        query_vectors, = vectors.values()
    else:  # DNA and photo together (CLIBD, one space): the mean direction
        query_vectors = l2_normalize_rows(np.mean(list(vectors.values()), axis=0))
    if key_modality == "image":
        if index.image_index is None:
            raise InputError("This index has no photograph keys; match against DNA keys (key_modality='dna').")
        all_scores, all_hits = index.image_index.search(query_vectors, max(top_k, vote_k))
        all_hits = np.where(all_hits >= 0, index.image_rows[np.clip(all_hits, 0, None)], -1)
    elif key_modality == "dna":
        all_scores, all_hits = index.dna_index.search(query_vectors, max(top_k, vote_k))
    else:
        raise ValueError(f"key_modality must be 'dna' or 'image'; got {key_modality!r}.")
    # Calibrated for a barcode (or a photograph alone) against DNA keys. With both, the barcode decides novelty,
    # being the surer of the two, and the ranking uses both.
    basis = "dna" if "dna" in vectors else "image"
    calibration = ((index.manifest.get("calibration") or {}).get(basis) or {}) if key_modality == "dna" else {}
    temperature = calibration.get("temperature", index.encoder.temperature or DEFAULT_TEMPERATURE)
    threshold = calibration.get("novelty_threshold")
    if len(vectors) == 1:
        nearest = all_scores[:, 0]
    else:
        nearest = index.dna_index.search(vectors[basis], 1)[0][:, 0]
    answers = []
    for scores, hits, similarity in zip(all_scores, all_hits, nearest):
        valid = hits >= 0
        scores, hits = scores[valid], hits[valid]
        ranks = vote({rank: index.columns[rank][hits[:vote_k]] for rank in ORDER_TO_SPECIES}, scores[:vote_k],
                     temperature)
        novelty = Novelty(None if threshold is None else bool(similarity < threshold), float(similarity), threshold)
        answers.append((ranks, novelty, hits, scores))
    return answers


DEFAULT_TEMPERATURE = 0.02


def vote(neighbour_labels: dict[str, np.ndarray], similarities: np.ndarray, temperature: float) -> list[RankPrediction]:
    """Per rank, the share of ``exp(similarity / T)`` weight of the neighbours carrying each label.

    ``neighbour_labels`` maps each rank to the neighbours' labels; those without one (None, e.g. pretrain
    records) abstain at that rank. Weights are taken relative to the most similar neighbour that votes at the
    rank, so a sharp temperature cannot underflow every voter's weight to zero.
    """
    similarities = np.asarray(similarities, dtype=np.float64).tolist()
    predictions = []
    for rank in ORDER_TO_SPECIES:
        voters = [(label, similarity) for label, similarity in zip(neighbour_labels[rank], similarities)
                  if isinstance(label, str) and label]
        if not voters:
            predictions.append(RankPrediction(rank, None, 0.0))
            continue
        best = max(similarity for _, similarity in voters)
        totals: dict[str, float] = {}
        for label, similarity in voters:
            totals[label] = totals.get(label, 0.0) + math.exp((similarity - best) / temperature)
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


def check_counts(**counts) -> None:
    """Refuse counts (``top_k``, ``vote_k``, ``batch_size``) that are not positive integers."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")


_INDEX_CACHE: dict[str, KeyIndex] = {}


def resolve_index(index: KeyIndex | str | os.PathLike) -> KeyIndex:
    """A `KeyIndex` as given, or the index in a folder (loaded once per process and cached)."""
    if isinstance(index, KeyIndex):
        return index
    folder = str(index)
    if folder not in _INDEX_CACHE:
        _INDEX_CACHE[folder] = load_index(folder)
    return _INDEX_CACHE[folder]


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
