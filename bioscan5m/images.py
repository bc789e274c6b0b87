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

#: Images per thread-pool task: large enough that task overhead is negligible, small enough to balance threads.
_TASK_IMAGES = 16
#: An EXIF block may rotate the image; those few take PIL's path, which applies it as datasets does.
_EXIF_MARKER = b"Exif\x00\x00"
#: JPEG colour spaces that libjpeg-turbo turns into exactly the RGB pixels PIL gives.
_PLAIN_JPEG_COLOURS = ("YCbCr", "Gray", "RGB")


class ImageDecodeError(ValueError):
    """An image's bytes are not a decodable image; the message names the image."""


def decode_image(image: dict | bytes) -> np.ndarray:
    """Decode one image (an undecoded ``datasets`` cell ``{"bytes", "path"}``, or raw bytes) to a uint8 RGB array of
    shape ``(height, width, 3)``: the pixels of ``datasets.Image`` decoding followed by ``.convert("RGB")``."""
    if isinstance(image, dict):
        data, name = image.get("bytes"), image.get("path") or "<bytes>"
        if data is None:
            if image.get("path") is None:
                raise ImageDecodeError("An image cell holds neither bytes nor a path.")
            with open(image["path"], "rb") as handle:
                data = handle.read()
    else:
        data, name = image, "<bytes>"
    if data[:2] == b"\xff\xd8" and data.find(_EXIF_MARKER, 0, 65536) < 0:
        try:
            # CMYK/YCCK JPEGs: simplejpeg would convert them to RGB its own way, not PIL's; they take PIL's path.
            if simplejpeg.decode_jpeg_header(data)[2] in _PLAIN_JPEG_COLOURS:
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # a corrupt header: PIL reports it below, naming the image
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"image {name}: not a decodable image ({len(data)} bytes): {error}") from None


def _decode_chunk(images: list) -> list[np.ndarray]:
    return [decode_image(image) for image in images]


def iter_image_batches(dataset: datasets.Dataset | datasets.IterableDataset, batch_size: int = 256,
                       num_threads: int | None = None, column: str = "image") -> Iterator[dict]:
    """Iterate ``dataset`` in batches of ``batch_size`` records with ``column`` decoded to uint8 RGB arrays.

    Args:
        dataset: a ``Dataset`` or ``IterableDataset`` with an ``Image`` column (``bioscan5m.load_dataset`` with an
            image config, or the exported Parquet dataset loaded with ``datasets.load_dataset``).
        num_threads: decoding threads (default: one per CPU).
        column: the image column.

    Yields:
        ``dict`` of column → list, as ``dataset.iter(batch_size)`` gives, with ``column`` a list of
        ``(height, width, 3)`` arrays (``torch.from_numpy(a).permute(2, 0, 1)`` gives a CHW tensor without a copy).
    """
    if column not in (dataset.column_names or []):
        raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}).")
    # Undecoded cells: the bytes go to the thread pool instead of PIL in this thread.
    dataset = dataset.cast_column(column, datasets.Image(decode=False))
    with ThreadPoolExecutor(num_threads or os.cpu_count() or 1) as pool:
        pending = None
        for batch in dataset.iter(batch_size=batch_size):
            cells = batch[column]
            tasks = [pool.submit(_decode_chunk, cells[start:start + _TASK_IMAGES])
                     for start in range(0, len(cells), _TASK_IMAGES)]
            # The previous batch is handed out only now, so its decoding overlapped with reading this one.
            if pending is not None:
                yield _finish(*pending, column)
            pending = (batch, tasks)
        if pending is not None:
            yield _finish(*pending, column)


def _finish(batch: dict, tasks: list, column: str) -> dict:
    batch[column] = [image for task in tasks for image in task.result()]
    return batch


__all__ = ["ImageDecodeError", "decode_image", "iter_image_batches"]
