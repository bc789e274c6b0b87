"""One image package of a release, read from its extracted folder or from the official zip archives.

Kept out of ``builder.py`` on purpose: for streaming, ``datasets`` replaces ``open``, ``os.path.join`` and ``Path`` in
a builder's module with URL-aware versions, which cost more than reading a 256-pixel JPEG from a local disk.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

from . import release
from .zip_index import ZipIndex, ZipIndexError


#: Largest image file read, by default: the biggest official photographs (``original_full``, 1024x768 JPEGs) are a
#: few MB, so this leaves a wide margin while refusing a member that would fill memory (a zip bomb's 600 MB member).
MAX_IMAGE_BYTES = 32 << 20
#: Most pixels an image may have to be decoded, on every path (libjpeg-turbo and PIL alike), read from the header
#: before decoding: 40 MP is far above any BIOSCAN photograph (1024x768) and stops a small file that would inflate
#: to gigabytes.
MAX_IMAGE_PIXELS = 40_000_000


#: Open image files without following a final symbolic link (where the platform can), so links are checked.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


class MissingImageError(FileNotFoundError):
    """A record's image is absent from the package folder and archives, or is not a complete JPEG."""


class ImageTooLargeError(ValueError):
    """An image file or zip member larger than the size cap (``max_image_bytes``); it is never read whole."""


class UnsafeImagePathError(ValueError):
    """An image path that resolves outside its package folder (through a symlink)."""


class ImagePackage:
    """Reads one image package's JPEGs from the extracted folder, else from the official zip archives."""

    def __init__(self, root: str | os.PathLike, package: str, max_image_bytes: int | None = MAX_IMAGE_BYTES,
                 splits=None, cache_dir: str | os.PathLike | None = None):
        """``splits``: read only these splits' images, so only the archives holding them are opened (a ``test``
        record never costs the index of the 4.7 M ``pretrain`` members); ``None``: every split.
        ``cache_dir``: where the archives' member indexes are cached (default: beside the ``datasets`` cache)."""
        self.package = package
        self.max_image_bytes = max_image_bytes
        self.folder = release.image_package_dir(root, package)
        # Every image path must resolve inside this folder (the folder itself may be a link to another disk). Each
        # sub-folder is resolved once; each file is opened without following a link, so the check costs nothing
        # per image unless the image is a link.
        self._real_folder = os.path.join(os.path.realpath(self.folder), "")
        self._checked_folders: set[str] = set()
        self.archives = release.image_zip_candidates(root, package)
        if not self.folder.is_dir() and not self.archives:
            raise FileNotFoundError(
                f"Image package {package!r} not found: neither the folder {self.folder} nor an archive "
                f"BIOSCAN_5M_{package}*.zip under {root}. Use the 'dna' config for barcodes and metadata only."
            )
        wanted = set(release.SPLITS if splits is None else splits)
        self._archive_splits = {path: set(release.archive_splits(path, package)) & wanted for path in self.archives}
        self.archives = [path for path, held in self._archive_splits.items() if held]
        self._cache_dir = cache_dir
        self._indexes: dict[Path, tuple[ZipIndex, io.RawIOBase]] = {}  # opened on first use: (index, file)

    def _archive(self, path: Path) -> tuple[ZipIndex, io.RawIOBase]:
        if path not in self._indexes:
            self._indexes[path] = (ZipIndex.open(path, self.package, self._cache_dir), open(path, "rb", buffering=0))
        return self._indexes[path]

    def relpaths(self) -> set[str]:
        """Every image this package holds, as ``{split}/[{chunk}/]{processid}.jpg``."""
        found = {name.decode() for path in self.archives for name in self._archive(path)[0].names}
        if self.folder.is_dir():
            found |= {path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*.jpg")}
        return found

    def count_per_split(self) -> dict[str, int]:
        """Images per split; from the archives' indexes alone when there is no extracted folder to merge."""
        if self.folder.is_dir():
            counts: dict[str, int] = {}
            for relpath in self.relpaths():
                split = relpath.split("/", 1)[0]
                counts[split] = counts.get(split, 0) + 1
            return counts
        counts = {}
        for path in self.archives:
            for split, count in self._archive(path)[0].count_per_split().items():
                counts[split] = counts.get(split, 0) + count
        return counts

    def read(self, relpath: str) -> tuple[str, bytes]:
        """Return ``(where, jpeg_bytes)``; raises :class:`MissingImageError` naming the file."""
        path = os.path.join(self.folder, relpath)
        # open() straight away: a stat() first would cost a second system call per image.
        try:
            where, data = path, self._read_file(path, relpath)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            where, data = self._read_from_archives(relpath)
        if not is_complete_jpeg(data):
            raise MissingImageError(f"{where}: not a complete JPEG ({len(data)} bytes; truncated or corrupt).")
        return where, data

    def _read_file(self, path: str, relpath: str) -> bytes:
        folder = relpath.rpartition("/")[0]
        if folder not in self._checked_folders:
            self._check_inside(os.path.join(self.folder, folder))
            self._checked_folders.add(folder)
        if not _NO_FOLLOW:
            self._check_inside(path)
        try:
            descriptor = os.open(path, os.O_RDONLY | _NO_FOLLOW)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            self._check_inside(path)  # a link: read only when it stays inside the folder
            descriptor = os.open(path, os.O_RDONLY)
        with open(descriptor, "rb") as handle:
            # The size from fstat, not a capped read(n): read(n) allocates n bytes whatever the file holds.
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise MissingImageError(f"{path}: not a regular file.")
            self._check_size(path, status.st_size)
            return handle.read()

    def _check_inside(self, path: str) -> None:
        real = os.path.realpath(path)
        if not os.path.join(real, "").startswith(self._real_folder):
            raise UnsafeImagePathError(f"{path}: resolves to {real}, outside the image folder {self.folder}; "
                                       "refusing to read it.")

    def _read_from_archives(self, relpath: str) -> tuple[str, bytes]:
        split = relpath.split("/", 1)[0]
        for path in self.archives:
            if split not in self._archive_splits[path]:
                continue
            index, archive = self._archive(path)
            row = index.find(relpath)
            if row is None:
                continue
            where = index.where(row)
            self._check_size(where, int(index.sizes[row]))  # the declared size bounds what is inflated
            try:
                return where, index.read(row, archive.fileno())
            except (ZipIndexError, OSError) as error:
                raise MissingImageError(f"{where}: unreadable zip member ({error}).") from None
        places = [str(self.folder)] + [str(a) for a in self.archives]
        raise MissingImageError(f"image {relpath} of package {self.package!r} not found in {', '.join(places)}.")

    def _check_size(self, where: str, size: int) -> None:
        if self.max_image_bytes is not None and size > self.max_image_bytes:
            raise ImageTooLargeError(f"{where}: {size:,} bytes or more, over the {self.max_image_bytes:,}-byte limit "
                                     "for one image (max_image_bytes; the official photographs are a few MB).")

    def close(self):
        for _, archive in self._indexes.values():
            archive.close()
        self._indexes.clear()


def is_complete_jpeg(data: bytes) -> bool:
    """A JPEG starts with the SOI marker and ends with EOI; truncated downloads lose the EOI."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


__all__ = ["ImagePackage", "MissingImageError", "ImageTooLargeError", "UnsafeImagePathError", "MAX_IMAGE_BYTES",
           "is_complete_jpeg"]
