"""Fitting an index's vote temperature and novelty threshold on held-out queries whose answer is known."""

from __future__ import annotations

import numpy as np

from ..embedding import l2_normalize_rows
from ..data.release import ORDER_TO_SPECIES
from .key_index import MAX_KEY_NUCLEOTIDES, KeyIndex
from .prediction import DEFAULT_TEMPERATURE


def calibrate(index: KeyIndex, records, images: dict | None = None, batch_size: int = 128, vote_k: int = 25,
              species_out_k: int = 256) -> dict:
    """Fit the vote temperature and the novelty threshold on held-out ``records`` (a metadata DataFrame), for
    barcode queries and, with a CLIBD model and ``images`` (processid -> PIL image), for photograph queries.

    A record is *known* when its species is among the keys' species and *novel* when it is absent (records
    without a species label are left out). Held-out splits mostly give novel records of unseen genera
    (``other_heldout``), the easy case; so every known record is also used a second time as a novel one, with
    the keys of its own species left out ("leave-species-out"), which stands for an undescribed species of a
    known genus. The temperature minimises the negative log-likelihood of the known records' labels over the
    ranks (an encoder with a fixed ``temperature`` keeps it); the threshold on the nearest key's similarity
    maximises Youden's J (novel flagged minus known flagged).
    Returns ``{"dna": {...}, "image": {...}}`` (``image`` only when photographs were calibrated).
    """
    records = records[records["species"].notna()].reset_index(drop=True)
    if len(records) == 0:
        return {"dna": {"records": 0, "note": "no calibration records with a species label"}}
    barcodes = records["dna_barcode"].fillna("").astype(str).str.slice(0, MAX_KEY_NUCLEOTIDES).tolist()
    result = {"dna": _calibrate_queries(index, records, index.encoder.query_vectors(barcodes, batch_size=batch_size),
                                        vote_k, species_out_k)}
    if images and "image" in index.modalities:
        with_photo = records[records["processid"].isin(images)].reset_index(drop=True)
        if len(with_photo):
            photos = [images[pid] for pid in with_photo["processid"]]
            vectors = l2_normalize_rows(index.encoder.embed_images(photos))
            result["image"] = _calibrate_queries(index, with_photo, vectors, vote_k, species_out_k)
    return result


def _calibrate_queries(index: KeyIndex, records, vectors: np.ndarray, vote_k: int, species_out_k: int) -> dict:
    key_species = index.keys["species"].to_numpy()
    novel = ~records["species"].isin(set(index.keys["species"].dropna())).to_numpy()
    scores, hits = index.dna_index.search(vectors, min(len(index.keys), max(vote_k, species_out_k)))
    result = {"records": int(len(records)), "known": int((~novel).sum()), "novel": int(novel.sum()),
              "temperature": index.encoder.temperature or DEFAULT_TEMPERATURE, "novelty_threshold": None}
    known_rows = np.flatnonzero(~novel)
    if len(known_rows) and index.encoder.temperature is None:
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
    labels = {rank: keys[rank].to_numpy()[hits] for rank in ORDER_TO_SPECIES}
    truths = {rank: records[rank].to_numpy() for rank in ORDER_TO_SPECIES}
    losses = []
    for temperature in candidates:
        weights = np.exp((scores - scores[:, :1]) / temperature)
        loss = 0.0
        for rank in ORDER_TO_SPECIES:
            known = np.array([isinstance(t, str) for t in truths[rank]])
            labelled = np.vectorize(lambda label: isinstance(label, str), otypes=[bool])(labels[rank])
            correct = (labels[rank] == truths[rank][:, None]) & labelled
            share = (weights * correct).sum(1) / np.maximum((weights * labelled).sum(1), 1e-12)
            loss -= np.log(np.clip(share[known], 1e-4, 1.0)).mean() if known.any() else 0.0
        losses.append(loss / len(ORDER_TO_SPECIES))
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


