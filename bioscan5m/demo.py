"""The main job on the embedded default (the synthetic release), end to end: ``make demo``."""

from __future__ import annotations

import shutil
from pathlib import Path


def run_demo(workdir: str = "demo", num_records: int = 4000) -> None:
    from .exporting import export
    from .sample import make_sample
    from .summary import summarize_export, summarize_release

    workdir = Path(workdir)
    release_root = workdir / "release"
    if not (release_root / "bioscan5m").is_dir():
        print(f"[1] making a synthetic release of {num_records} records in {release_root}")
        make_sample(release_root, num_records=num_records)
    print(summarize_release(release_root))

    exported = workdir / "bioscan-5m"
    shutil.rmtree(exported, ignore_errors=True)  # the demo's own output from an earlier run
    print(f"\n[2] exporting Hub-native Parquet + dataset card to {exported}")
    export(release_root, exported)

    print(f"\n[3] loading every config and split of {exported} with stock datasets.load_dataset")
    print(summarize_export(exported))
