"""The benchmark report: classification, zero-shot clustering and retrieval for each embedding source (DNA models,
image models on the records' photographs, fusions of both) next to the k-mer and BLAST baselines, measured in the
same run on the same records, written as Markdown, JSON and PNG plots.

Protocols (those of the BarcodeBERT, CLIBD and BIOSCAN-5M papers):

* **classification** (BarcodeBERT): unique barcodes -- trailing ``N`` stripped, duplicates dropped across the
  whole release keeping the first in file order (``dedup="barcodebert"``) -- keys ``train``; species accuracy on
  ``test`` (1-NN cosine and a linear probe), genus accuracy on ``test_unseen`` (1-NN). BLAST: top ``blastn`` hit.
  ``dedup="per-split"`` instead keeps unique barcodes within each split after truncating to 660 and stripping
  ``N`` at both ends, the counting behind the reference figures in ``shared/data/README.md``.
* **zero-shot clustering**: ``test+test_unseen`` records (not deduplicated), barcodes cut to 660 then trailing
  ``N`` stripped; UMAP 50 -> Ward with the true number of species -> AMI per rank.
* **retrieval** (CLIBD): keys ``train+key_unseen`` records, queries ``test`` (seen) and ``test_unseen`` (unseen);
  top-1/3/5 micro and macro per rank, harmonic mean of seen and unseen.

This is the one part of ``evaluation`` that loads models: an embedding source is a saved model folder (its
``AutoModel`` must have ``.embed(sequences, batch_size=...)``), the k-mer baseline (``kmer`` / ``kmer:K``) or
a ``.npy`` file of precomputed embeddings.

In reading order: ``records`` (what is scored), ``sources`` (what embeds it), ``tasks`` (each measurement),
``run`` (the whole benchmark and the single-task reports), ``markdown`` (the report and its plots).
"""

from __future__ import annotations

from .markdown import plot_bars, to_markdown
from .records import CLUSTER_RANKS, RANK_TITLES, RecordSet, load_benchmark_records, read_records, unique_barcode_records
from .run import Benchmark, cluster_report, command_line, retrieval_report, run_benchmark
from .sources import (
    EmbeddingSource,
    EmbeddingTable,
    embed_records,
    fused_source,
    image_source,
    kmer_source,
    model_source,
    npy_source,
    parse_source,
)

__all__ = ["Benchmark", "run_benchmark", "cluster_report", "retrieval_report", "command_line", "RecordSet",
           "load_benchmark_records", "read_records", "unique_barcode_records", "EmbeddingSource", "EmbeddingTable",
           "embed_records", "kmer_source", "model_source", "image_source", "fused_source", "npy_source", "parse_source", "to_markdown", "plot_bars", "CLUSTER_RANKS", "RANK_TITLES"]
