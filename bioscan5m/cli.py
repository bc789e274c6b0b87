"""``bioscan5m``: a thin command line over the Python API. Every command maps to one documented function."""

from __future__ import annotations

import argparse
import sys


# ---------------------------------------------------------------------------------------------- dataset
def _add_dataset_commands(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic release in the official layout")
    p.add_argument("out", help="release root to create")
    p.add_argument("--records", type=int, default=4000, help="number of specimen records (default 4000)")
    p.add_argument("--packages", default="cropped_256,original_256",
                   help="image packages to draw, comma-separated (default cropped_256,original_256)")
    p.add_argument("--seed", type=int, default=0)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_sample)

    p = sub.add_parser("export", help="export a release as Hub-ready Parquet shards with a dataset card")
    p.add_argument("root", help="release root (holds bioscan5m/metadata/...)")
    p.add_argument("out", help="output folder (created atomically)")
    p.add_argument("--configs", default=None, help="comma-separated configs (default: dna + every image package present)")
    p.add_argument("--splits", default="all", help="split expression, e.g. 'train+val' (default all)")
    p.add_argument("--max-shard-mb", type=_positive_int, default=500, help="target Parquet shard size in MB")
    p.add_argument("--max-nucleotides", type=_nucleotides, default=660,
                   help="cut barcodes to this many nucleotides ('none' keeps them whole; default 660)")
    p.add_argument("--skip-missing-images", action="store_true", help="skip records without an image and report how many")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the exported folder to this Hub dataset repo")
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_export)

    p = sub.add_parser("download", help="download the official release files (resumable, checksum-verified)")
    p.add_argument("root", help="release root to download into")
    p.add_argument("--package", default=None, help="image package to fetch (default: metadata only)")
    p.add_argument("--splits", default="all", help="which split groups' images to fetch")
    p.set_defaults(run=_run_download)

    p = sub.add_parser("info", help="print a summary table of every config and split of a release")
    p.add_argument("root")
    p.set_defaults(run=_run_info)


def _run_sample(args) -> None:
    from .data.synthetic import make_sample

    root = make_sample(args.out, num_records=args.records, packages=_csv_list(args.packages), seed=args.seed,
                       overwrite=args.overwrite)
    print(f"synthetic release written to {root}")


def _run_export(args) -> None:
    from .data.export import export

    out = export(args.root, args.out, configs=_csv_list(args.configs) if args.configs else None, split=args.splits,
                 max_shard_bytes=args.max_shard_mb << 20, skip_missing_images=args.skip_missing_images,
                 max_nucleotides=args.max_nucleotides, push_to_hub=args.push_to_hub, overwrite=args.overwrite)
    print(f"exported to {out}")


def _run_download(args) -> None:
    from .data.download import download

    for path in download(args.root, package=args.package, split=args.splits):
        print(path)


def _run_info(args) -> None:
    from .data.summary import summarize_release

    print(summarize_release(args.root))


# ---------------------------------------------------------------------------------------------- DNA models
def _add_dna_commands(sub) -> None:
    """pretrain, finetune, probe, embed, convert-barcodebert."""
    p = sub.add_parser("pretrain", help="masked-LM pretraining of BarcodeBERT on pretrain+other_heldout (unique barcodes)")
    p.add_argument("--data", required=True, help="release root (holds bioscan5m/metadata/...)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--preset", default="cpu-small", help="paper, cpu-small or tiny (default cpu-small)")
    p.add_argument("--k", dest="k_mer", type=int, default=None, help="k-mer length (overrides the preset)")
    p.add_argument("--vocabulary", dest="tokenizer_vocabulary", choices=("barcodebert", "standard"), default=None)
    p.add_argument("--scheme", dest="mlm_scheme", choices=("barcodebert", "standard"), default=None,
                   help="barcodebert: 50%% [MASK], loss on all tokens; standard: BERT 15%% 80/10/10")
    _add_align_arg(p)
    _add_run_length_args(p)
    p.set_defaults(run=_run_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a BarcodeBERT on train: taxonomic classifiers (accuracy on test) "
                                        "or, with --objective contrastive, an embedding for identification")
    p.add_argument("--model", required=True, help="pretrained model folder")
    p.add_argument("--data", required=True, help="release root")
    p.add_argument("--out", required=True, help="fine-tuned model folder to write")
    p.add_argument("--objective", choices=("classification", "contrastive"), default="classification",
                   help="classification heads per rank (default), or the supervised contrastive loss on the "
                        "embeddings (then probed: linear probe species@test, 1-NN genus@test_unseen)")
    p.add_argument("--rank", default=None, help="rank(s), comma-separated, coarse to fine (default species; "
                                                "contrastive: genus,species)")
    p.add_argument("--preset", default="cpu-small", help="supplies epochs, batch size, learning rate")
    p.add_argument("--freeze-encoder", action="store_true", help="train the heads only (linear probe)")
    p.add_argument("--head-init", choices=("linear-probe", "random"), default="linear-probe",
                   help="start the heads from a linear probe on frozen embeddings (LP-FT, default) or at random")
    p.add_argument("--temperature", type=float, default=None, help="contrastive: loss temperature (preset's)")
    p.add_argument("--group-size", type=int, default=4, help="contrastive: barcodes of one species per group")
    p.add_argument("--pooling", choices=("mean", "per_position"), default=None,
                   help="contrastive: pool token states by their mean or per gene position (aligned models; "
                        "default: the pretrained model's)")
    p.add_argument("--per-position-size", type=int, default=None, help="contrastive: values per position (16)")
    p.add_argument("--layers", type=int, default=None,
                   help="contrastive: keep only the first N encoder layers (a faster encoder; default all)")
    _add_align_arg(p)
    _add_run_length_args(p)
    p.set_defaults(run=_run_finetune)

    p = sub.add_parser("probe", help="linear probe species@test and 1-NN genus@test_unseen of a pretrained model")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    _add_reading_frames_arg(p)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_probe)

    p = sub.add_parser("embed", help="embed the barcodes of a split into a .npy array (float16 or float32)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="all", help="split expression, e.g. 'train+val' (default all)")
    p.add_argument("--out", required=True, help=".npy file to write; processids go beside it as .txt")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float32")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    _add_reading_frames_arg(p)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_embed)

    p = sub.add_parser("convert-barcodebert", help="convert an original BarcodeBERT checkpoint (.pt/.pth/.safetensors)")
    p.add_argument("checkpoint", help="original checkpoint; .pt/.pth are read with torch.load(weights_only=True)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--heads", type=_positive_int, default=None,
                   help="attention heads, if the checkpoint does not record them")
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_convert_barcodebert)


def _add_reading_frames_arg(p) -> None:
    p.add_argument("--reading-frames", type=int, default=1,
                   help="BarcodeBERT models: average each barcode's vectors over this many start offsets "
                        "(1 to k; k makes barcodes that start at different positions comparable; k times the compute)")


def _add_align_arg(p) -> None:
    p.add_argument("--align-to-reference", action=argparse.BooleanOptionalAction, default=None,
                   help="place barcodes in COI-5P reference coordinates before cutting k-mers, so every barcode's "
                        "k-mers are cut at the same gene positions (saved with the tokenizer; default: the preset's "
                        "setting, or for finetune the pretrained tokenizer's)")


def _add_run_length_args(p) -> None:
    p.add_argument("--epochs", type=float, default=None, help="override the preset's epochs")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--max-barcodes", type=int, default=None, help="use only this many barcodes (quick runs)")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    _add_overwrite_arg(p)


def _run_pretrain(args) -> None:
    from .training.pretrain import pretrain

    out = pretrain(args.data, args.out, preset=args.preset, k_mer=args.k_mer, mlm_scheme=args.mlm_scheme,
                   tokenizer_vocabulary=args.tokenizer_vocabulary, align_to_reference=args.align_to_reference,
                   epochs=args.epochs, max_steps=args.max_steps,
                   max_barcodes=args.max_barcodes, batch_size=args.batch_size, learning_rate=args.learning_rate,
                   seed=args.seed, overwrite=args.overwrite)
    print(f"pretrained model written to {out}")


def _run_finetune(args) -> None:
    contrastive_only = {"--pooling": args.pooling, "--per-position-size": args.per_position_size,
                        "--layers": args.layers}
    if args.objective == "contrastive":
        if args.freeze_encoder or args.align_to_reference is not None:
            raise SystemExit("--freeze-encoder and --align-to-reference apply to --objective classification only; "
                             "contrastive fine-tuning keeps the pretrained tokenizer's frame.")
        from .training.contrastive import contrastive_finetune

        _print_results(contrastive_finetune(
            args.model, args.data, args.out, ranks=tuple(_csv_list(args.rank or "genus,species")), preset=args.preset,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            temperature=args.temperature, group_size=args.group_size, pooling=args.pooling,
            per_position_size=args.per_position_size, num_hidden_layers=args.layers, max_steps=args.max_steps,
            max_barcodes=args.max_barcodes, seed=args.seed, overwrite=args.overwrite))
        return
    given = [option for option, value in contrastive_only.items() if value is not None]
    if given:
        raise SystemExit(f"{', '.join(given)} apply to --objective contrastive only.")
    from .training.finetune import finetune

    results = finetune(args.model, args.data, args.out, ranks=tuple(_csv_list(args.rank or "species")),
                       preset=args.preset, epochs=args.epochs, max_steps=args.max_steps, max_barcodes=args.max_barcodes,
                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                       freeze_encoder=args.freeze_encoder, head_init=args.head_init,
                       align_to_reference=args.align_to_reference, seed=args.seed, overwrite=args.overwrite)
    _print_results(results)


def _run_probe(args) -> None:
    from .training.probes import probe

    _print_results(probe(args.model, args.data, out_path=args.out, batch_size=args.batch_size,
                         reading_frames=args.reading_frames, overwrite=args.overwrite))


def _run_embed(args) -> None:
    import numpy as np

    from .data.metadata import read_metadata
    from .staging import check_output, staged_file
    from .training.embeddings import embed_sequences

    ids = str(args.out).removesuffix(".npy") + ".processid.txt"
    for path in (args.out, ids):
        check_output(path, args.overwrite)
    frame = read_metadata(args.data, split=args.split)
    embed_sequences(args.model, frame["dna_barcode"], batch_size=args.batch_size, dtype=np.dtype(args.dtype),
                    out_path=args.out, reading_frames=args.reading_frames, overwrite=args.overwrite)
    with staged_file(ids, args.overwrite) as order:
        order.write_text("\n".join(frame["processid"]) + "\n")
    print(f"{len(frame)} embeddings written to {args.out} (row order: {ids})")


def _run_convert_barcodebert(args) -> None:
    from pathlib import Path

    from .modeling.convert_barcodebert import convert_barcodebert
    from .staging import staged_folder

    with staged_folder(args.out, args.overwrite) as staging:
        convert_barcodebert(args.checkpoint, out_dir=staging, num_attention_heads=args.heads,
                            name=Path(args.out).name)
    print(f"converted model written to {args.out}")


def _print_results(results: dict) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name, value in results.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")


# ---------------------------------------------------------------------------------------------- evaluation
def _add_evaluation_commands(sub) -> None:
    """cluster, retrieve, benchmark."""
    sources = "dna:MODEL_DIR (or MODEL_DIR), kmer[:K] for the k-mer baseline"
    p = sub.add_parser("cluster", help="zero-shot clustering: UMAP 50 -> Ward -> AMI per rank, plus a 2-D UMAP plot")
    p.add_argument("--embeddings", required=True, help=f"embedding source: {sources}, or FILE.npy (one row per record)")
    p.add_argument("--data", required=True, help="release root")
    p.add_argument("--split", default="test+test_unseen", help="records to cluster (default test+test_unseen)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n-clusters", type=int, default=None, help="number of clusters (default: number of species)")
    group.add_argument("--distance-threshold", type=float, default=None, help="cut the Ward tree at this distance instead")
    p.add_argument("--out", default="runs/cluster", help="folder for clustering.json and the UMAP PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=128, help="sequences per model forward pass")
    _add_reading_frames_arg(p)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_cluster)

    p = sub.add_parser("retrieve", help="retrieval (CLIBD protocol): top-1/3/5 micro/macro per rank; DNA->DNA, "
                                        "or image->image, DNA->DNA and image->DNA for a CLIBD model")
    p.add_argument("--model", required=True, help=f"embedding source: {sources}, or a CLIBD folder")
    p.add_argument("--data", required=True, help="release root (with images for a CLIBD model)")
    p.add_argument("--queries", default="test,test_unseen", help="comma-separated query splits (default test,test_unseen)")
    p.add_argument("--keys", default="train+key_unseen", help="key splits (default train+key_unseen)")
    p.add_argument("--top-k", default="1,3,5", help="k values (default 1,3,5)")
    p.add_argument("--index", choices=("flat", "ivf"), default="flat", help="FAISS index: exact flat or IVF for millions of keys")
    p.add_argument("--out", default=None, help="output folder (default runs/retrieve; MODEL/retrieval for CLIBD)")
    p.add_argument("--batch-size", type=int, default=None, help="records per forward pass (default 128; 64 for CLIBD)")
    _add_reading_frames_arg(p)
    clibd = p.add_argument_group("CLIBD models")
    clibd.add_argument("--config", default="cropped_256", help="image package (default cropped_256)")
    clibd.add_argument("--pairs", default="image->image,dna->dna,image->dna", help="query->key modality pairs")
    clibd.add_argument("--baseline", default=None,
                       help="no-alignment model (default MODEL/no_alignment if present; 'none' to skip)")
    clibd.add_argument("--max-records-per-split", type=_positive_int, default=None,
                       help="random subset per split (quick runs)")
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_retrieve)

    p = sub.add_parser("benchmark", help="the benchmark report: classification, clustering, retrieval vs k-mer and BLAST")
    p.add_argument("--data", required=True, help="release root")
    p.add_argument("--model", action="append", default=[], help="saved model folder (repeat for several)")
    p.add_argument("--blast", action="store_true", help="include the BLAST baseline (needs blastn, package ncbi-blast+)")
    p.add_argument("--kmer", type=int, default=6, help="k of the k-mer baseline (default 6)")
    p.add_argument("--dedup", choices=("barcodebert", "per-split"), default="barcodebert",
                   help="unique-barcode protocol for classification (default barcodebert)")
    p.add_argument("--tasks", default="classification,clustering,retrieval", help="comma-separated tasks to run")
    p.add_argument("--no-linear-probe", action="store_true", help="skip the linear probe")
    p.add_argument("--max-records-per-split", type=int, default=None, help="first N records of each split (quick runs)")
    p.add_argument("--out", default="runs/benchmark", help="folder for report.md, report.json, plots")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    _add_reading_frames_arg(p)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_benchmark)


def _run_cluster(args) -> None:
    from .evaluation.benchmark import RANK_TITLES, cluster_report

    result = cluster_report(args.embeddings, args.data, split=args.split, out_dir=args.out, n_clusters=args.n_clusters,
                            distance_threshold=args.distance_threshold, seed=args.seed, batch_size=args.batch_size,
                            reading_frames=args.reading_frames, overwrite=args.overwrite)
    print(f"{result['records']:,} records, {result['n_clusters']} clusters ({result['ward']} Ward)")
    for rank, score in result["scores"].items():
        print(f"  AMI {RANK_TITLES[rank]:<10} {100 * score['ami']:6.2f}   ({score['num_classes']} classes)")
    print(f"written to {args.out}: clustering.json, {result['plot'].rsplit('/', 1)[-1]}")


def _run_retrieve(args) -> None:
    if _is_clibd_folder(args.model):
        return _run_clibd_retrieval(args)
    from .evaluation.benchmark import retrieval_report

    out = args.out or "runs/retrieve"
    result = retrieval_report(args.model, args.data, queries=_csv_list(args.queries), keys=args.keys, out_dir=out,
                              top_k=[int(k) for k in _csv_list(args.top_k)], index=args.index,
                              batch_size=args.batch_size or 128, reading_frames=args.reading_frames,
                              overwrite=args.overwrite)
    for rank, scores in result["dna->dna"].items():
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
    from .evaluation.clibd_retrieval import clibd_retrieval_report, markdown_table

    if args.reading_frames != 1:
        raise ValueError("--reading-frames applies to BarcodeBERT models; a CLIBD model embeds each barcode once.")
    baseline = False if (args.baseline or "").lower() == "none" else args.baseline
    report = clibd_retrieval_report(args.model, args.data, config=args.config, queries=_csv_list(args.queries),
                                    keys=args.keys, baseline_dir=baseline, pairs=_csv_list(args.pairs),
                                    top_k=[int(k) for k in _csv_list(args.top_k)], out_dir=args.out,
                                    max_records_per_split=args.max_records_per_split, batch_size=args.batch_size or 64,
                                    overwrite=args.overwrite)
    print(markdown_table(report))
    print(f"written to {report['plot'].rsplit('/', 1)[0]}: retrieval_clibd.json, .md, .png")


def _run_benchmark(args) -> None:
    from .evaluation.benchmark import command_line, run_benchmark

    run_benchmark(args.data, models=args.model, out_dir=args.out, blast=args.blast, kmer=args.kmer, dedup=args.dedup,
                  linear_probe=not args.no_linear_probe, seed=args.seed, max_records_per_split=args.max_records_per_split,
                  batch_size=args.batch_size, command=command_line(), tasks=_csv_list(args.tasks),
                  reading_frames=args.reading_frames, overwrite=args.overwrite)
    print(f"report written to {args.out}/report.md and {args.out}/report.json")


# ---------------------------------------------------------------------------------------------- multimodal
def _add_clip_commands(sub) -> None:
    """train-clip (its retrieval runs through `retrieve`)."""
    p = sub.add_parser("train-clip", help="contrastive image-DNA-taxonomy training of CLIBD on pretrain+train records")
    p.add_argument("--data", required=True, help="release root with images (holds bioscan5m/metadata/...)")
    p.add_argument("--config", default="cropped_256", help="image package (default cropped_256)")
    p.add_argument("--dna-model", default=None, help="pretrained BarcodeBERT folder for the DNA encoder (default: new)")
    p.add_argument("--out", required=True, help="model folder to write (the untrained model goes to OUT/no_alignment)")
    p.add_argument("--preset", default="cpu-small", help="paper, cpu-small or tiny (default cpu-small)")
    p.add_argument("--split", default="pretrain+train", help="training records (default pretrain+train, as CLIBD)")
    p.add_argument("--modalities", default="image,dna,text", help="modalities to align (default image,dna,text)")
    p.add_argument("--metadata", default="", help="metadata fused into the image embedding: geo, size or geo,size")
    p.add_argument("--freeze", action="append", default=[], metavar="ENCODER[:N]",
                   help="freeze image, dna or text (repeatable); ENCODER:N keeps its last N blocks trainable")
    p.add_argument("--image-weights", default=None, help="'timm' (pretrained timm weights, needs the Hub) or a .safetensors file")
    p.add_argument("--no-augment", action="store_true", help="train on the evaluation transform (no CLIBD augmentation)")
    p.add_argument("--max-records", type=int, default=None, help="random subset of this many training records")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_train_clip)


def _run_train_clip(args) -> None:
    from .training.train_clibd import train_clibd

    freeze = {}
    for spec in args.freeze:
        encoder, _, layers = spec.partition(":")
        freeze[encoder] = int(layers) if layers else 0
    summary = train_clibd(args.data, args.out, config=args.config, dna_model=args.dna_model, preset=args.preset,
                          split=args.split, modalities=_csv_list(args.modalities),
                          metadata_features=_csv_list(args.metadata), freeze=freeze, epochs=args.epochs,
                          max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                          max_records=args.max_records, augment=not args.no_augment, image_weights=args.image_weights,
                          num_workers=args.num_workers, seed=args.seed, overwrite=args.overwrite)
    _print_results({"steps": summary["steps"], "train_loss": summary["train_loss"],
                    "seconds_per_step": summary["seconds_per_step"], "written_to": args.out})


# ---------------------------------------------------------------------------------------------- space
def _add_space_commands(sub) -> None:
    """index build, identify, serve."""
    models = "'kmer[:K]' (k-mer embedding, no training), a BarcodeBERT folder or a CLIBD folder"
    index = sub.add_parser("index", help="key indexes of reference specimens for identification")
    index_sub = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    p = index_sub.add_parser("build", help="embed the records of some splits into a FAISS key index, with calibration")
    p.add_argument("--data", required=True, help="release root (holds bioscan5m/metadata/...)")
    p.add_argument("--model", default="kmer", help=f"embedding model: {models} (default kmer)")
    p.add_argument("--out", default=None, help="index folder (default MODEL/index, beside the model)")
    p.add_argument("--splits", default="train+key_unseen", help="key splits (default train+key_unseen)")
    p.add_argument("--calibration", default="val+val_unseen+other_heldout",
                   help="splits that calibrate confidences and the novelty threshold ('none' to skip)")
    p.add_argument("--image-package", default="cropped_256", help="photographs for thumbnails / CLIBD image keys")
    p.add_argument("--no-thumbnails", action="store_true", help="do not store key photographs")
    p.add_argument("--index-type", choices=("flat", "ivf"), default="flat", help="exact flat, or IVF for millions of keys")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    _add_overwrite_arg(p)
    p.set_defaults(run=_run_index_build)

    p = sub.add_parser("identify", help="identify one specimen from a barcode (text or FASTA) and/or a photograph")
    p.add_argument("--index", required=True, help="key index folder (from `bioscan5m index build`)")
    p.add_argument("--model", default=None, help="model folder, if it moved since the index was built")
    p.add_argument("--dna", default=None, help="the barcode, as text")
    p.add_argument("--fasta", default=None, help="a FASTA file holding one barcode")
    p.add_argument("--image", default=None, help="a specimen photograph (needs a CLIBD index)")
    p.add_argument("--top", type=_positive_int, default=10, help="nearest reference specimens to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(run=_run_identify)

    p = sub.add_parser("serve", help="the identification web page (Gradio), on 127.0.0.1 unless --host says otherwise")
    p.add_argument("--index", default=None, help="key index folder (default MODEL/index; none: the synthetic demo)")
    p.add_argument("--model", default=None, help="model folder, if it moved since the index was built")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve the network)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(run=_run_serve)


def _run_index_build(args) -> None:
    from .identification import build_index

    calibration = None if args.calibration.lower() == "none" else args.calibration
    out = build_index(args.data, args.out, model=args.model, splits=args.splits, calibration=calibration,
                      image_package=args.image_package, thumbnails=not args.no_thumbnails, index_type=args.index_type,
                      batch_size=args.batch_size, seed=args.seed, overwrite=args.overwrite)
    import json

    manifest = json.loads((out / "index.json").read_text())
    print(f"{manifest['keys']:,} keys ({manifest['thumbnails']:,} with thumbnails) written to {out}")
    for modality, calibration in (manifest.get("calibration") or {}).items():
        if calibration.get("novelty_threshold") is None:
            continue
        print(f"{modality} queries: novelty threshold {calibration['novelty_threshold']:.4f} (AUROC "
              f"{calibration['novelty_auroc']:.3f}; flags {calibration['flagged_known']:.1%} of {calibration['known']} "
              f"known-species records, {calibration['flagged_novel_held_out'] or 0:.1%} of {calibration['novel']} "
              f"held-out novel ones and {calibration['flagged_leave_species_out']:.1%} of "
              f"{calibration['novel_leave_species_out']} leave-species-out ones), vote temperature "
              f"{calibration['temperature']:.4g}")


def _run_identify(args) -> None:
    from .identification import format_identification, identify, load_index, read_fasta_file

    if args.dna is not None and args.fasta is not None:
        raise ValueError("Give the barcode once: --dna or --fasta, not both.")
    dna = read_fasta_file(args.fasta) if args.fasta else args.dna
    result = identify(load_index(args.index, model=args.model), dna=dna, image=args.image, top_k=args.top)
    if args.json:
        import json

        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_identification(result))


def _run_serve(args) -> None:
    from pathlib import Path

    from .apps.space import serve

    index = args.index
    if index is None and args.model is not None:
        index = str(Path(args.model) / "index")
    serve(index=index, model=args.model, host=args.host, port=args.port)


# ---------------------------------------------------------------------------------------------- demo
def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="the main job end to end on the embedded synthetic release")
    p.add_argument("--workdir", default="demo", help="where the sample, export and outputs go")
    p.add_argument("--records", type=int, default=4000)
    p.add_argument("--dataset-only", action="store_true", help="stop after the dataset steps (no model training)")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> None:
    from .apps.demo import run_demo

    run_demo(args.workdir, num_records=args.records, models=not args.dataset_only)


def _add_overwrite_arg(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output if it exists (it is replaced only once the new one is complete)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nucleotides(text: str) -> int | None:
    return None if text.lower() == "none" else _positive_int(text)


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioscan5m", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_dataset_commands(sub)
    _add_dna_commands(sub)
    _add_evaluation_commands(sub)
    _add_clip_commands(sub)
    _add_space_commands(sub)
    _add_demo_command(sub)
    return parser


def _leave_process_group(finished: bool) -> None:
    """Close the ``torchrun`` process group, if a training command opened one, before the interpreter exits.

    A gloo group left open aborts a process at exit now and then ("terminate called without an active exception",
    pytorch/pytorch#190489). After a successful run every process first waits for the others, so none exits while
    rank 0 still saves; after a failure there is no waiting, as the other processes may never arrive.
    """
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def input_problem(error: BaseException) -> BaseException | None:
    """The problem with the user's input behind ``error`` (the error itself, or the one a library wrapped, as
    ``datasets`` wraps every error of a builder in ``DatasetGenerationError``), or None for a bug."""
    import zipfile

    from PIL import Image

    while error is not None:
        if isinstance(error, (ValueError, OSError, zipfile.BadZipFile, Image.DecompressionBombError)):
            return error
        error = error.__cause__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    finished = False
    try:
        args.run(args)
        finished = True
    except Exception as error:
        # Input problems get one clear line, not a traceback; BIOSCAN5M_DEBUG=1 shows the traceback.
        import os

        problem = input_problem(error)
        if problem is None or os.environ.get("BIOSCAN5M_DEBUG"):
            raise
        print(f"bioscan5m {args.command}: error: {problem}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group(finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
