"""k-mer features by hand and against a plain Python count on real barcodes; the k-mer encoder and model names."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from bioscan5m import read_metadata
from bioscan5m.embedding import KmerEncoder, kmer_counts, kmer_embeddings, kmer_length, l2_normalize_rows, make_encoder


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




def test_kmer_length_reads_model_names():
    assert kmer_length("kmer") == 6 and kmer_length("kmer:4") == 4
    assert kmer_length("runs/bb") is None and kmer_length("kmerish") is None
    for bad in ("kmer:0", "kmer:13", "kmer:x"):
        with pytest.raises(ValueError, match="k-mer length"):
            kmer_length(bad)


def test_l2_normalize_rows_dense_and_sparse_keep_zero_rows():
    import scipy.sparse as sp

    matrix = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize_rows(matrix), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize_rows(sp.csr_matrix(matrix)).toarray(), [[0.6, 0.8], [0.0, 0.0]])


def test_the_kmer_encoder_embeds_a_barcode_nearest_to_itself_and_round_trips(barcodes, tmp_path):
    sequences, _ = barcodes
    encoder = make_encoder("kmer:5", fit_sequences=sequences, seed=0)
    assert isinstance(encoder, KmerEncoder) and encoder.k == 5
    keys = l2_normalize_rows(encoder.embed_dna(sequences))
    assert (np.argmax(keys @ keys.T, axis=1) == np.arange(len(sequences))).mean() > 0.95
    spec = encoder.save(tmp_path)
    again = KmerEncoder.load(tmp_path, spec)
    np.testing.assert_array_equal(again.embed_dna(sequences[:5]), encoder.embed_dna(sequences[:5]))
    with pytest.raises(ValueError, match="fit_sequences"):
        make_encoder("kmer")
