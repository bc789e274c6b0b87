"""What a user hands in: a barcode (pasted or a FASTA file) and a photograph, checked before any model
sees them; every refusal is an `InputError` that says what is wrong and where."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from PIL import Image


# Input limits. A COI-5P barcode is ~658 bp; BOLD records reach ~1,550 bp. Anything far longer is not a barcode.
MIN_BARCODE_NUCLEOTIDES = 100
MAX_BARCODE_NUCLEOTIDES = 2000
MAX_FASTA_BYTES = 1_000_000
MAX_PHOTO_BYTES = 20_000_000
MAX_PHOTO_PIXELS = 40_000_000  # larger than any BIOSCAN original (1024x768) or camera photo; stops pixel bombs

_NOT_NUCLEOTIDE_CODE = re.compile("[^ACGTRYSWKMBDHVN]")
_IGNORED_IN_BARCODE = re.compile(r"[\s\-.0-9]")  # whitespace, alignment gaps, GenBank-style position numbers


class InputError(ValueError):
    """A query that cannot be identified; the message says what is wrong, in words meant for the user."""


# ---------------------------------------------------------------------------------------------- input checks
def parse_barcode(text: str) -> tuple[str | None, str]:
    """Read one barcode from pasted text or FASTA: returns ``(record id or None, upper-case sequence)``.

    Whitespace, alignment gaps (``-``, ``.``) and position numbers are dropped; IUPAC ambiguity codes are kept.
    Raises `InputError` for an empty text, a FASTA with several records, a character that is no nucleotide
    code, or a sequence shorter than `MIN_BARCODE_NUCLEOTIDES` / longer than `MAX_BARCODE_NUCLEOTIDES`.
    """
    if text is None or not str(text).strip():
        raise InputError("The DNA barcode is empty: paste a sequence (plain or FASTA) or upload a FASTA file.")
    lines = str(text).strip().splitlines()
    headers = [line for line in lines if line.startswith(">")]
    if len(headers) > 1:
        names = ", ".join(h[1:].split()[0] if h[1:].split() else "(no name)" for h in headers[:3])
        raise InputError(f"The FASTA holds {len(headers)} records ({names}{', ...' if len(headers) > 3 else ''}); "
                         "identify one specimen at a time: keep a single record.")
    record_id = None
    if headers:
        if not lines[0].startswith(">"):
            raise InputError("The FASTA text has sequence before its '>' header line; put the header first.")
        record_id = lines[0][1:].strip() or None
        lines = lines[1:]
    return record_id, check_sequence("".join(lines))


def check_sequence(text: str) -> str:
    """One barcode's sequence text, cleaned and checked (see `parse_barcode`): the upper-case sequence."""
    raw = _IGNORED_IN_BARCODE.sub("", text).upper()
    wrong = _NOT_NUCLEOTIDE_CODE.search(raw)
    if wrong:
        letter = wrong.group()
        hint = " (U is RNA; a barcode is DNA, write T)" if letter == "U" else ""
        raise InputError(f"The barcode holds {letter!r} at position {wrong.start() + 1}, which is not a nucleotide"
                         f"{hint}. Expected A, C, G, T or the IUPAC codes R Y S W K M B D H V N.")
    known = sum(raw.count(letter) for letter in "ACGT")
    if not raw:
        raise InputError("The FASTA record holds no sequence, only a header.")
    if len(raw) > MAX_BARCODE_NUCLEOTIDES:
        raise InputError(f"The sequence is {len(raw):,} nucleotides long; a DNA barcode (COI-5P) is about 658, so "
                         f"at most {MAX_BARCODE_NUCLEOTIDES:,} are accepted. Paste the barcode region only.")
    if known < MIN_BARCODE_NUCLEOTIDES:
        raise InputError(f"The sequence has only {known} determined nucleotides (A/C/G/T); at least "
                         f"{MIN_BARCODE_NUCLEOTIDES} are needed to identify a specimen (a barcode is about 658).")
    return raw


def read_fasta_file(path: str | os.PathLike) -> str:
    """The text of an uploaded FASTA file, refusing files too large or not text.

    The size is capped by the bytes actually read, so pipes and devices (``/dev/stdin``) are capped too.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_FASTA_BYTES + 1)
    if len(data) > MAX_FASTA_BYTES:
        raise InputError(f"The FASTA file {path.name!r} is over {MAX_FASTA_BYTES / 1e6:.0f} MB; at most "
                         f"{MAX_FASTA_BYTES / 1e6:.0f} MB (one barcode) is accepted.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"The file {path.name!r} is not a text FASTA file (it is not UTF-8 text).") from None


def open_photo(source) -> Image.Image:
    """An uploaded photograph as an RGB PIL image, after checking its file size, format and pixel count.

    ``source`` is a path, the file's bytes or a PIL image. Raises `InputError` for files that are too large, not
    images, or have more than `MAX_PHOTO_PIXELS` pixels (checked from the header, before decoding).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            name, size, opened = "(photograph)", len(source), io.BytesIO(source)
        else:
            path = Path(source)
            name, size, opened = repr(path.name), path.stat().st_size, path
        if size > MAX_PHOTO_BYTES:
            raise InputError(f"The photograph is {size / 1e6:.1f} MB; at most {MAX_PHOTO_BYTES / 1e6:.0f} MB is accepted.")
        try:
            image = Image.open(opened)
        except Image.DecompressionBombError:
            raise _too_many_pixels(name) from None
        except (UnidentifiedImageError, OSError):
            raise InputError(f"The file {name} is not an image PIL can read (JPEG, PNG, TIFF, WebP ...).") from None
    width, height = image.size
    if width * height > MAX_PHOTO_PIXELS:
        raise _too_many_pixels(f"{width}x{height} pixels ({width * height / 1e6:.0f} MP)")
    try:
        return image.convert("RGB")
    except Image.DecompressionBombError:
        raise _too_many_pixels(f"{width}x{height} pixels") from None
    except (OSError, ValueError) as error:
        raise InputError(f"The photograph could not be decoded (truncated or corrupt file?): {error}") from None


def _too_many_pixels(what: str) -> InputError:
    return InputError(f"The photograph ({what}) has too many pixels: at most {MAX_PHOTO_PIXELS / 1e6:.0f} MP is "
                      "accepted. Downscale it first.")


