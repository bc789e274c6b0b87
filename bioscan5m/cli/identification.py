"""Identification commands: index build, identify, serve."""

from __future__ import annotations

import os

from ..data.release import IMAGE_PACKAGES


from .arguments import add_overwrite_arg, add_release_root, add_seed_arg, add_split_arg, positive_int


def add_commands(sub) -> None:
    """index build, identify, serve."""
    models = "'kmer[:K]' (k-mer embedding, no training), a BarcodeBERT folder or a CLIBD folder"
    index = sub.add_parser("index", help="key indexes of reference specimens for identification")
    index_sub = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    p = index_sub.add_parser("build", help="embed the records of some splits into a FAISS key index, with calibration")
    add_release_root(p)
    p.add_argument("--model", default="kmer", help=f"embedding model: {models} (default kmer)")
    p.add_argument("--out", default=None, help="index folder (default MODEL/index, beside the model)")
    add_split_arg(p, "train+key_unseen", "the key records")
    p.add_argument("--calibration", default="val+val_unseen+other_heldout",
                   help="splits that calibrate confidences and the novelty threshold ('none' to skip)")
    p.add_argument("--image-package", default="cropped_256", choices=IMAGE_PACKAGES, help="photographs for thumbnails / CLIBD image keys")
    p.add_argument("--no-thumbnails", action="store_true", help="do not store key photographs")
    p.add_argument("--index-type", choices=("flat", "ivf"), default="flat", help="exact flat, or IVF for millions of keys")
    p.add_argument("--batch-size", type=positive_int, default=128, help="records per forward pass (default 128)")
    add_seed_arg(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_index_build)

    p = sub.add_parser("identify", help="identify one specimen from a barcode (text or FASTA) and/or a photograph")
    p.add_argument("--index", required=True, help="key index folder (from `bioscan5m index build`)")
    p.add_argument("--model", default=None, help="model folder, if it moved since the index was built")
    p.add_argument("--dna", default=None, help="the barcode, as text")
    p.add_argument("--fasta", default=None, help="a FASTA file holding one barcode")
    p.add_argument("--image", default=None, help="a specimen photograph (needs a CLIBD index)")
    p.add_argument("--top", type=positive_int, default=10, help="nearest reference specimens to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(run=_run_identify)

    about = "the identification web page (Gradio), on 127.0.0.1 unless --host says otherwise"
    p = sub.add_parser("serve", help=about, description=f"Serve {about}.")
    # Environment defaults, so the same command line serves a Hugging Face Space (which sets GRADIO_SERVER_NAME).
    p.add_argument("--index", default=os.environ.get("BIOSCAN5M_INDEX"),
                   help="key index folder (default $BIOSCAN5M_INDEX, else MODEL/index, else the synthetic demo)")
    p.add_argument("--model", default=os.environ.get("BIOSCAN5M_MODEL"),
                   help="model folder, if it moved since the index was built (default $BIOSCAN5M_MODEL)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (default $GRADIO_SERVER_NAME, else 127.0.0.1; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port to serve on (default $GRADIO_SERVER_PORT, else 7860)")
    p.set_defaults(run=_run_serve)


def _run_index_build(args) -> None:
    from ..identification import build_index

    calibration = None if args.calibration.lower() == "none" else args.calibration
    out = build_index(args.data, args.out, model=args.model, splits=args.split, calibration=calibration,
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
    from ..identification import format_identification, identify, load_index, read_fasta_file

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
    import logging
    from pathlib import Path

    from ..apps.space import serve

    logging.basicConfig(level=logging.INFO)
    index = args.index
    if index is None and args.model is not None:
        index = str(Path(args.model) / "index")
    serve(index=index, model=args.model, host=args.host, port=args.port)
