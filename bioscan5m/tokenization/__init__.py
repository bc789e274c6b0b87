"""DNA tokenizers: non-overlapping k-mers, Rust fast path and pure-Python reference (see tokenization_kmer); and
the COI-5P reference frame barcodes are placed in (see reference_frame).

The tokenizers are transformers classes, imported on first use: the reference frame needs only numpy, and serves
the parts of the package that do without the ``models`` extra (species delimitation, the aligned key index).
"""

from .reference_frame import COI_5P_REFERENCE, align_to_reference, place_bases, reference_offsets

_TOKENIZATION_KMER = ("KmerTokenizer", "KmerTokenizerFast", "kmer_vocabulary", "build_kmer_backend",
                      "check_nucleotides", "MAX_NUCLEOTIDES", "VOCABULARIES")

__all__ = [*_TOKENIZATION_KMER, "COI_5P_REFERENCE", "align_to_reference", "place_bases", "reference_offsets"]


def __getattr__(name):
    if name in _TOKENIZATION_KMER:
        from . import tokenization_kmer

        globals()[name] = value = getattr(tokenization_kmer, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
