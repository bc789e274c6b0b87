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
    p.set_defaults(run=_run_sample)

    p = sub.add_parser("export", help="export a release as Hub-ready Parquet shards with a dataset card")
    p.add_argument("root", help="release root (holds bioscan5m/metadata/...)")
    p.add_argument("out", help="output folder (created atomically)")
    p.add_argument("--configs", default=None, help="comma-separated configs (default: dna + every image package present)")
    p.add_argument("--splits", default="all", help="split expression, e.g. 'train+val' (default all)")
    p.add_argument("--max-shard-mb", type=int, default=500, help="target Parquet shard size in MB")
    p.add_argument("--skip-missing-images", action="store_true", help="skip records without an image and report how many")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the exported folder to this Hub dataset repo")
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
    from .sample import make_sample

    root = make_sample(args.out, num_records=args.records, packages=_csv_list(args.packages), seed=args.seed)
    print(f"synthetic release written to {root}")


def _run_export(args) -> None:
    from .export import export

    out = export(args.root, args.out, configs=_csv_list(args.configs) if args.configs else None, split=args.splits,
                 max_shard_bytes=args.max_shard_mb << 20, skip_missing_images=args.skip_missing_images,
                 push_to_hub=args.push_to_hub)
    print(f"exported to {out}")


def _run_download(args) -> None:
    from .download import download

    for path in download(args.root, package=args.package, split=args.splits):
        print(path)


def _run_info(args) -> None:
    from .summary import summarize_release

    print(summarize_release(args.root))


# ---------------------------------------------------------------------------------------------- DNA models
def _add_dna_commands(sub) -> None:
    """pretrain, finetune, probe, embed, convert-barcodebert (DNA issue)."""


# ---------------------------------------------------------------------------------------------- evaluation
def _add_evaluation_commands(sub) -> None:
    """cluster, retrieve, benchmark (evaluation issue)."""


# ---------------------------------------------------------------------------------------------- multimodal
def _add_clip_commands(sub) -> None:
    """train-clip (multimodal issue)."""


# ---------------------------------------------------------------------------------------------- space
def _add_space_commands(sub) -> None:
    """index build, identify, serve (Space issue)."""


# ---------------------------------------------------------------------------------------------- demo
def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="the main job end to end on the embedded synthetic release")
    p.add_argument("--workdir", default="demo", help="where the sample, export and outputs go")
    p.add_argument("--records", type=int, default=4000)
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.workdir, num_records=args.records)


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        # Input problems get one clear line, not a traceback; BIOSCAN5M_DEBUG=1 shows the traceback.
        import os

        if os.environ.get("BIOSCAN5M_DEBUG"):
            raise
        print(f"bioscan5m {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
