"""DNA tokenizers: non-overlapping k-mers, Rust fast path and pure-Python reference (see tokenization_kmer)."""

from .tokenization_kmer import (
    MAX_NUCLEOTIDES,
    VOCABULARIES,
    KmerTokenizer,
    KmerTokenizerFast,
    build_kmer_backend,
    check_nucleotides,
    kmer_vocabulary,
)
from .reference_frame import COI_5P_REFERENCE, align_to_reference, place_bases, reference_offsets

__all__ = ["KmerTokenizer", "KmerTokenizerFast", "kmer_vocabulary", "build_kmer_backend", "check_nucleotides",
           "MAX_NUCLEOTIDES", "VOCABULARIES", "COI_5P_REFERENCE", "align_to_reference", "place_bases",
           "reference_offsets"]
