"""Image batches decoded in parallel, for training and evaluation loops.

``datasets`` decodes an ``Image`` column one record at a time in the iterating thread, with PIL, whose JPEG header
parsing runs in Python and holds the GIL. A loop that feeds a model wants whole batches of pixels instead:

    for batch in bioscan5m.iter_image_batches(dataset, batch_size=256):
        batch["image"]          # list of uint8 arrays, (height, width, 3), RGB
        batch["species_index"]  # every other column as datasets gives it

decodes each batch's JPEGs with libjpeg-turbo through ``simplejpeg``, which releases the GIL for the whole decode,
on a thread pool while the next batch is read. The pixels are identical to PIL's (same libjpeg-turbo, same integer
IDCT and upsampling; checked in the tests). Images that are not plain JPEGs (PNG, CMYK, or carrying an EXIF
orientation) are decoded by PIL exactly as ``datasets.Image`` does.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import datasets
import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from .image_package import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

#: Images per thread-pool task: large enough that task overhead is negligible, small enough to balance threads.
_TASK_IMAGES = 16
#: An EXIF block may rotate the image; those few take PIL's path, which applies it as datasets does.
_EXIF_MARKER = b"Exif\x00\x00"
#: JPEG colour spaces that libjpeg-turbo turns into exactly the RGB pixels PIL gives.
_PLAIN_JPEG_COLOURS = ("YCbCr", "Gray", "RGB")


class ImageDecodeError(ValueError):
    """An image's bytes are not a decodable image; the message names the image."""


def decode_image(image: dict | bytes, max_pixels: int | None = MAX_IMAGE_PIXELS, name: str | None = None) -> np.ndarray:
    """Decode one image (an undecoded ``datasets`` cell ``{"bytes", "path"}``, or raw bytes) to a uint8 RGB array of
    shape ``(height, width, 3)``: the pixels of ``datasets.Image`` decoding followed by ``.convert("RGB")``.

    An image with more than ``max_pixels`` pixels (``None``: no limit) is refused from its header, before decoding;
    ``name`` (a record) is used in error messages."""
    if isinstance(image, dict):
        data, where = image.get("bytes"), image.get("path") or "<bytes>"
        if data is None:
            if image.get("path") is None:
                raise ImageDecodeError("An image cell holds neither bytes nor a path.")
            with open(image["path"], "rb") as handle:
                data = handle.read(MAX_IMAGE_BYTES + 1)
            if len(data) > MAX_IMAGE_BYTES:
                raise ImageDecodeError(f"image {image['path']}: over the {MAX_IMAGE_BYTES:,}-byte limit for one image.")
    else:
        data, where = image, "<bytes>"
    name = f"{name} ({where})" if name else where
    if data[:2] == b"\xff\xd8" and data.find(_EXIF_MARKER, 0, 65536) < 0:
        try:
            height, width, colour, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            pass  # a corrupt header: PIL reports it below, naming the image
        else:
            _check_pixels(name, width, height, max_pixels)
            # CMYK/YCCK JPEGs: simplejpeg would convert them to RGB its own way, not PIL's; they take PIL's path.
            if colour in _PLAIN_JPEG_COLOURS:
                try:
                    return simplejpeg.decode_jpeg(data, colorspace="RGB")
                except ValueError as error:
                    raise ImageDecodeError(f"image {name}: corrupt JPEG data ({len(data)} bytes): {error}") from None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            _check_pixels(name, *opened.size, max_pixels)
            return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"image {name}: too many pixels ({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"image {name}: not a decodable image ({len(data)} bytes): {error}") from None


def _check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(f"image {name}: {width}x{height} pixels ({width * height / 1e6:.0f} MP), over the limit "
                               f"of {max_pixels / 1e6:.0f} MP (max_pixels); refusing to decode it.")


def _decode_chunk(images: list, names: list, max_pixels: int | None) -> list[np.ndarray]:
    return [decode_image(image, max_pixels, name) for image, name in zip(images, names)]


def iter_image_batches(dataset: datasets.Dataset | datasets.IterableDataset, batch_size: int = 256,
                       num_threads: int | None = None, column: str = "image",
                       max_pixels: int | None = MAX_IMAGE_PIXELS) -> Iterator[dict]:
    """Iterate ``dataset`` in batches of ``batch_size`` records with ``column`` decoded to uint8 RGB arrays.

    Args:
        dataset: a ``Dataset`` or ``IterableDataset`` with an ``Image`` column (``bioscan5m.load_dataset`` with an
            image config, or the exported Parquet dataset loaded with ``datasets.load_dataset``).
        num_threads: decoding threads (default: one per CPU).
        column: the image column.
        max_pixels: refuse (`ImageDecodeError`, naming the record) an image with more pixels; ``None``: no limit.

    Yields:
        ``dict`` of column → list, as ``dataset.iter(batch_size)`` gives, with ``column`` a list of
        ``(height, width, 3)`` arrays (``torch.from_numpy(a).permute(2, 0, 1)`` gives a CHW tensor without a copy).
    """
    if column not in (dataset.column_names or []):
        raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}).")
    if batch_size is None or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}.")
    # Undecoded cells: the bytes go to the thread pool instead of PIL in this thread.
    dataset = dataset.cast_column(column, datasets.Image(decode=False))
    with ThreadPoolExecutor(num_threads or os.cpu_count() or 1) as pool:
        pending = None
        for batch in dataset.iter(batch_size=batch_size):
            cells = batch[column]
            names = [f"record {pid!r}" for pid in batch["processid"]] if "processid" in batch else [None] * len(cells)
            tasks = [pool.submit(_decode_chunk, cells[start:start + _TASK_IMAGES], names[start:start + _TASK_IMAGES],
                                 max_pixels) for start in range(0, len(cells), _TASK_IMAGES)]
            # The previous batch is handed out only now, so its decoding overlapped with reading this one.
            if pending is not None:
                yield _finish(*pending, column)
            pending = (batch, tasks)
        if pending is not None:
            yield _finish(*pending, column)


def _finish(batch: dict, tasks: list, column: str) -> dict:
    batch[column] = [image for task in tasks for image in task.result()]
    return batch


__all__ = ["ImageDecodeError", "MAX_IMAGE_PIXELS", "decode_image", "iter_image_batches"]
