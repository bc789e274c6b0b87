"""Dataset commands: sample, export, download, info."""

from __future__ import annotations

from ..data import release
from .arguments import (
    add_overwrite_arg,
    add_release_root,
    add_seed_arg,
    add_split_arg,
    csv_list,
    nucleotides,
    positive_int,
    release_root,
)


def add_commands(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic release in the official layout")
    p.add_argument("out", help="release root to create")
    p.add_argument("--records", type=_sample_records, default=4000,
                   help="number of specimen records (default 4000; at least 200, to fill all eight splits)")
    p.add_argument("--packages", default="cropped_256,original_256",
                   help="image packages to draw, comma-separated (default cropped_256,original_256)")
    add_seed_arg(p)
    add_overwrite_arg(p)
    p.set_defaults(run=_run_sample)

    p = sub.add_parser("export", help="export a release as Hub-ready Parquet shards with a dataset card")
    add_release_root(p, positional=True)
    p.add_argument("out", help="output folder (created atomically)")
    p.add_argument("--configs", default=None, help="comma-separated configs (default: dna + every image package present)")
    add_split_arg(p, "all", "splits to export")
    p.add_argument("--max-shard-mb", type=positive_int, default=500, help="target Parquet shard size in MB")
    p.add_argument("--max-nucleotides", type=nucleotides, default=release.MAX_NUCLEOTIDES,
                   help=f"cut barcodes to this many nucleotides ('none' keeps them whole; default {release.MAX_NUCLEOTIDES})")
    p.add_argument("--skip-missing-images", action="store_true", help="skip records without an image and report how many")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the exported folder to this Hub dataset repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the Hub repo private")
    add_overwrite_arg(p)
    p.set_defaults(run=_run_export)

    p = sub.add_parser("download", help="download the official release files (resumable, checksum-verified)")
    add_release_root(p, positional=True)
    p.add_argument("--package", default=None, choices=release.IMAGE_PACKAGES,
                   help="image package to fetch (default: metadata only)")
    add_split_arg(p, "all", "the splits whose image archives to fetch")
    p.set_defaults(run=_run_download)

    p = sub.add_parser("info", help="print a summary table of every config and split of a release")
    add_release_root(p, positional=True)
    p.set_defaults(run=_run_info)


def _run_sample(args) -> None:
    from ..data.synthetic import make_sample

    root = make_sample(args.out, num_records=args.records, packages=csv_list(args.packages), seed=args.seed,
                       overwrite=args.overwrite)
    print(f"synthetic release written to {root}")


def _sample_records(text: str) -> int:
    import argparse

    from ..data.synthetic import MIN_RECORDS

    value = positive_int(text)
    if value < MIN_RECORDS:
        raise argparse.ArgumentTypeError(f"expected at least {MIN_RECORDS} records (to fill all eight splits), got "
                                         f"{text!r}")
    return value


def _run_export(args) -> None:
    from ..data.export import export

    out = export(release_root(args), args.out, configs=csv_list(args.configs) if args.configs else None, split=args.split,
                 max_shard_bytes=args.max_shard_mb << 20, skip_missing_images=args.skip_missing_images,
                 max_nucleotides=args.max_nucleotides, push_to_hub=args.push_to_hub, private=args.private,
                 overwrite=args.overwrite)
    print(f"exported to {out}")


def _run_download(args) -> None:
    from ..data.download import download

    for path in download(release_root(args), package=args.package, split=args.split):
        print(path)


def _run_info(args) -> None:
    from ..data.summary import summarize_release

    print(summarize_release(release_root(args)))
