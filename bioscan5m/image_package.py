"""One image package of a release, read from its extracted folder or from the official zip archives.

Kept out of ``builder.py`` on purpose: for streaming, ``datasets`` replaces ``open``, ``os.path.join`` and ``Path`` in
a builder's module with URL-aware versions, which cost more than reading a 256-pixel JPEG from a local disk.
"""

from __future__ import annotations

import os
import zipfile

from . import release


class MissingImageError(FileNotFoundError):
    """A record's image is absent from the package folder and archives, or is not a complete JPEG."""


class ImagePackage:
    """Reads one image package's JPEGs from the extracted folder, else from the official zip archives."""

    def __init__(self, root: str | os.PathLike, package: str):
        self.package = package
        self.folder = release.image_package_dir(root, package)
        self.archives = release.image_zip_candidates(root, package)
        self._members: dict[str, tuple[zipfile.ZipFile, zipfile.ZipInfo]] | None = None
        if not self.folder.is_dir() and not self.archives:
            raise FileNotFoundError(
                f"Image package {package!r} not found: neither the folder {self.folder} nor an archive "
                f"BIOSCAN_5M_{package}*.zip under {root}. Use the 'dna' config for barcodes and metadata only."
            )

    def _zip_members(self):
        if self._members is None:
            self._members = {}
            for path in self.archives:
                archive = release.open_zip(path)
                for name, info in release.index_image_zip(archive, self.package).items():
                    self._members[name] = (archive, info)
        return self._members

    def relpaths(self) -> set[str]:
        """Every image this package holds, as ``{split}/[{chunk}/]{processid}.jpg``."""
        found = set(self._zip_members())
        if self.folder.is_dir():
            found |= {path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*.jpg")}
        return found

    def read(self, relpath: str) -> tuple[str, bytes]:
        """Return ``(where, jpeg_bytes)``; raises :class:`MissingImageError` naming the file."""
        # open() straight away: a stat() first would cost a second system call per image.
        path = os.path.join(self.folder, relpath)
        try:
            with open(path, "rb") as handle:
                where, data = path, handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            where, data = self._read_from_archives(relpath)
        if not is_complete_jpeg(data):
            raise MissingImageError(f"{where}: not a complete JPEG ({len(data)} bytes; truncated or corrupt).")
        return where, data

    def _read_from_archives(self, relpath: str) -> tuple[str, bytes]:
        if relpath not in self._zip_members():
            places = [str(self.folder)] + [str(a) for a in self.archives]
            raise MissingImageError(f"image {relpath} of package {self.package!r} not found in {', '.join(places)}.")
        archive, info = self._zip_members()[relpath]
        where = f"{archive.filename}!{info.filename}"
        try:
            return where, archive.read(info)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise MissingImageError(f"{where}: unreadable zip member ({error}).") from None

    def close(self):
        for archive in {id(a): a for a, _ in (self._members or {}).values()}.values():
            archive.close()


def is_complete_jpeg(data: bytes) -> bool:
    """A JPEG starts with the SOI marker and ends with EOI; truncated downloads lose the EOI."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


__all__ = ["ImagePackage", "MissingImageError", "is_complete_jpeg"]
