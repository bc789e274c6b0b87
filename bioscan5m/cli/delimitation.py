"""Species delimitation: delimit."""

from __future__ import annotations

from .arguments import add_overwrite_arg, add_release_root, positive_int, print_results


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a p-distance such as 0.02, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a p-distance between 0 and 1 (0.02 is 2 %), got {text!r}")
    return value


def add_commands(sub) -> None:
    """delimit."""
    p = sub.add_parser("delimit", help="group barcodes into putative species without their labels (learned "
                                       "linkage fitted on other, labelled splits, or a p-distance cut)")
    add_release_root(p)
    p.add_argument("--split", default="test+test_unseen", help="records to delimit (default test+test_unseen)")
    # The package's METHODS, DENSE_LIMIT and MIN_OVERLAP, written out so that --help imports no numpy (a test
    # checks that they agree).
    p.add_argument("--method", choices=("learned", "single", "upgma"), default="learned",
                   help="learned: single linkage whose merges a model fitted on --calibrate-on accepts (sparse, "
                        "past the dense limit; default); single: components of the threshold graph (likewise); "
                        "upgma: average linkage (dense, up to 30,000 barcodes)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--threshold", type=_fraction, default=None,
                       help="p-distance cut for single or upgma, e.g. 0.02 for 2 %%")
    group.add_argument("--calibrate-on", default=None, metavar="SPLITS",
                       help="labelled splits (must not overlap --split) to fit the learned merge model on (e.g. "
                            "val+val_unseen+train), or to choose the threshold of single or upgma on")
    p.add_argument("--min-overlap", type=positive_int, default=100,
                   help="positions two barcodes must share for their distance to count (default 100)")
    p.add_argument("--out", required=True, help="folder for clusters.tsv, species.tsv, summary.json, barcode_gap.png")
    add_overwrite_arg(p)
    p.set_defaults(run=_run_delimit)


def _run_delimit(args) -> None:
    from ..delimitation import delimit

    summary = delimit(args.data, args.out, split=args.split, method=args.method, threshold=args.threshold,
                      calibrate_on=args.calibrate_on, min_overlap=args.min_overlap, overwrite=args.overwrite)
    species, model = summary.get("species", {}), summary.get("merge_model")
    results = {"records": summary["records"], "putative species": summary["clusters"],
               "named species": species.get("named"),
               "threshold (%)": None if summary["threshold"] is None else 100 * summary["threshold"],
               "merge model": None if model is None else f"fitted on {model['merges']:,} merges of "
                                                        f"{model['records']:,} labelled barcodes",
               "species AMI": species.get("ami"), "genus AMI": summary.get("genus", {}).get("ami"),
               "species split": len(summary["species_split"]) if "species_split" in summary else None,
               "clusters merging species": (len(summary["clusters_merging_species"])
                                            if "clusters_merging_species" in summary else None),
               "species AMI of the BINs (records without one alone)": summary.get("bins", {}).get("species_ami"),
               "written to": args.out}
    print_results({name: value for name, value in results.items() if value is not None})
