"""The demo command: the main job end to end on the embedded synthetic release."""

from __future__ import annotations

from .arguments import positive_int



def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="the main job end to end on the embedded synthetic release")
    p.add_argument("--workdir", default="demo", help="where the sample, export and outputs go")
    p.add_argument("--records", type=positive_int, default=4000, help="records of the synthetic release (default 4000)")
    p.add_argument("--dataset-only", action="store_true", help="stop after the dataset steps (no model training)")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> None:
    from ..apps.demo import run_demo

    run_demo(args.workdir, num_records=args.records, models=not args.dataset_only)
