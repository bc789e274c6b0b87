"""CLIBD image processing: the evaluation pipeline as a ``transformers`` image processor, and the training augmentation.

Evaluation (``ClibdImageProcessor``, CLIBD's eval transform plus normalisation): resize the shorter side to 256,
centre-crop 224x224, scale to [0, 1], normalise with the BIOSCAN-5M ``cropped_256`` channel mean and std.
Batched on torch tensors (transformers' torchvision backend).

Training (:func:`train_transform`, CLIBD's train transform): resize 256, ``RandomResizedCrop(224)``, horizontal and
vertical flips, ``RandomRotation(45)``, then the same scaling and normalisation.

This module imports nothing from ``bioscan5m``: it is copied next to saved models and must run on its own.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling

#: BIOSCAN-5M cropped_256 per-channel mean and std (the same numbers as ``bioscan5m.data.release.RGB_MEAN/RGB_STD``).
BIOSCAN_RGB_MEAN = (0.76281859, 0.76503749, 0.76373138)
BIOSCAN_RGB_STD = (0.14205404, 0.15642502, 0.17309470)
#: Images smaller than this on either side are refused: they hold no specimen to see.
MIN_IMAGE_SIDE = 8


class ClibdImageProcessor(TorchvisionBackend):
    r"""Resize (shorter side 256) → centre crop 224 → rescale → normalise with BIOSCAN's constants.

    Accepts PIL images, ``(H, W, C)``/``(C, H, W)`` uint8 arrays or tensors, one or a list. Greyscale, palette and
    RGBA images are converted to RGB (as a serious pipeline must, BIOSCAN photographs being RGB); anything that is
    not an image, or is smaller than 8 pixels on a side, raises ``ValueError``.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = BIOSCAN_RGB_MEAN
    image_std = BIOSCAN_RGB_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def process_image(self, image, *args, **kwargs) -> torch.Tensor:
        _check_image(image)
        return super().process_image(image, *args, **kwargs)

    def preprocess(self, images, *args, **kwargs):
        if images is None or (isinstance(images, (list, tuple)) and len(images) == 0):
            raise ValueError("No images given: pass a PIL image, an array or tensor, or a non-empty list of them.")
        return super().preprocess(images, *args, **kwargs)


def _check_image(image) -> None:
    from PIL import Image

    if isinstance(image, Image.Image):
        width, height = image.size
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr"):
            raise ValueError(f"Unsupported PIL image mode {image.mode!r}; convert the image to RGB first.")
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        shape = tuple(image.shape)
        if len(shape) == 2:
            height, width = shape
        elif len(shape) == 3 and shape[-1] in (1, 3, 4):
            height, width = shape[:2]
        elif len(shape) == 3 and shape[0] in (1, 3, 4):
            height, width = shape[1:]
        else:
            raise ValueError(f"An image array must be (H, W), (H, W, C) or (C, H, W) with 1, 3 or 4 channels; got "
                             f"shape {shape}.")
        if image.dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"Image arrays must hold uint8 pixels (0-255), not {image.dtype}; pass PIL images or "
                             "uint8 arrays (the processor rescales and normalises itself).")
    else:
        raise ValueError(f"Expected a PIL image, numpy array or torch tensor, got {type(image).__name__}.")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"Image of {width}x{height} pixels is too small (at least {MIN_IMAGE_SIDE} pixels a side).")


def train_transform(image_processor: ClibdImageProcessor | None = None, augment: bool = True):
    """CLIBD's training transform on one PIL image → normalised ``(3, crop, crop)`` float tensor.

    Sizes and normalisation follow ``image_processor`` (default: the standard 256 → 224 pipeline). With
    ``augment=False`` it is the evaluation pipeline (resize, centre crop) on a single image.
    """
    from torchvision.transforms import v2

    processor = image_processor or ClibdImageProcessor()
    resize = processor.size["shortest_edge"] if "shortest_edge" in processor.size else (
        processor.size["height"], processor.size["width"])
    crop = (processor.crop_size["height"], processor.crop_size["width"])
    steps = [v2.ToImage(), v2.Resize(resize, antialias=True)]
    if augment:
        steps += [v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                  v2.RandomRotation(45)]
    else:
        steps += [v2.CenterCrop(crop)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(processor.image_mean), list(processor.image_std))]
    pipeline = v2.Compose(steps)

    def transform(image) -> torch.Tensor:
        _check_image(image)
        return pipeline(image.convert("RGB") if hasattr(image, "convert") else image)

    return transform


__all__ = ["ClibdImageProcessor", "train_transform", "BIOSCAN_RGB_MEAN", "BIOSCAN_RGB_STD"]

# save_pretrained copies this file next to preprocessor_config.json and records it in auto_map.
ClibdImageProcessor.register_for_auto_class("AutoImageProcessor")
