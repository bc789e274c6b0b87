"""Baselines: ungapped identity and BLAST, run for real on real barcodes."""

from __future__ import annotations

import numpy as np
import pytest

from bioscan5m import read_metadata
from bioscan5m.evaluation.baselines import BlastNotFoundError, aligned_identity_vectors, blast_available, blast_search


@pytest.fixture(scope="module")
def barcodes(bold_root):
    frame = read_metadata(bold_root, split="train")
    frame = frame[~frame["dna_barcode"].str.rstrip("N").duplicated()].head(60)
    return frame["dna_barcode"].str.rstrip("N").tolist(), frame["species"].astype(str).tolist()


needs_blast = pytest.mark.skipif(not blast_available(), reason="blastn/makeblastdb not installed (Debian package ncbi-blast+)")


@needs_blast
def test_aligned_identity_counts_identical_bases_at_reference_positions(barcodes):
    from bioscan5m.tokenization.reference_frame import place_bases

    from bioscan5m.tokenization.reference_frame import align_to_reference

    # Barcodes without an indel (those are placed stretch by stretch: tests/tokenization/test_reference_frame.py).
    whole = [b[:660].ljust(660, "N") for b in align_to_reference(barcodes[0])]
    sample = [b for b, w in zip(barcodes[0], whole) if len(b) >= 600 and "".join(
        "ACGT"[c] if c < 4 else "N" for c in place_bases([b])[0]) == "".join(c if c in "ACGT" else "N" for c in w)][:20]
    # The same barcodes cut at the front by 1..20 bases (a later start), lower case, one base turned into N.
    shifted = [b[cut:].lower() for cut, b in enumerate(sample, start=1)]
    shifted[0] = "N" + shifted[0][1:]
    vectors, shifted_vectors = aligned_identity_vectors(sample), aligned_identity_vectors(shifted)
    assert vectors.shape == (len(sample), 4 * 660) and set(np.unique(vectors)) <= {0.0, 1.0}

    placed = place_bases(sample)
    by_hand = [[sum(x == y and x < 4 for x, y in zip(a, b)) for b in placed] for a in placed]
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


@needs_blast
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
