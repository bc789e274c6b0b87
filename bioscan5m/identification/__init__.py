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
* ``dna.faiss`` (and ``image.faiss`` for CLIBD with photographs): FAISS inner-product indexes over the encoder's
  key vectors: L2-normalised embeddings, so the score is the cosine similarity, or for ``aligned`` one-hot bases,
  so the score is the aligned identity of the query;
* ``kmer_projection.npy`` for the k-mer embedding (its SVD projection, read with ``allow_pickle=False``);
* ``thumbnails/``: small JPEG photographs of the keys, when the release has images.

Embedding models (``model=``): ``"aligned"`` (barcodes compared base by base without gaps in the COI-5P reference
frame; no model, DNA only: BLAST's accuracy at every rank, 11.8 kB per key), ``"kmer"`` /
``"kmer:K"`` (the k-mer-count baseline, needs no training; DNA only, 1.4 kB per key), a BarcodeBERT folder (DNA),
or a CLIBD folder (DNA and photographs in one space).

How the answer is made: the query is embedded and its ``vote_k`` nearest keys vote for a label at every rank,
each with weight ``exp(similarity / T)``; the temperature ``T`` is fitted at build time so that these votes are
calibrated probabilities on held-out queries of known species. The ``aligned`` encoder has its temperature fixed
instead (`AlignedIdentityEncoder.temperature`, ~2/3 of a base on a full barcode: the nearest key decides, keys as
near vote), because the softer temperature that fits probabilities best costs accuracy on queries far from the
keys. A query whose nearest key is less similar than the novelty threshold is flagged "possibly undescribed
species"; the threshold is the one that best separates held-out queries whose species is among the keys from
those whose species is not (``other_heldout``, unseen species), by Youden's J.

The package in reading order: ``inputs`` (what a user hands in, checked), ``model_reference`` (how an index names
and fingerprints its model; the embedding models themselves are ``bioscan5m.embedding``), ``key_index`` (build, save, load, check), ``prediction`` (identify and vote), ``batch`` (many
queries: FASTA and photograph streams, the hit table) and ``calibration`` (temperature
and novelty threshold).
"""

from __future__ import annotations


from .calibration import calibrate
from ..embedding import AlignedIdentityEncoder, BarcodeBertEncoder, ClibdEncoder, KmerEncoder, make_encoder
from .inputs import (
    MAX_BARCODE_NUCLEOTIDES,
    MAX_FASTA_BYTES,
    MAX_PHOTO_BYTES,
    MAX_PHOTO_PIXELS,
    MIN_BARCODE_NUCLEOTIDES,
    InputError,
    check_sequence,
    open_photo,
    parse_barcode,
    read_fasta_file,
)
from .model_reference import model_fingerprint
from .key_index import KeyIndex, KeyIndexError, build_index, load_index, write_index
from .prediction import Identification, Novelty, RankPrediction, format_identification, identify, vote
from .batch import (IDENTIFICATION_COLUMNS, FastaRecord, identify_many, iter_fasta, iter_identifications, iter_photos,
                    table_format, write_identifications)

__all__ = ["identify_many", "iter_identifications", "write_identifications", "iter_fasta", "iter_photos",
           "FastaRecord", "IDENTIFICATION_COLUMNS", "table_format", "InputError", "KeyIndexError", "KeyIndex", "Identification", "RankPrediction", "Novelty", "build_index",
           "write_index", "load_index", "identify", "vote", "calibrate", "parse_barcode", "read_fasta_file",
           "check_sequence", "open_photo", "format_identification", "make_encoder", "model_fingerprint", "AlignedIdentityEncoder", "KmerEncoder",
           "BarcodeBertEncoder", "ClibdEncoder", "MAX_BARCODE_NUCLEOTIDES", "MIN_BARCODE_NUCLEOTIDES",
           "MAX_FASTA_BYTES", "MAX_PHOTO_BYTES", "MAX_PHOTO_PIXELS"]
