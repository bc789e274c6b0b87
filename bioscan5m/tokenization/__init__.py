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

__all__ = ["KmerTokenizer", "KmerTokenizerFast", "kmer_vocabulary", "build_kmer_backend", "check_nucleotides",
           "MAX_NUCLEOTIDES", "VOCABULARIES"]
