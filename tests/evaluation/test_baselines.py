"""Baselines: k-mer counts by hand and against a plain Python count; BLAST run for real on real barcodes."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from bioscan5m import read_metadata
from bioscan5m.evaluation.baselines import (BlastNotFoundError, aligned_identity_vectors, blast_available, blast_search, kmer_counts,
                                            kmer_embeddings)


def column(kmer: str) -> int:
    return int("".join("ACGT".index(b).__str__() for b in kmer), 4)


def test_kmer_counts_by_hand():
    counts = kmer_counts(["ACGTAC", "ACNGT", "AC", "G"], k=2).toarray()
    assert counts.shape == (4, 16)
    assert {i: counts[0, i] for i in np.flatnonzero(counts[0])} == {column("AC"): 2, column("CG"): 1, column("GT"): 1, column("TA"): 1}
    # Windows touching N are skipped, and no window spans two sequences.
    assert {i: counts[1, i] for i in np.flatnonzero(counts[1])} == {column("AC"): 1, column("GT"): 1}
    assert counts[2].sum() == 1 and counts[3].sum() == 0


@pytest.fixture(scope="module")
def barcodes(bold_root):
    frame = read_metadata(bold_root, split="train")
    frame = frame[~frame["dna_barcode"].str.rstrip("N").duplicated()].head(60)
    return frame["dna_barcode"].str.rstrip("N").tolist(), frame["species"].astype(str).tolist()


def test_kmer_counts_match_python_counting_on_real_barcodes(barcodes):
    sequences, _ = barcodes
    counts = kmer_counts(sequences, k=4, chunk_size=17).toarray()
    index = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=4))}
    for row, sequence in zip(counts, sequences):
        expected = Counter(sequence[i:i + 4] for i in range(len(sequence) - 3))
        expected = {index[kmer]: n for kmer, n in expected.items() if kmer in index}
        assert {i: row[i] for i in np.flatnonzero(row)} == expected


def test_kmer_embeddings_are_unit_rows_or_svd(barcodes):
    sequences, _ = barcodes
    dense = kmer_embeddings(sequences, k=3, svd_dims=None)
    assert dense.shape == (len(sequences), 64)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
    assert kmer_embeddings(sequences, k=3, svd_dims=8).shape == (len(sequences), 8)
    with pytest.raises(ValueError, match="k must be between 1 and 12"):
        kmer_counts(sequences, k=0)


needs_blast = pytest.mark.skipif(not blast_available(), reason="blastn/makeblastdb not installed (Debian package ncbi-blast+)")


@needs_blast
def test_aligned_identity_counts_identical_bases_at_reference_positions(barcodes):
    from bioscan5m.tokenization.reference_frame import align_to_reference

    sample = [b for b in barcodes[0] if len(b) >= 600][:20]
    # The same barcodes cut at the front by 1..20 bases (a later start), lower case, one base turned into N.
    shifted = [b[cut:].lower() for cut, b in enumerate(sample, start=1)]
    shifted[0] = "N" + shifted[0][1:]
    vectors, shifted_vectors = aligned_identity_vectors(sample), aligned_identity_vectors(shifted)
    assert vectors.shape == (len(sample), 4 * 660) and set(np.unique(vectors)) <= {0.0, 1.0}

    aligned = align_to_reference(sample)
    by_hand = [[sum(x == y and x in "ACGT" for x, y in zip(a[:660], b[:660])) for b in aligned] for a in aligned]
    np.testing.assert_array_equal(vectors @ vectors.T, np.array(by_hand, dtype=np.float32))
    # A shifted copy keeps every remaining base at its reference position, so it shares all of them with its
    # source, which is therefore among its nearest keys (a base-by-base comparison of the raw strings would not).
    overlap = shifted_vectors @ vectors.T
    cut = np.arange(1, len(sample) + 1) + (np.arange(len(sample)) == 0)     # bases cut, plus the N of copy 0
    np.testing.assert_array_equal(np.diag(overlap), shifted_vectors.sum(axis=1))
    assert (np.diag(overlap) >= vectors.sum(axis=1) - cut).all()
    assert (np.diag(overlap) == overlap.max(axis=1)).all()
    unaligned = [sum(x == y for x, y in zip(a.upper(), b)) for a, b in zip(shifted, sample)]
    assert max(unaligned) < 0.5 * min(np.diag(overlap))


@pytest.mark.slow
def test_blast_top_hit_finds_the_source_barcode(barcodes):
    sequences, species = barcodes
    keys = sequences[:40]
    # Queries: key barcodes with a few substitutions, in another order; the top hit must be the source barcode.
    rng = np.random.default_rng(0)
    sources = rng.permutation(40)[:12]
    queries = []
    for i in sources:
        bases = list(keys[i])
        for position in rng.choice(len(bases), 5, replace=False):
            bases[position] = "ACGT"[("ACGT".index(bases[position]) + 1) % 4] if bases[position] in "ACGT" else "A"
        queries.append("".join(bases))
    ranked = blast_search(queries + [queries[0]], keys, k=3, threads=1, progress=False)
    assert ranked.shape == (13, 3)
    np.testing.assert_array_equal(ranked[:12, 0], sources)
    np.testing.assert_array_equal(ranked[12], ranked[0])      # identical queries are searched once, same answer
    assert (ranked[:, 1] != ranked[:, 0]).all()                # a key is ranked once


@needs_blast
@pytest.mark.slow
def test_blast_reports_missing_hits_as_minus_one(barcodes):
    sequences, _ = barcodes
    ranked = blast_search(["ACGT" * 40, sequences[0]], sequences[:5], k=2, threads=1, progress=False)
    assert ranked[0].tolist() == [-1, -1] and ranked[1, 0] == 0


def test_blast_absent_is_a_clear_skip_not_a_fake(monkeypatch, barcodes):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not blast_available()
    with pytest.raises(BlastNotFoundError, match="ncbi-blast\\+"):
        blast_search(barcodes[0][:2], barcodes[0][:2])
