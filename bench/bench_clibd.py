"""CLIBD benchmarks on the synthetic paired sample (the only paired image+DNA data on these machines).

1. Image preprocessing throughput: ``ClibdImageProcessor`` (batched, torch) vs a plain PIL loop doing the same
   resize 256 → centre crop 224 → normalise, on the sample's cropped_256 images (images/s, ratio; outputs checked
   to agree).
2. Training step time and peak memory of each preset: a CLIBD step (image + DNA + text, forward + backward +
   AdamW) vs an image-tower-only step on the same batch, measured in the same process.
3. Retrieval (CLIBD protocol: keys train+key_unseen, queries test = seen / test_unseen = unseen) of a CLIBD model
   trained by ``train_clibd`` vs its no-alignment baseline (the same weights before contrastive training).
4. Ablation: the same training with ``geo``, ``size`` and ``geo+size`` fused into the image embedding.

The synthetic sample is ``bioscan5m.make_sample``'s (cropped_256 folders; specimen size is measured while
drawing). Everything is synthetic: no figure here says anything about real insects.

    .venv/bin/python bench/bench_clibd.py --records 4000 --out runs/bench-clibd
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_sized_sample(out: Path, num_records: int, seed: int = 0) -> Path:
    """The synthetic release (made once per ``out``)."""
    from bioscan5m import make_sample

    if not (out / "bioscan5m").is_dir():
        make_sample(out, num_records=num_records, packages=("cropped_256",), seed=seed, zips=False)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- 1. preprocessing
def bench_preprocessing(root: Path, cache_dir: Path, n_images: int, batch_size: int = 64) -> dict:
    from PIL import Image

    from bioscan5m.modeling.image_processing_clibd import ClibdImageProcessor
    from bioscan5m.data.release import RGB_MEAN, RGB_STD
    from bioscan5m.training.train_clibd import load_records

    records = load_records(root, "train", cache_dir=cache_dir)
    images = [records[i]["image"] for i in range(min(n_images, len(records)))]
    for image in images:
        image.load()
    processor = ClibdImageProcessor()
    mean, std = np.asarray(RGB_MEAN, np.float32), np.asarray(RGB_STD, np.float32)

    def pil_loop(batch):
        out = []
        for image in batch:
            width, height = image.size
            scale = 256 / min(width, height)
            resized = image.convert("RGB").resize((max(256, round(width * scale)), max(256, round(height * scale))),
                                                  Image.BILINEAR)
            left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
            array = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
            out.append(((array - mean) / std).transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out))

    def ours(batch):
        return processor(batch, return_tensors="pt")["pixel_values"]

    results = {}
    for name, fn in (("pil_loop", pil_loop), ("clibd_image_processor", ours)):
        fn(images[:batch_size])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            fn(images[start:start + batch_size])
        results[name] = len(images) / (time.perf_counter() - started)
    difference = (pil_loop(images[:16]) - ours(images[:16])).abs()
    return {"images": len(images), "batch_size": batch_size, "images_per_s": results,
            "ratio_processor_vs_pil": results["clibd_image_processor"] / results["pil_loop"],
            "max_abs_difference": float(difference.max()), "mean_abs_difference": float(difference.mean())}


# ---------------------------------------------------------------------------------------------- 2. step time
def bench_steps(root: Path, cache_dir: Path, preset: str, steps: int, dna_model=None) -> dict:
    from bioscan5m.modeling.image_processing_clibd import train_transform
    from bioscan5m.tokenization.tokenization_taxonomy import build_taxonomy_tokenizer, taxonomy_string
    from bioscan5m.modeling.processing_clibd import ClibdProcessor
    from bioscan5m.training.train_clibd import ClibdCollator, build_model, get_clibd_preset, load_records

    settings = get_clibd_preset(preset)
    records = load_records(root, "train", cache_dir=cache_dir)
    text_tokenizer = build_taxonomy_tokenizer([taxonomy_string(r) for r in records.select_columns(
        ["order", "family", "genus", "species"])])
    rss_before = peak_rss_mb()
    model, dna_tokenizer = build_model(settings, text_tokenizer, dna_model=dna_model)
    processor = ClibdProcessor(settings.image_processor(), text_tokenizer, dna_tokenizer)
    collator = ClibdCollator(processor, image_transform=train_transform(processor.image_processor))
    batches = [collator([records[(i * settings.batch_size + j) % len(records)] for j in range(settings.batch_size)])
               for i in range(steps + 1)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run(step_fn) -> float:
        step_fn(batches[0])  # warm-up
        started = time.perf_counter()
        for batch in batches[1:]:
            step_fn(batch)
        return (time.perf_counter() - started) / steps

    def clibd_step(batch):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def image_only_step(batch):
        model.get_image_features(batch["pixel_values"]).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    clibd = run(clibd_step)
    rss_clibd = peak_rss_mb()
    image_only = run(image_only_step)
    collate_started = time.perf_counter()
    collator([records[j] for j in range(settings.batch_size)])
    return {"preset": preset, "batch_size": settings.batch_size, "steps": steps,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "seconds_per_step": clibd, "image_only_seconds_per_step": image_only,
            "ratio_clibd_vs_image_only": clibd / image_only,
            "collate_seconds_per_batch": time.perf_counter() - collate_started,
            "peak_rss_mb_before_model": rss_before, "peak_rss_mb_after_training_steps": rss_clibd,
            "training_memory_mb": rss_clibd - rss_before}


# ---------------------------------------------------------------------------------------------- 3-4. retrieval
def bench_retrieval(root: Path, cache_dir: Path, out: Path, preset: str, epochs: float, variants, dna_model=None,
                    seed: int = 0) -> dict:
    from bioscan5m.evaluation.clibd_retrieval import (load_retrieval_sets, markdown_table, plot_retrieval,
                                                      retrieval_for_model)
    from bioscan5m.modeling import ClibdModel
    from bioscan5m.training.train_clibd import train_clibd

    sets = load_retrieval_sets(root, cache_dir=cache_dir)
    results, training = {}, {}
    for variant in variants:
        features = [] if variant == "none" else variant.split("+")
        folder = out / f"clibd-{preset}-{variant}"
        summary = train_clibd(root, folder, preset=preset, epochs=epochs, metadata_features=features,
                              dna_model=dna_model, cache_dir=cache_dir, seed=seed, save_no_alignment=variant == "none",
                              overwrite=True, disable_tqdm=True)
        training[variant] = {k: summary[k] for k in ("steps", "train_loss", "seconds", "seconds_per_step", "records")}
        model = ClibdModel.from_pretrained(folder)
        results[f"aligned ({variant})" if variant != "none" else "aligned"] = retrieval_for_model(model, sets)
        if variant == "none":
            results["no_alignment"] = retrieval_for_model(ClibdModel.from_pretrained(folder / "no_alignment"), sets)
    report = {"keys": "train+key_unseen", "queries": {"seen": "test", "unseen": "test_unseen"},
              "records": {name: len(records) for name, records in sets.items()}, "results": results,
              "training": training, "preset": preset, "epochs": epochs}
    (out / "retrieval.md").write_text(markdown_table(report))
    main = dict(report, results={k: results[k] for k in ("aligned", "no_alignment") if k in results})
    report["plot"] = str(plot_retrieval(main, out / "retrieval_aligned_vs_no_alignment.png"))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=4000, help="records of the synthetic sample")
    parser.add_argument("--out", default="runs/bench-clibd")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared)")
    parser.add_argument("--images", type=int, default=512, help="images for the preprocessing benchmark")
    parser.add_argument("--step-presets", default="tiny,cpu-small")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--retrieval-preset", default="tiny")
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--variants", default="none,geo,size,geo+size", help="metadata variants ('none' first)")
    parser.add_argument("--dna-model", default=None, help="pretrained BarcodeBERT to start from (must fit the preset)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: preprocessing, steps, retrieval")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = make_sized_sample(out / "sample", args.records)
    cache_dir = out / "cache"
    skip = set(args.skip.split(","))
    results = {"records": args.records, "threads": args.threads, "machine": f"{os.cpu_count()} cores"}
    if "preprocessing" not in skip:
        results["preprocessing"] = bench_preprocessing(root, cache_dir, args.images)
        print(json.dumps(results["preprocessing"], indent=1))
    if "steps" not in skip:
        results["steps"] = [bench_steps(root, cache_dir, p, args.steps, args.dna_model if p == "cpu-small" else None)
                            for p in args.step_presets.split(",")]
        print(json.dumps(results["steps"], indent=1))
    if "retrieval" not in skip:
        report = bench_retrieval(root, cache_dir, out, args.retrieval_preset, args.epochs, args.variants.split(","),
                                 dna_model=args.dna_model)
        results["retrieval"] = report
        print((out / "retrieval.md").read_text())
        print(json.dumps(report["training"], indent=1))
    (out / "bench_clibd.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"written to {out}/bench_clibd.json")


if __name__ == "__main__":
    main()
