"""Images at the release's full size: first image and memory when streaming from the official archives.

Uses the scale fixture (5.15 M records; cropped_256 as the official archives, pretrain.01/.02 with ~2.34 M members
each), built once with ``python ../shared/tools/make_release_scale.py /tmp/scale --zips``. Each measurement runs
in a fresh process, so "cold" means no cached member index (a fresh cache folder) and "cached" a second process
that finds it; both have the label vocabularies cached, so the figures isolate the archives.

    .venv/bin/python bench/bench_scale.py --root /tmp/scale [--json runs/bench-scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r"""
import json, resource, sys, time
started = time.perf_counter()
import bioscan5m
root, split, images = sys.argv[1], sys.argv[2], int(sys.argv[3])
stream = iter(bioscan5m.load_dataset(root, "cropped_256", split=split, streaming=True))
first = next(stream)["image"]
first_s = time.perf_counter() - started
count, rate_started = 1, time.perf_counter()
for record in stream:
    count += 1
    if count >= images:
        break
rate = (count - 1) / (time.perf_counter() - rate_started)
print(json.dumps({"split": split, "first_image_s": first_s, "first_image_size": list(first.size),
                  "images_per_s_after_the_first": rate, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(root: Path, split: str, hf_home: Path, images: int) -> dict:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", PROBE, str(root), split, str(images)], env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/scale")
    parser.add_argument("--images", type=int, default=2000, help="images streamed after the first, for the rate")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    root = Path(args.root)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        hf_home = Path(scratch) / "hf"
        measure(root, "test", hf_home, 1)  # label vocabularies (one CSV pass) are cached before any timing
        shutil.rmtree(hf_home / "datasets" / "bioscan5m" / "zip-index")
        for split in ("test", "pretrain"):
            results[f"{split} cold"] = measure(root, split, hf_home, args.images)
            results[f"{split} cached"] = measure(root, split, hf_home, args.images)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
