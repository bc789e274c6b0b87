"""Evaluation commands: cluster, retrieve, benchmark."""

from __future__ import annotations

from ..data.release import IMAGE_PACKAGES


from .arguments import (
    add_overwrite_arg,
    add_reading_frames_arg,
    add_release_root,
    add_seed_arg,
    csv_list,
    positive_float,
    positive_int,
    positive_int_list,
)


def add_commands(sub) -> None:
    """cluster, retrieve, benchmark."""
    sources = ("dna:MODEL_DIR (or MODEL_DIR: BarcodeBERT, or CLIBD's DNA tower), kmer[:K] (the k-mer baseline), "
               "image:TIMM_NAME or image:CLIBD_DIR (the records' photographs), or fused: dna:A+image:B (W*A to weight)")
    p = sub.add_parser("cluster", help="zero-shot clustering: UMAP 50 -> Ward -> AMI per rank, plus a 2-D UMAP plot")
    p.add_argument("--embeddings", required=True, help=f"embedding source: {sources}, or FILE.npy (one row per record)")
    add_release_root(p)
    p.add_argument("--split", default="test+test_unseen", help="records to cluster (default test+test_unseen)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n-clusters", type=positive_int, default=None, help="number of clusters (default: number of species)")
    group.add_argument("--distance-threshold", type=positive_float, default=None, help="cut the Ward tree at this distance instead")
    p.add_argument("--out", default="runs/cluster", help="folder for clustering.json and the UMAP PNG")
    add_seed_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=128, help="sequences per model forward pass")
    add_reading_frames_arg(p)
    add_image_args(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_cluster)

    p = sub.add_parser("retrieve", help="retrieval (CLIBD protocol): top-1/3/5 micro/macro per rank; DNA->DNA, "
                                        "or image->image, DNA->DNA and image->DNA for a CLIBD model")
    p.add_argument("--model", required=True, help=f"embedding source: {sources}, or a CLIBD folder")
    add_release_root(p, needs="(with images for a CLIBD model)")
    p.add_argument("--queries", default="test,test_unseen", help="comma-separated query splits (default test,test_unseen)")
    p.add_argument("--keys", default="train+key_unseen", help="key splits (default train+key_unseen)")
    p.add_argument("--top-k", type=positive_int_list, default=[1, 3, 5], help="k values (default 1,3,5)")
    p.add_argument("--index", choices=("flat", "ivf"), default="flat", help="FAISS index: exact flat or IVF for millions of keys")
    p.add_argument("--out", default=None, help="output folder (default runs/retrieve; MODEL/retrieval for CLIBD)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="records per forward pass (default 128; 64 for CLIBD)")
    add_reading_frames_arg(p)
    add_image_args(p)
    clibd = p.add_argument_group("CLIBD models")
    clibd.add_argument("--pairs", default="image->image,dna->dna,image->dna", help="query->key modality pairs")
    clibd.add_argument("--baseline", default=None,
                       help="no-alignment model (default MODEL/no_alignment if present; 'none' to skip)")
    clibd.add_argument("--max-records-per-split", type=positive_int, default=None,
                       help="random subset per split (quick runs)")
    add_overwrite_arg(p)
    p.set_defaults(run=_run_retrieve)

    p = sub.add_parser("benchmark", help="the benchmark report: classification, clustering, retrieval vs k-mer and BLAST")
    add_release_root(p)
    p.add_argument("--model", action="append", default=[], help=f"embedding source (repeat for several): {sources}")
    p.add_argument("--blast", action="store_true", help="include the BLAST baseline (needs blastn, package ncbi-blast+)")
    p.add_argument("--kmer", type=positive_int, default=6, help="k of the k-mer baseline (default 6)")
    p.add_argument("--dedup", choices=("barcodebert", "per-split"), default="barcodebert",
                   help="unique-barcode protocol for classification (default barcodebert)")
    p.add_argument("--tasks", default="classification,clustering,retrieval",
                   help="comma-separated tasks: classification, clustering, retrieval, open_world (the open-world "
                        "protocol at every rank), delimitation (species delimitation without labels: BINs, "
                        "UPGMA 2 %%, calibrated single linkage)")
    p.add_argument("--no-linear-probe", action="store_true", help="skip the linear probe")
    p.add_argument("--max-records-per-split", type=positive_int, default=None, help="first N records of each split (quick runs)")
    p.add_argument("--out", default="runs/benchmark", help="folder for report.md, report.json, plots")
    add_seed_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=128, help="records per forward pass (default 128)")
    add_reading_frames_arg(p)
    add_image_args(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_benchmark)


def add_image_args(p) -> None:
    group = p.add_argument_group("photographs (image: sources)")
    group.add_argument("--config", default="cropped_256", choices=IMAGE_PACKAGES,
                       help="image package the photographs are read from (default cropped_256)")
    group.add_argument("--weights", default=None, metavar="FILE.safetensors",
                       help="local weights of an image:TIMM_NAME model (default: its pretrained weights from the Hub)")


def _run_cluster(args) -> None:
    from ..evaluation.benchmark import RANK_TITLES, cluster_report

    result = cluster_report(args.embeddings, args.data, split=args.split, out_dir=args.out, n_clusters=args.n_clusters,
                            distance_threshold=args.distance_threshold, seed=args.seed, batch_size=args.batch_size,
                            reading_frames=args.reading_frames, config=args.config, weights=args.weights,
                            overwrite=args.overwrite)
    print(f"{result['records']:,} records, {result['n_clusters']} clusters ({result['ward']} Ward)")
    for rank, score in result["scores"].items():
        print(f"  AMI {RANK_TITLES[rank]:<10} {100 * score['ami']:6.2f}   ({score['num_classes']} classes)")
    print(f"written to {args.out}: clustering.json, {result['plot'].rsplit('/', 1)[-1]}")


def _run_retrieve(args) -> None:
    if _is_clibd_folder(args.model):
        return _run_clibd_retrieval(args)
    from ..evaluation.benchmark import retrieval_report

    out = args.out or "runs/retrieve"
    result = retrieval_report(args.model, args.data, queries=csv_list(args.queries), keys=args.keys, out_dir=out,
                              top_k=args.top_k, index=args.index,
                              batch_size=args.batch_size or 128, reading_frames=args.reading_frames,
                              config=args.config, weights=args.weights, overwrite=args.overwrite)
    pair = next(key for key in result if "->" in key)
    print(pair)
    for rank, scores in result[pair].items():
        for name in result["queries"]:
            cells = "  ".join(f"{key} {100 * value:6.2f}" for key, value in scores[name].items() if key.startswith(("micro_", "macro_")))
            print(f"  {rank:<8} {name:<12} {cells}")
    print(f"written to {out}/retrieval.json")


def _is_clibd_folder(model: str) -> bool:
    import json
    from pathlib import Path

    config = Path(model) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "clibd"


def _run_clibd_retrieval(args) -> None:
    from ..evaluation.clibd_retrieval import clibd_retrieval_report, markdown_table

    if args.reading_frames != 1:
        raise ValueError("--reading-frames applies to BarcodeBERT models; a CLIBD model embeds each barcode once.")
    baseline = False if (args.baseline or "").lower() == "none" else args.baseline
    report = clibd_retrieval_report(args.model, args.data, config=args.config, queries=csv_list(args.queries),
                                    keys=args.keys, baseline_dir=baseline, pairs=csv_list(args.pairs),
                                    top_k=args.top_k, out_dir=args.out,
                                    max_records_per_split=args.max_records_per_split, batch_size=args.batch_size or 64,
                                    overwrite=args.overwrite)
    print(markdown_table(report))
    print(f"written to {report['plot'].rsplit('/', 1)[0]}: retrieval_clibd.json, .md, .png")


def _run_benchmark(args) -> None:
    from ..evaluation.benchmark import command_line, run_benchmark

    run_benchmark(args.data, models=args.model, out_dir=args.out, blast=args.blast, kmer=args.kmer, dedup=args.dedup,
                  linear_probe=not args.no_linear_probe, seed=args.seed, max_records_per_split=args.max_records_per_split,
                  batch_size=args.batch_size, command=command_line(), tasks=csv_list(args.tasks),
                  reading_frames=args.reading_frames, config=args.config, weights=args.weights,
                  overwrite=args.overwrite)
    print(f"report written to {args.out}/report.md and {args.out}/report.json")
