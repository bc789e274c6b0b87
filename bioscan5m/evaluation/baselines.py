"""Baselines every model is measured against in the same run: k-mer count embeddings and BLAST top hits.

k-mer counts: every overlapping k-mer of A/C/G/T (windows touching any other character are skipped) counted per
sequence into a sparse ``(n, 4**k)`` matrix; L2-normalised rows make cosine similarity an inner product.

BLAST: ``makeblastdb`` over the key sequences and ``blastn`` (Debian/Ubuntu package ``ncbi-blast+``) for the
queries; the keys ranked by bit score are the prediction. Where ``blastn`` is not installed,
`BlastNotFoundError` says so: the baseline is skipped, never approximated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

_CODES = np.full(256, 4, dtype=np.uint8)
for _i, _base in enumerate(b"ACGT"):
    _CODES[_base] = _i
    _CODES[ord(chr(_base).lower())] = _i


def kmer_counts(sequences: Sequence[str], k: int = 6, chunk_size: int = 20_000):
    """Overlapping k-mer counts as a ``scipy.sparse.csr_matrix`` of shape ``(n, 4**k)`` (float32).

    Column ``j`` is the k-mer whose bases, read as base-4 digits A=0 C=1 G=2 T=3, spell ``j``.
    """
    import scipy.sparse as sp

    if not 1 <= k <= 12:
        raise ValueError(f"k must be between 1 and 12 (4**k columns); got {k}.")
    parts = []
    for start in range(0, len(sequences), chunk_size):
        parts.append(_kmer_counts_chunk(sequences[start:start + chunk_size], k))
    if not parts:
        return sp.csr_matrix((0, 4 ** k), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def _kmer_counts_chunk(sequences: Sequence[str], k: int):
    import scipy.sparse as sp

    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    codes = _CODES[np.frombuffer("".join(sequences).encode("ascii", "replace"), dtype=np.uint8)]
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    total = len(codes)
    window_count = total - k + 1
    if window_count <= 0:
        return sp.csr_matrix((len(sequences), 4 ** k), dtype=np.float32)
    value = np.zeros(window_count, dtype=np.int64)
    for offset in range(k):
        value = value * 4 + np.minimum(codes[offset:offset + window_count], 3)
    # A window is valid when all its bases are ACGT and it does not cross into the next sequence.
    invalid = np.concatenate([[0], np.cumsum(codes == 4)])
    valid = (invalid[k:k + window_count] - invalid[:window_count]) == 0
    row = np.repeat(np.arange(len(sequences)), lengths)[:window_count]
    position = np.arange(window_count) - starts[row]
    valid &= position + k <= lengths[row]
    matrix = sp.coo_matrix((np.ones(valid.sum(), dtype=np.float32), (row[valid], value[valid])),
                           shape=(len(sequences), 4 ** k))
    return matrix.tocsr()


def kmer_length(spec) -> int | None:
    """The k of a k-mer model name (``"kmer"`` is k = 6, ``"kmer:K"`` any other k), or None for any other name."""
    spec = str(spec)
    if spec != "kmer" and not spec.startswith("kmer:"):
        return None
    k = spec.partition(":")[2] or "6"
    if not k.isdigit() or not 1 <= int(k) <= 12:
        raise ValueError(f"{spec!r}: the k-mer length must be an integer from 1 to 12, e.g. 'kmer:6'.")
    return int(k)


def l2_normalize_rows(matrix):
    """Rows scaled to unit L2 norm (zero rows stay zero); dense or scipy sparse."""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms).astype(np.float32) @ matrix
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def aligned_identity_vectors(sequences: Sequence[str], length: int = 660) -> np.ndarray:
    """The ungapped-identity baseline: one-hot bases in COI-5P reference coordinates, ``(n, 4 * length)`` float32.

    Each barcode is placed by :func:`~bioscan5m.tokenization.reference_frame.align_to_reference` (leading ``N`` or
    upstream bases dropped), cut or ``N``-padded to ``length``; row ``i`` has a 1 at ``4 * p + b`` when its base at
    reference position ``p`` is ``b`` (A, C, G, T; ``N`` and other codes have none). The inner product of two rows
    is the number of positions where both barcodes have the same base, so exact inner-product 1-NN finds the key
    with the most identical bases without gaps: a BLAST-like nearest barcode at the cost of one matrix product.
    """
    from ..tokenization.reference_frame import align_to_reference

    aligned = align_to_reference([str(sequence).upper() for sequence in sequences])
    text = "".join(sequence[:length].ljust(length, "N") for sequence in aligned)
    codes = _CODES[np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)].reshape(len(aligned), length)
    vectors = np.zeros((len(aligned), length, 4), dtype=np.float32)
    rows, positions = np.nonzero(codes < 4)
    vectors[rows, positions, codes[rows, positions]] = 1.0
    return vectors.reshape(len(aligned), 4 * length)


def kmer_embeddings(sequences: Sequence[str], k: int = 6, svd_dims: int | None = 256, seed: int = 0,
                    fit_sequences: Sequence[str] | None = None) -> np.ndarray:
    """The k-mer baseline embedding: L2-normalised k-mer counts, projected to ``svd_dims`` by a truncated SVD.

    The SVD is fitted on ``fit_sequences`` when given (e.g. the keys), else on ``sequences`` themselves (it uses
    no labels). ``svd_dims=None`` returns the dense normalised counts (``4**k`` columns).
    """
    counts = l2_normalize_rows(kmer_counts(sequences, k))
    if svd_dims is None:
        return counts.toarray()
    fit_on = counts if fit_sequences is None else l2_normalize_rows(kmer_counts(fit_sequences, k))
    return kmer_svd(fit_on, svd_dims, seed).transform(counts).astype(np.float32)


def kmer_svd(counts, dims: int, seed: int = 0):
    """A truncated SVD of normalised k-mer counts (no labels), to ``dims`` components or fewer when the counts have
    fewer rows or columns: the projection of every k-mer embedding here."""
    from sklearn.decomposition import TruncatedSVD

    components = max(1, min(dims, counts.shape[0] - 1, counts.shape[1] - 1))
    return TruncatedSVD(n_components=components, algorithm="randomized", random_state=seed).fit(counts)


# ---------------------------------------------------------------------------------------------- BLAST
class BlastNotFoundError(RuntimeError):
    """``blastn``/``makeblastdb`` are not installed, so the BLAST baseline cannot run."""


def blast_available() -> bool:
    return shutil.which("blastn") is not None and shutil.which("makeblastdb") is not None


def blast_version() -> str:
    """The installed ``blastn`` version line, e.g. ``blastn: 2.12.0+``."""
    require_blast()
    return subprocess.run(["blastn", "-version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def require_blast() -> None:
    """Raise `BlastNotFoundError` with install instructions unless ``blastn`` and ``makeblastdb`` are on PATH."""
    if not blast_available():
        raise BlastNotFoundError(
            "BLAST baseline skipped: `blastn`/`makeblastdb` not found on PATH. Install NCBI BLAST+ "
            "(Debian/Ubuntu: `apt-get install ncbi-blast+`, conda: `conda install -c bioconda blast`)."
        )


def _write_fasta(path: Path, sequences: Sequence[str]) -> None:
    with open(path, "w") as handle:
        for i, sequence in enumerate(sequences):
            handle.write(f">{i}\n{sequence}\n")


def blast_search(queries: Sequence[str], keys: Sequence[str], k: int = 1, threads: int | None = None,
                 workdir: str | os.PathLike | None = None, max_target_seqs: int | None = None,
                 progress: bool = True) -> np.ndarray:
    """Rank keys for each query by ``blastn`` bit score (best first) against a ``makeblastdb`` of the keys.

    Returns an ``(n_queries, k)`` int array of key indices; ``-1`` where BLAST found fewer than ``k`` hits.
    Identical query sequences are searched once. ``blastn`` runs with its defaults (megablast), tabular
    output, ``max_target_seqs`` of ``max(10, 2k)`` by default.
    """
    require_blast()
    if len(keys) == 0:
        raise ValueError("keys is empty: BLAST needs at least one key sequence to build a database.")
    if len(queries) == 0:
        raise ValueError("queries is empty: nothing to search.")
    unique, inverse = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
    threads = threads or os.cpu_count() or 1
    max_target_seqs = max_target_seqs or max(10, 2 * k)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="blast-") as tmp:
        tmp = Path(tmp)
        _write_fasta(tmp / "keys.fasta", keys)
        _write_fasta(tmp / "queries.fasta", unique)
        subprocess.run(["makeblastdb", "-in", str(tmp / "keys.fasta"), "-dbtype", "nucl", "-out", str(tmp / "keys")],
                       check=True, capture_output=True, text=True)
        command = ["blastn", "-query", str(tmp / "queries.fasta"), "-db", str(tmp / "keys"), "-outfmt", "6 qseqid sseqid bitscore",
                   "-max_target_seqs", str(max_target_seqs), "-num_threads", str(threads), "-out", str(tmp / "hits.tsv")]
        _run_with_progress(command, tmp / "hits.tsv", len(unique), progress)
        ranked = _rank_hits(tmp / "hits.tsv", len(unique), k)
    return ranked[inverse]


def _run_with_progress(command: list[str], output: Path, total: int, progress: bool) -> None:
    """Run blastn, advancing a progress bar by the queries already written to its output."""
    from tqdm.auto import tqdm

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with tqdm(total=total, desc="blastn", unit="query", disable=not progress) as bar:
        while process.poll() is None:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            if output.exists():
                done = _last_query_id(output)
                bar.update(max(0, done - bar.n))
        bar.update(total - bar.n)
    if process.returncode != 0:
        raise RuntimeError(f"blastn failed (exit {process.returncode}): {process.stderr.read().strip()[:500]}")


def _last_query_id(path: Path) -> int:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 4096))
        lines = handle.read().splitlines()
    for line in reversed(lines[:-1] if len(lines) > 1 else lines):
        fields = line.split(b"\t")
        if len(fields) == 3 and fields[0].isdigit():
            return int(fields[0])
    return 0


def _rank_hits(path: Path, n_queries: int, k: int) -> np.ndarray:
    import pandas as pd

    ranked = np.full((n_queries, k), -1, dtype=np.int64)
    hits = pd.read_csv(path, sep="\t", header=None, names=["query", "key", "bitscore"])
    if hits.empty:
        return ranked
    # blastn reports several HSPs per query-key pair; a key counts once, by its best HSP. Ties keep blastn's order.
    hits = hits.sort_values(["query", "bitscore"], ascending=[True, False], kind="stable")
    hits = hits.drop_duplicates(["query", "key"])
    hits["position"] = hits.groupby("query").cumcount()
    hits = hits[hits["position"] < k]
    ranked[hits["query"].to_numpy(), hits["position"].to_numpy()] = hits["key"].to_numpy()
    return ranked
