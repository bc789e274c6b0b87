"""Multimodal commands: train-clip (its retrieval runs through `retrieve`) and convert-clibd."""

from __future__ import annotations

from ..data.release import IMAGE_PACKAGES
from .arguments import (
    PRESET_NAMES,
    add_overwrite_arg,
    add_release_root,
    add_seed_arg,
    add_trainer_args,
    csv_list,
    non_negative_int,
    positive_float,
    positive_int,
    print_results,
    trainer_options,
)


def add_commands(sub) -> None:
    """train-clip (its retrieval runs through `retrieve`) and convert-clibd."""
    p = sub.add_parser("train-clip", help="contrastive image-DNA-taxonomy training of CLIBD on pretrain+train records")
    add_release_root(p, needs="with images")
    p.add_argument("--config", default="cropped_256", choices=IMAGE_PACKAGES, help="image package (default cropped_256)")
    p.add_argument("--dna-model", default=None, help="pretrained BarcodeBERT folder for the DNA encoder (default: new)")
    p.add_argument("--out", required=True, help="model folder to write (the untrained model goes to OUT/no_alignment)")
    p.add_argument("--preset", default="cpu-small", choices=PRESET_NAMES, help="model size and schedule (default cpu-small)")
    p.add_argument("--split", default="pretrain+train", help="training records (default pretrain+train, as CLIBD)")
    p.add_argument("--modalities", default="image,dna,text", help="modalities to align (default image,dna,text)")
    p.add_argument("--metadata", default="", help="metadata fused into the image embedding: geo, size or geo,size")
    p.add_argument("--freeze", action="append", default=[], metavar="ENCODER[:N]",
                   help="freeze image, dna or text (repeatable); ENCODER:N keeps its last N blocks trainable")
    p.add_argument("--image-weights", default=None, help="'timm' (pretrained timm weights, needs the Hub) or a .safetensors file")
    p.add_argument("--no-augment", action="store_true", help="train on the evaluation transform (no CLIBD augmentation)")
    p.add_argument("--max-records", type=positive_int, default=None, help="random subset of this many training records")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--epochs", type=positive_float, default=None, help="override the preset's epochs")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=positive_int, default=None, help="per-process batch size")
    p.add_argument("--lr", dest="learning_rate", type=positive_float, default=None,
                   help="override the preset's learning rate")
    add_seed_arg(p)
    add_overwrite_arg(p)
    add_trainer_args(p)
    p.set_defaults(run=_run_train_clip)

    p = sub.add_parser("convert-clibd", help="convert a published CLIBD checkpoint (a file, or a file of the Hub repo "
                                             "bioscan-ml/clibd) into a model folder with its processor")
    p.add_argument("checkpoint", nargs="?", default="bioscan-ml/clibd",
                   help="a .pth/.pt/.safetensors file or a Hub repo id (default bioscan-ml/clibd; torch files are read "
                        "with weights_only=True)")
    p.add_argument("--file", dest="filename", default=None,
                   help="with a Hub repo id: the checkpoint in it (default the BIOSCAN-5M image+DNA+text model, "
                        "ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth)")
    p.add_argument("--revision", default=None, help="with a Hub repo id: the branch, tag or commit (default main)")
    p.add_argument("--text-tokenizer", default="prajjwal1/bert-small",
                   help="tokenizer folder or Hub id of the text tower (default prajjwal1/bert-small, CLIBD's)")
    p.add_argument("--out", required=True, help="model folder to write")
    add_overwrite_arg(p)
    p.set_defaults(run=_run_convert_clibd)


def _run_train_clip(args) -> None:
    from ..training.train_clibd import train_clibd

    freeze = {}
    for spec in args.freeze:
        encoder, _, layers = spec.partition(":")
        if layers and not layers.lstrip("-").isdigit():
            raise ValueError(f"--freeze {spec}: expected ENCODER or ENCODER:N, N the number of blocks left trainable.")
        freeze[encoder] = int(layers) if layers else 0
    summary = train_clibd(args.data, args.out, config=args.config, dna_model=args.dna_model, preset=args.preset,
                          split=args.split, modalities=csv_list(args.modalities),
                          metadata_features=csv_list(args.metadata), freeze=freeze, epochs=args.epochs,
                          max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                          max_records=args.max_records, augment=not args.no_augment, image_weights=args.image_weights,
                          num_workers=args.num_workers, seed=args.seed, overwrite=args.overwrite,
                          **trainer_options(args))
    print_results({"steps": summary["steps"], "train_loss": summary["train_loss"],
                    "seconds_per_step": summary["seconds_per_step"], "written_to": args.out})


def _run_convert_clibd(args) -> None:
    from pathlib import Path

    from ..modeling.convert_clibd import convert_clibd
    from ..staging import check_output, staged_folder

    check_output(args.out, args.overwrite, inputs=(args.checkpoint, args.text_tokenizer))
    with staged_folder(args.out, args.overwrite) as staging:
        model = convert_clibd(args.checkpoint, out_dir=staging, filename=args.filename, revision=args.revision,
                              text_tokenizer=args.text_tokenizer, name=Path(args.out).name)
    print(f"converted CLIBD ({', '.join(model.config.modalities)}) written to {args.out}")
