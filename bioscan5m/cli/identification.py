"""Identification commands: index build, identify, serve, space export."""

from __future__ import annotations

import itertools
import json
import logging
import os

from ..data.release import IMAGE_PACKAGES
from ..evaluation.retrieval import FAISS_INDEXES
from .arguments import add_overwrite_arg, add_release_root, add_seed_arg, add_split_arg, port, positive_int

logger = logging.getLogger("bioscan5m")


def add_commands(sub) -> None:
    """index build, identify, serve, space export."""
    models = ("'aligned' (barcodes compared base by base, no model: BLAST's accuracy), 'kmer[:K]' (k-mer embedding, "
              "compact), a BarcodeBERT folder or a CLIBD folder")
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
    p.add_argument("--index-type", choices=FAISS_INDEXES, default=None,
                   help="flat (exact), refine (candidates from a projection, scored exactly) or ivf (millions of keys); "
                        "default: refine for 'aligned', flat for the others")
    p.add_argument("--batch-size", type=positive_int, default=128, help="records per forward pass (default 128)")
    add_seed_arg(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_index_build)

    p = sub.add_parser("identify", help="identify specimens from barcodes (text or FASTA) and/or photographs",
                       description="Identify one specimen (a report) or many (a hit table: a FASTA of several "
                                   "records, --images, or --out).")
    p.add_argument("--index", required=True, help="key index folder (from `bioscan5m index build`)")
    p.add_argument("--model", default=None, help="model folder, if it moved since the index was built")
    p.add_argument("--dna", default=None, help="one barcode, as text")
    p.add_argument("--fasta", default=None, help="a FASTA file (.gz too) of any number of barcodes, read as a stream")
    p.add_argument("--image", default=None, help="one specimen photograph (needs a CLIBD index)")
    p.add_argument("--images", default=None,
                   help="photographs: a folder, or a text file listing one path per line (needs a CLIBD index)")
    p.add_argument("--out", default=None, help="write the hit table here (.tsv, .csv or .jsonl); default stdout")
    p.add_argument("--format", choices=("tsv", "csv", "jsonl"), default=None,
                   help="hit table format on stdout (default tsv; with --out, from its suffix)")
    p.add_argument("--batch-size", type=positive_int, default=1024, help="queries searched together (default 1024)")
    p.add_argument("--top", type=positive_int, default=None,
                   help="one specimen: nearest references to list (default 10)")
    p.add_argument("--json", action="store_true", help="one specimen: print the full result as JSON")
    add_overwrite_arg(p)
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
    p.add_argument("--port", type=port, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port to serve on (default $GRADIO_SERVER_PORT, else 7860)")
    p.set_defaults(run=_run_serve)

    space = sub.add_parser("space", help="the identification page as a Hugging Face Space")
    space_sub = space.add_subparsers(dest="space_command", required=True, metavar="ACTION")
    p = space_sub.add_parser("export", help="write a folder that is a working Space: page, index, model, source",
                             description="Write a folder that deploys as a Hugging Face Space as is: README header, "
                                         "app.py, requirements.txt (CPU torch), the bioscan5m source, the key index, "
                                         "its model and the licences.")
    p.add_argument("out", help="the Space folder to write")
    p.add_argument("--index", required=True, help="key index folder (from `bioscan5m index build`)")
    p.add_argument("--model", default=None, help="model folder, if it moved since the index was built")
    p.add_argument("--title", default="BIOSCAN-5M specimen identification", help="the Space's title")
    add_overwrite_arg(p)
    p.set_defaults(run=_run_space_export)


def _run_index_build(args) -> None:
    from ..identification import build_index

    calibration = None if args.calibration.lower() == "none" else args.calibration
    out = build_index(args.data, args.out, model=args.model, splits=args.split, calibration=calibration,
                      image_package=args.image_package, thumbnails=not args.no_thumbnails, index_type=args.index_type,
                      batch_size=args.batch_size, seed=args.seed, overwrite=args.overwrite)

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
    from ..identification import (InputError, check_sequence, format_identification, identify, iter_fasta,
                                  iter_identifications, iter_photos, load_index, table_format, write_identifications)
    from ..staging import check_output

    if args.dna is not None and args.fasta is not None:
        raise InputError("Give the barcodes once: --dna or --fasta, not both.")
    if args.image is not None and args.images is not None:
        raise InputError("Give the photographs once: --image or --images, not both.")
    if args.out is not None and args.format not in (None, table_format(args.out)):  # a bad suffix: before any work
        raise InputError(f"--format {args.format} contradicts the suffix of --out {args.out}.")
    if args.out is not None:
        check_output(args.out, args.overwrite, inputs=(args.fasta, args.images, args.index, args.model))
    records = None
    if args.fasta is not None:
        records = iter_fasta(args.fasta)
        first = list(itertools.islice(records, 2))
        records = itertools.chain(first, records)
        if not first:
            raise InputError(f"{args.fasta}: no FASTA record (no '>' header line) in the file.")
    many = args.images is not None or args.out is not None or args.format is not None or (
        records is not None and len(first) > 1)
    if many and (args.json or args.top is not None):
        raise InputError("--json and --top are for one specimen; several queries (or --out, --format) give the hit "
                         "table, one row per query.")
    index = load_index(args.index, model=args.model)
    if not many:
        dna = args.dna
        if records is not None:
            record = first[0]
            try:
                if record.error:
                    raise InputError(record.error)
                dna = f">{record.id}\n{check_sequence(record.sequence)}"
            except InputError as error:
                name = record.id if record.id.startswith("record ") else f"record {record.id}"
                raise InputError(f"{args.fasta}, {name}: {error}") from None
        result = identify(index, dna=dna, image=args.image, top_k=args.top or 10)
        print(json.dumps(result.to_dict(), indent=2) if args.json else format_identification(result))
        return
    dna = records if records is not None else None if args.dna is None else [args.dna]
    images = iter_photos(args.images) if args.images is not None else None if args.image is None else [args.image]
    batches = iter_identifications(index, dna=dna, images=images, batch_size=args.batch_size,
                                   progress=args.out is not None)
    failed = {"count": 0, "first": None}

    def noting_failures(batches):
        for batch in batches:
            for row in batch:
                if row.get("error"):
                    failed["count"] += 1
                    failed["first"] = failed["first"] or row["error"]
            yield batch

    count = write_identifications(noting_failures(batches), args.out, table=args.format, overwrite=args.overwrite)
    where = "" if args.out is None else f" (the error column of {args.out})"
    if failed["count"] and failed["count"] == count:
        raise InputError(f"none of the {count:,} queries could be identified{where}; the first: {failed['first']}")
    if failed["count"]:
        logger.warning("%s of %s queries could not be identified%s; the first: %s", f"{failed['count']:,}",
                       f"{count:,}", where, failed["first"])
    if args.out is not None:
        logger.info("%s queries identified; hit table written to %s", f"{count - failed['count']:,}", args.out)


def _run_serve(args) -> None:
    import logging
    from pathlib import Path

    from ..apps.space import serve

    logging.basicConfig(level=logging.INFO)
    index = args.index
    if index is None and args.model is not None:
        index = str(Path(args.model) / "index")
    serve(index=index, model=args.model, host=args.host, port=args.port)


def _run_space_export(args) -> None:
    from ..apps.space_export import export_space

    out = export_space(args.out, args.index, model=args.model, title=args.title, overwrite=args.overwrite)
    print(f"Space written to {out}; publish it with: hf upload USER/SPACE {out} . --repo-type space")

