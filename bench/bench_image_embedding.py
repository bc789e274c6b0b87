"""Photograph embedding throughput: the package's image path against a plain PIL + timm loop, in one run, on the
real BIOSCAN photographs of ../shared/data.

    .venv/bin/python bench/bench_image_embedding.py --model resnet50 --images 400 --json runs/bench-image-embedding.json

* images: the first ``--images`` 1024x768 specimen photographs of ``bioscan1m-images/specimens`` (real JPEGs);
* model: timm ``--model`` with random weights (the machines here cannot reach the Hub; throughput does not depend
  on the weights), ``num_classes=0``, eval mode, 2 torch threads in both paths;
* ours: `bioscan5m.embedding.embed_image_dataset` over a ``datasets`` Image column — JPEGs decoded by libjpeg-turbo
  on a thread pool while the model embeds the previous batch, resizing on the thread pool too;
* baseline: for each batch, ``PIL.Image.open(path).convert("RGB")`` and the torchvision transform of the zero-shot
  clustering protocol (Resize, CenterCrop, ToTensor, Normalize) one image after another, then the same model;
* both embed the same images; the largest absolute difference between their embeddings is reported (the
  preprocessing is the same, so it should be float noise).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTOGRAPHS = ROOT.parent / "shared" / "data" / "bioscan1m-images" / "specimens"


def plain_loop(model, paths: list[Path], size: int, mean, std, batch_size: int) -> np.ndarray:
    import torch
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]])
            out.append(model(batch).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="timm model name (default resnet50, one of the paper's)")
    parser.add_argument("--images", type=int, default=400, help="photographs to embed (default 400)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if not PHOTOGRAPHS.is_dir():
        sys.exit(f"skipped: the real photographs are not here ({PHOTOGRAPHS} is absent)")

    import datasets
    import timm
    import torch

    from bioscan5m.embedding import TimmImageEncoder, embed_image_dataset

    torch.set_num_threads(2)
    paths = sorted(PHOTOGRAPHS.glob("*.jpg"))[:args.images]
    torch.manual_seed(0)
    weights = Path("/tmp") / f"bench-{args.model}.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in timm.create_model(args.model, num_classes=0).state_dict().items()},
              weights)
    encoder = TimmImageEncoder(args.model, weights, num_threads=2)
    dataset = datasets.Dataset.from_dict({"image": [str(p) for p in paths]}).cast_column("image", datasets.Image())

    embed_image_dataset(encoder, dataset.select(range(min(8, len(paths)))), args.batch_size, progress=False)  # warm-up
    start = time.perf_counter()
    ours = embed_image_dataset(encoder, dataset, args.batch_size, num_threads=2, progress=True)
    ours_seconds = time.perf_counter() - start

    mean, std = tuple(encoder.mean.ravel()), tuple(encoder.std.ravel())
    start = time.perf_counter()
    baseline = plain_loop(encoder.model, paths, encoder.image_size, mean, std, args.batch_size)
    baseline_seconds = time.perf_counter() - start

    figures = {"model": args.model, "images": len(paths), "image_size": "1024x768 JPEG",
               "input_size": encoder.image_size, "batch_size": args.batch_size, "torch_threads": 2,
               "ours_images_per_second": len(paths) / ours_seconds,
               "plain_loop_images_per_second": len(paths) / baseline_seconds,
               "speedup": baseline_seconds / ours_seconds,
               "max_abs_difference": float(np.abs(ours - baseline).max())}
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
