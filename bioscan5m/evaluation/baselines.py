"""Baselines every model is measured against in the same run, beside the k-mer counts of ``bioscan5m.embedding``:
ungapped identity in the reference frame, and BLAST top hits.

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

from ..embedding import aligned_base_codes, one_hot_bases


def aligned_identity_vectors(sequences: Sequence[str], length: int = 660) -> np.ndarray:
    """The ungapped-identity baseline: one-hot bases in COI-5P reference coordinates, ``(n, 4 * length)`` float32.

    Row ``i`` has a 1 at ``4 * p + b`` when its base at reference position ``p`` is ``b`` (A, C, G, T; see
    `aligned_base_codes`). The inner product of two rows is the number of positions where both barcodes have the
    same base, so exact inner-product 1-NN finds the key with the most identical bases without gaps: a BLAST-like
    nearest barcode at the cost of one matrix product.
    """
    return one_hot_bases(aligned_base_codes(sequences, length))


def aligned_identity_nearest(queries: Sequence[str], keys: Sequence[str], chunk: int = 512) -> np.ndarray:
    """For each query, the key with the most identical bases at the same reference positions (ungapped identity
    1-NN): the exact inner product of `aligned_identity_vectors`, in chunks of ``chunk`` queries."""
    key_vectors = aligned_identity_vectors(list(keys))
    nearest = [(aligned_identity_vectors(list(queries[start:start + chunk])) @ key_vectors.T).argmax(axis=1)
               for start in range(0, len(queries), chunk)]
    return np.concatenate(nearest) if nearest else np.zeros(0, dtype=np.int64)


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
