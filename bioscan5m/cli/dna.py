"""DNA model commands: pretrain, finetune, probe, embed, convert-barcodebert."""

from __future__ import annotations


from .arguments import (
    PRESET_NAMES,
    add_align_arg,
    add_overwrite_arg,
    add_reading_frames_arg,
    add_release_root,
    add_run_length_args,
    add_trainer_args,
    csv_list,
    positive_float,
    positive_int,
    print_results,
    trainer_options,
)


def add_commands(sub) -> None:
    """pretrain, finetune, probe, embed, convert-barcodebert."""
    p = sub.add_parser("pretrain", help="masked-LM pretraining of BarcodeBERT on pretrain+other_heldout (unique barcodes)")
    add_release_root(p)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--preset", default="cpu-small", choices=PRESET_NAMES, help="model size and schedule (default cpu-small)")
    p.add_argument("--k", dest="k_mer", type=positive_int, default=None, help="k-mer length (overrides the preset)")
    p.add_argument("--vocabulary", dest="tokenizer_vocabulary", choices=("barcodebert", "standard"), default=None,
                   help="k-mer vocabulary: BarcodeBERT's ids or the standard order (default: the preset's)")
    p.add_argument("--scheme", dest="mlm_scheme", choices=("barcodebert", "standard"), default=None,
                   help="barcodebert: 50%% [MASK], loss on all tokens; standard: BERT 15%% 80/10/10")
    add_align_arg(p)
    add_run_length_args(p)
    add_trainer_args(p)
    p.set_defaults(run=_run_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a BarcodeBERT on train: taxonomic classifiers (accuracy on test) "
                                        "or, with --objective contrastive, an embedding for identification")
    p.add_argument("--model", required=True, help="pretrained model folder")
    add_release_root(p)
    p.add_argument("--out", required=True, help="fine-tuned model folder to write")
    p.add_argument("--objective", choices=("classification", "contrastive"), default="classification",
                   help="classification heads per rank (default), or the supervised contrastive loss on the "
                        "embeddings (then probed: linear probe species@test, 1-NN genus@test_unseen)")
    p.add_argument("--rank", default=None, help="rank(s), comma-separated, coarse to fine (default species; "
                                                "contrastive: genus,species)")
    p.add_argument("--preset", default="cpu-small", choices=PRESET_NAMES,
                   help="supplies epochs, batch size, learning rate (default cpu-small)")
    p.add_argument("--freeze-encoder", action="store_true", help="train the heads only (linear probe)")
    p.add_argument("--head-init", choices=("linear-probe", "random"), default=None,
                   help="start the heads from a linear probe on frozen embeddings (LP-FT, default) or at random")
    p.add_argument("--temperature", type=positive_float, default=None, help="contrastive: loss temperature (preset's)")
    p.add_argument("--group-size", type=positive_int, default=None,
                   help="contrastive: barcodes of one species per group (default 4)")
    p.add_argument("--pooling", choices=("mean", "per_position"), default=None,
                   help="contrastive: pool token states by their mean or per gene position (aligned models; "
                        "default: the pretrained model's)")
    p.add_argument("--per-position-size", type=positive_int, default=None, help="contrastive: values per position (16)")
    p.add_argument("--layers", type=positive_int, default=None,
                   help="contrastive: keep only the first N encoder layers (a faster encoder; default all)")
    add_align_arg(p)
    add_run_length_args(p)
    add_trainer_args(p)
    p.set_defaults(run=_run_finetune)

    p = sub.add_parser("probe", help="linear probe species@test and 1-NN genus@test_unseen of a pretrained model")
    p.add_argument("--model", required=True, help="saved BarcodeBERT folder")
    add_release_root(p)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--batch-size", type=positive_int, default=256, help="barcodes per forward pass (default 256)")
    add_reading_frames_arg(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_probe)

    p = sub.add_parser("embed", help="embed the barcodes of a split into a .npy array (float16 or float32)")
    p.add_argument("--model", required=True, help="saved BarcodeBERT folder")
    add_release_root(p)
    p.add_argument("--split", default="all", help="split expression, e.g. 'train+val' (default all)")
    p.add_argument("--out", required=True, help=".npy file to write; processids go beside it as .txt")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float32", help="array type (default float32)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="barcodes per forward pass (default 256)")
    add_reading_frames_arg(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_embed)

    p = sub.add_parser("convert-barcodebert", help="convert a published BarcodeBERT checkpoint (a file, a Hugging "
                                                   "Face folder or a Hub repo id) into a bioscan5m model folder")
    p.add_argument("checkpoint", help="a .pt/.pth/.bin/.safetensors file, a Hugging Face folder, or a Hub repo id such "
                                      "as bioscan-ml/BarcodeBERT (torch files are read with weights_only=True)")
    p.add_argument("--file", dest="filename", default=None,
                   help="with a Hub repo id (or a folder): the checkpoint file in it, e.g. ckpt/model.pth")
    p.add_argument("--revision", default=None, help="with a Hub repo id: the branch, tag or commit (default main)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--heads", type=positive_int, default=None,
                   help="attention heads, if the checkpoint does not record them")
    add_overwrite_arg(p)
    p.set_defaults(run=_run_convert_barcodebert)




def _run_pretrain(args) -> None:
    from ..training.pretrain import pretrain

    out = pretrain(args.data, args.out, preset=args.preset, k_mer=args.k_mer, mlm_scheme=args.mlm_scheme,
                   tokenizer_vocabulary=args.tokenizer_vocabulary, align_to_reference=args.align_to_reference,
                   epochs=args.epochs, max_steps=args.max_steps,
                   max_barcodes=args.max_barcodes, batch_size=args.batch_size, learning_rate=args.learning_rate,
                   seed=args.seed, overwrite=args.overwrite, **trainer_options(args))
    print_results({"pretrained model written to": out})


def _run_finetune(args) -> None:
    contrastive_only = {"--pooling": args.pooling, "--per-position-size": args.per_position_size,
                        "--layers": args.layers, "--temperature": args.temperature, "--group-size": args.group_size}
    if args.objective == "contrastive":
        if args.freeze_encoder or args.align_to_reference is not None or args.head_init is not None:
            raise ValueError("--freeze-encoder, --head-init and --align-to-reference apply to --objective "
                             "classification only; contrastive fine-tuning has no heads and keeps the pretrained "
                             "tokenizer's frame.")
        from ..training.contrastive import contrastive_finetune

        print_results(contrastive_finetune(
            args.model, args.data, args.out, ranks=tuple(csv_list(args.rank or "genus,species")), preset=args.preset,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            temperature=args.temperature, group_size=args.group_size or 4, pooling=args.pooling,
            per_position_size=args.per_position_size, num_hidden_layers=args.layers, max_steps=args.max_steps,
            max_barcodes=args.max_barcodes, seed=args.seed, overwrite=args.overwrite, **trainer_options(args)))
        return
    given = [option for option, value in contrastive_only.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: for --objective contrastive only.")
    from ..training.finetune import finetune

    results = finetune(args.model, args.data, args.out, ranks=tuple(csv_list(args.rank or "species")),
                       preset=args.preset, epochs=args.epochs, max_steps=args.max_steps, max_barcodes=args.max_barcodes,
                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                       freeze_encoder=args.freeze_encoder, head_init=args.head_init or "linear-probe",
                       align_to_reference=args.align_to_reference, seed=args.seed, overwrite=args.overwrite,
                       **trainer_options(args))
    print_results(results)


def _run_probe(args) -> None:
    from ..evaluation.encoder_probes import probe

    print_results(probe(args.model, args.data, out_path=args.out, batch_size=args.batch_size,
                         reading_frames=args.reading_frames, overwrite=args.overwrite))


def _run_embed(args) -> None:
    import numpy as np

    from ..data.metadata import read_metadata
    from ..staging import check_output, staged_file
    from ..embedding import embed_sequences

    ids = str(args.out).removesuffix(".npy") + ".processid.txt"
    for path in (args.out, ids):
        check_output(path, args.overwrite, inputs=(args.data, args.model))
    frame = read_metadata(args.data, split=args.split)
    # Both files are whole before either is renamed into place, and the two renames follow each other at once.
    with staged_file(ids, args.overwrite) as order:
        order.write_text("\n".join(frame["processid"]) + "\n")
        embed_sequences(args.model, frame["dna_barcode"], batch_size=args.batch_size, dtype=np.dtype(args.dtype),
                        out_path=args.out, reading_frames=args.reading_frames, overwrite=args.overwrite)
    print(f"{len(frame)} embeddings written to {args.out} (row order: {ids})")


def _run_convert_barcodebert(args) -> None:
    from pathlib import Path

    from ..modeling.convert_barcodebert import convert_barcodebert
    from ..staging import check_output, staged_folder

    check_output(args.out, args.overwrite, inputs=(args.checkpoint,))
    with staged_folder(args.out, args.overwrite) as staging:
        convert_barcodebert(args.checkpoint, out_dir=staging, num_attention_heads=args.heads,
                            name=Path(args.out).name, filename=args.filename, revision=args.revision)
    print(f"converted model written to {args.out}")
