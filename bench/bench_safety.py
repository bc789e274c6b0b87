"""What the safety checks cost, each against the same work without them, in one run.

  * image reads from an extracted package folder: ``ImagePackage.read`` (path checked to stay inside the folder,
    links refused, size capped) vs the read it replaced (``open().read()`` and the JPEG completeness check);
  * metadata checks on the real CSV (``processid``/``chunk`` as plain names, split names, barcodes as nucleotide
    codes, value ranges) vs reading and typing the same batches without them;
  * the model hash an index checks at load (``model_fingerprint``), in MB/s.

    .venv/bin/python bench/bench_safety.py [--sample-records 4000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import bioscan5m
from bioscan5m.data import metadata, release
from bioscan5m.data.image_package import ImagePackage, is_complete_jpeg

BOLD = Path(__file__).resolve().parents[2] / "shared" / "data" / "bold-insects"


def image_reads(root: Path, repeats: int) -> dict:
    store = ImagePackage(root, "cropped_256")
    relpaths = sorted(store.relpaths())
    folder = release.image_package_dir(root, "cropped_256")

    def plain():
        for relpath in relpaths:
            with open(f"{folder}/{relpath}", "rb") as handle:
                is_complete_jpeg(handle.read())

    def checked():
        for relpath in relpaths:
            store.read(relpath)

    plain(), checked()  # warm the page cache for both
    plain_s = statistics.median(_timed(plain) for _ in range(repeats))
    checked_s = statistics.median(_timed(checked) for _ in range(repeats))
    return {"images": len(relpaths), "plain_images_per_s": len(relpaths) / plain_s,
            "checked_images_per_s": len(relpaths) / checked_s, "checked_over_plain_time": checked_s / plain_s}


def metadata_checks(repeats: int) -> dict:
    source = metadata.find_metadata(BOLD)
    batches = list(metadata.iter_batches(source))
    records = sum(batch.num_rows for _, batch in batches)

    def read():
        for _ in metadata.iter_batches(source):
            pass

    def checks():
        for first_row, batch in batches:
            metadata.check_records(source, first_row, batch)

    def ranges():
        for first_row, batch in batches:
            for name in metadata.FLOAT_RANGES:
                values = metadata.pc.cast(metadata.pc.if_else(metadata.pc.equal(batch.column(name), ""), None,
                                                              batch.column(name)), metadata.pa.float64())
                metadata._check_range(source, first_row, batch, name, values)

    checks(), ranges()  # compute kernels initialise on first use (a one-time ~0.2 s), outside the timings
    per_million = 1e6 / records
    read_s, checks_s, ranges_s = (statistics.median(_timed(f) for _ in range(repeats)) for f in (read, checks, ranges))
    return {"records": records, "csv_read_s_per_million": read_s * per_million,
            "name_and_split_checks_s_per_million": checks_s * per_million,
            "range_checks_s_per_million": ranges_s * per_million,
            "checks_over_csv_read_time": (checks_s + ranges_s) / read_s}


def model_hash(folder: Path, repeats: int) -> dict:
    from bioscan5m.identification import model_fingerprint

    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    seconds = statistics.median(_timed(lambda: model_fingerprint(folder)) for _ in range(repeats))
    return {"model_mb": size / 1e6, "hash_seconds": seconds, "hash_mb_per_s": size / 1e6 / seconds}


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-records", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None, help="a model folder to hash (default: a 100 MB stand-in)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = bioscan5m.make_sample(Path(scratch) / "sample", num_records=args.sample_records,
                                     packages=["cropped_256"], zips=False)
        results = {"image_reads": image_reads(root, args.repeats)}
        model = Path(args.model) if args.model else Path(scratch) / "model"
        if args.model is None:
            model.mkdir()
            (model / "config.json").write_text("{}")
            (model / "model.safetensors").write_bytes(bytes(100 << 20))
        results["model_hash"] = model_hash(model, args.repeats)
    if BOLD.is_dir():
        results["metadata_checks"] = metadata_checks(args.repeats)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
