"""The image members of one official zip archive as compact, sorted arrays, read by offset.

The official ``pretrain`` archives hold ~2.3 M members each. ``zipfile.ZipFile`` turns every central-directory
entry into a ``ZipInfo`` object (hundreds of bytes each, seconds per million), and every DataLoader worker would
do it again. Here the central directory is parsed once, vectorised with numpy, into a few arrays (member name,
local-header offset, sizes, CRC, method) sorted by name; they are cached on disk beside the ``datasets`` cache,
keyed by the archive's path, size and modification time, and memory-mapped, so later runs and worker processes
share one copy through the page cache and start at once.

Members are read with ``os.pread`` (no shared file position, so threads and forked workers can read one open
file), each checked as ``zipfile`` would: the local header's signature, the declared size against a cap before
inflating, the inflated size and the CRC-32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import release
from .caching import cache_folder
from ..staging import staged_folder

logger = logging.getLogger(__name__)

#: Bumped whenever the cached arrays change meaning.
INDEX_FORMAT = 1
_ARRAYS = ("names", "offsets", "compressed_sizes", "sizes", "crcs", "methods", "flags")

_EOCD = struct.Struct("<4s4H2LH")            # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")     # zip64 end of central directory locator
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")    # zip64 end of central directory record
_CENTRAL = struct.Struct("<4s6H3L5H2L")      # central directory file header (46 bytes)
_LOCAL = struct.Struct("<4s5H3L2H")          # local file header (30 bytes)
_STORED, _DEFLATED = 0, 8
_ENCRYPTED = 0x1


class ZipIndexError(ValueError):
    """An archive whose structure cannot be read, or a member that is corrupt."""


@dataclass(frozen=True)
class ZipIndex:
    """The members of ``path`` under ``images/{package}/``, by their path below it, sorted by that path."""

    path: Path
    names: np.ndarray             # bytes, e.g. b"test/ABCD123-24.jpg"
    offsets: np.ndarray           # uint64: where each member's local header starts
    compressed_sizes: np.ndarray  # uint64
    sizes: np.ndarray             # uint64: inflated size, as declared in the central directory
    crcs: np.ndarray              # uint32
    methods: np.ndarray           # uint16: 0 stored, 8 deflated
    flags: np.ndarray             # uint16

    @classmethod
    def open(cls, path: str | os.PathLike, package: str, cache_dir: str | os.PathLike | None = None) -> ZipIndex:
        """The index of ``path``, from the on-disk cache when the archive is unchanged, else parsed (and cached)."""
        path = Path(path)
        folder = _cache_folder(path, package, cache_dir)
        if (folder / "names.npy").is_file():
            try:
                arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
                if len({len(values) for values in arrays.values()}) == 1:
                    return cls(path, **arrays)
            except (OSError, ValueError):
                pass  # a damaged cache entry is rebuilt below
        logger.info("indexing the members of %s (once; the index is cached)", path.name)
        index = cls.parse(path, package)
        try:
            with staged_folder(folder, overwrite=True) as staging:
                for name in _ARRAYS:
                    np.save(staging / f"{name}.npy", getattr(index, name), allow_pickle=False)
        except OSError:
            pass  # a read-only cache: the parsed index still serves this process
        return index

    @classmethod
    def parse(cls, path: str | os.PathLike, package: str) -> ZipIndex:
        """Read the central directory of ``path`` and keep the members under ``images/{package}/``.

        Every member name is checked first: an absolute name or one with a ``..`` component anywhere in the archive
        refuses the whole archive, as `release.check_member_name` does.
        """
        path = Path(path)
        with open(path, "rb") as handle:
            directory, base, count = _central_directory(path, handle)
        fields = _parse_entries(path, directory, count)
        names = [_as_utf8(path, name, flags) for name, flags in zip(fields.pop("names"), fields["flags"].tolist())]
        _check_names(path, names)
        marker = f"images/{package}/".encode()
        keep, keys = [], []
        for row, name in enumerate(names):
            position = name.find(marker)
            if (position == 0 or (position > 0 and name[position - 1:position] == b"/")) and not name.endswith(b"/"):
                keep.append(row)
                keys.append(name[position + len(marker):])
        keep = np.asarray(keep, dtype=np.int64)
        keys = np.array(keys, dtype=f"S{max((len(k) for k in keys), default=1)}")
        order = np.argsort(keys, kind="stable")
        # One member per path, the last in the archive, as zipfile (and a later update of an archive) has it.
        last = np.r_[keys[order][1:] != keys[order][:-1], True] if len(order) else np.zeros(0, dtype=bool)
        order = order[last]
        selected = {name: values[keep][order] for name, values in fields.items()}
        selected["offsets"] = selected["offsets"] + np.uint64(base)
        return cls(path, keys[order], **selected)

    def __len__(self) -> int:
        return len(self.names)

    def find(self, relpath: str) -> int | None:
        """Row of the member at ``relpath`` (``{split}/[{chunk}/]{processid}.jpg``), or None."""
        key = relpath.encode()
        if len(self.names) == 0 or len(key) > self.names.dtype.itemsize:
            return None
        row = int(np.searchsorted(self.names, key))
        return row if row < len(self.names) and self.names[row] == key else None

    def where(self, row: int) -> str:
        return f"{self.path}!{self.names[row].decode()}"

    def read(self, row: int, descriptor: int) -> bytes:
        """The inflated bytes of member ``row``, read from the open ``descriptor`` of the archive. The caller caps
        ``sizes[row]`` first; inflating never goes past it."""
        where, size = self.where(row), int(self.sizes[row])
        if int(self.flags[row]) & _ENCRYPTED:
            raise ZipIndexError(f"{where}: encrypted member; the official archives are not encrypted.")
        offset, compressed = int(self.offsets[row]), int(self.compressed_sizes[row])
        method = int(self.methods[row])
        # Deflate grows incompressible data by a few bytes per 16 KiB block at most; anything larger is a lie that
        # would make the read below allocate it.
        if compressed > (size if method == _STORED else size + size // 100 + 1024):
            raise ZipIndexError(f"{where}: declares {compressed:,} compressed bytes for {size:,}; corrupt directory.")
        header = os.pread(descriptor, _LOCAL.size, offset)
        if len(header) < _LOCAL.size or header[:4] != b"PK\x03\x04":
            raise ZipIndexError(f"{where}: no local file header at offset {offset} (truncated or corrupt archive).")
        name_length, extra_length = _LOCAL.unpack(header)[9:11]
        data = os.pread(descriptor, compressed, offset + _LOCAL.size + name_length + extra_length)
        if len(data) < compressed:
            raise ZipIndexError(f"{where}: the archive ends inside this member (truncated download?).")
        if method == _DEFLATED:
            inflater = zlib.decompressobj(-15)
            data = inflater.decompress(data, size + 1)  # never more than declared (+1 to see a lie)
        elif method != _STORED:
            raise ZipIndexError(f"{where}: compression method {method}; the official archives store or deflate.")
        if len(data) != size or zlib.crc32(data) != int(self.crcs[row]):
            raise ZipIndexError(f"{where}: corrupt member (size or CRC-32 does not match the archive's directory).")
        return data

    def count_per_split(self) -> dict[str, int]:
        """Members per split folder (the first component of each path)."""
        counts = Counter(name.partition(b"/")[0] for name in self.names.tolist())
        return {split.decode(): count for split, count in sorted(counts.items())}


def _cache_folder(path: Path, package: str, cache_dir) -> Path:
    if cache_dir is None:
        cache_dir = cache_folder("zip-index")
    status = path.stat()
    key = f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}|{package}|{INDEX_FORMAT}"
    return Path(cache_dir) / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def _bad_zip(path: Path, reason: str):
    import zipfile

    return zipfile.BadZipFile(f"{path}: not a valid zip archive (truncated or corrupt download?): {reason}")


def _central_directory(path: Path, handle) -> tuple[bytes, int, int]:
    """``(central directory bytes, offset of the archive's start in the file, entry count)``."""
    size = handle.seek(0, os.SEEK_END)
    tail_length = min(size, _EOCD.size + 0xFFFF)  # the record, then a comment of up to 64 KiB
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise _bad_zip(path, "no end-of-central-directory record")
    _, _, _, _, count, directory_size, directory_offset, _ = _EOCD.unpack_from(tail, at)
    record_position = size - tail_length + at
    # A zip64 locator right before the record is authoritative whatever the record says (writers switch to zip64
    # below the 32-bit limits, CPython at 2 GiB), as zipfile reads it.
    locator_position = record_position - _ZIP64_LOCATOR.size
    locator = b""
    if locator_position >= 0:
        handle.seek(locator_position)
        locator = handle.read(_ZIP64_LOCATOR.size)
    if locator[:4] == b"PK\x06\x07":
        record_position = locator_position - _ZIP64_EOCD.size
        if record_position < 0:
            raise _bad_zip(path, "missing zip64 end-of-central-directory record")
        handle.seek(record_position)
        record = handle.read(_ZIP64_EOCD.size)
        if record[:4] != b"PK\x06\x06":
            raise _bad_zip(path, "missing zip64 end-of-central-directory record")
        _, _, _, _, _, _, _, count, directory_size, directory_offset = _ZIP64_EOCD.unpack(record)
    # Data prepended to the archive (a self-extractor, say) shifts every offset by the same amount.
    base = record_position - directory_size - directory_offset
    if base < 0:
        raise _bad_zip(path, "the central directory lies outside the file")
    handle.seek(base + directory_offset)
    directory = handle.read(directory_size)
    if len(directory) != directory_size:
        raise _bad_zip(path, "the central directory is cut short")
    return directory, base, count


def _parse_entries(path: Path, directory: bytes, count: int) -> dict[str, np.ndarray]:
    """Decode ``count`` central-directory headers: positions found by signature, then checked as a chain (each
    entry starts where the previous one ends), so a name that happens to hold the signature cannot mislead."""
    import re

    buffer = np.frombuffer(directory, dtype=np.uint8)
    starts = np.fromiter((m.start() for m in re.finditer(b"PK\x01\x02", directory)), dtype=np.int64)

    def field(offset: int, width: int, at: np.ndarray) -> np.ndarray:
        value = np.zeros(len(at), dtype=np.uint64)
        for byte in range(width):
            value |= buffer[at + offset + byte].astype(np.uint64) << np.uint64(8 * byte)
        return value

    starts = starts[starts + _CENTRAL.size <= len(directory)]
    lengths = _CENTRAL.size + field(28, 2, starts) + field(30, 2, starts) + field(32, 2, starts)
    lengths = lengths.astype(np.int64)
    chained = len(starts) == count and (count == 0 or (
        starts[0] == 0 and np.array_equal(starts[1:], starts[:-1] + lengths[:-1])
        and int(starts[-1] + lengths[-1]) == len(directory)))
    if not chained:  # a name holding the signature, an entry count stored modulo 65,536, ...: walk the chain
        starts = _walk_entries(path, directory)
    name_lengths = field(28, 2, starts).astype(np.int64)
    names = [directory[start + _CENTRAL.size:start + _CENTRAL.size + length]
             for start, length in zip(starts.tolist(), name_lengths.tolist())]
    fields = {"names": names, "flags": field(8, 2, starts).astype(np.uint16),
              "methods": field(10, 2, starts).astype(np.uint16), "crcs": field(16, 4, starts).astype(np.uint32),
              "compressed_sizes": field(20, 4, starts), "sizes": field(24, 4, starts), "offsets": field(42, 4, starts)}
    wide = np.flatnonzero((fields["compressed_sizes"] == 0xFFFFFFFF) | (fields["sizes"] == 0xFFFFFFFF)
                          | (fields["offsets"] == 0xFFFFFFFF))
    for row in wide.tolist():  # zip64: the real values are in the entry's extra field, in this order
        start, extra_start = int(starts[row]), int(starts[row]) + _CENTRAL.size + int(name_lengths[row])
        extra = directory[extra_start:extra_start + int(field(30, 2, starts[row:row + 1])[0])]
        values = iter(_zip64_extra(path, extra))
        for name in ("sizes", "compressed_sizes", "offsets"):
            if fields[name][row] == 0xFFFFFFFF:
                value = next(values, None)
                if value is None:
                    raise _bad_zip(path, f"entry at {start} lacks its zip64 sizes")
                fields[name][row] = value
    return fields


def _walk_entries(path: Path, directory: bytes) -> np.ndarray:
    """Entry positions, reading entries until the directory is used up (as zipfile does, whatever the count says)."""
    starts, position = [], 0
    while position < len(directory):
        if directory[position:position + 4] != b"PK\x01\x02" or position + _CENTRAL.size > len(directory):
            raise _bad_zip(path, f"central directory entry {len(starts)} is corrupt")
        starts.append(position)
        fields = _CENTRAL.unpack_from(directory, position)
        position += _CENTRAL.size + fields[10] + fields[11] + fields[12]
    return np.asarray(starts, dtype=np.int64)


def _zip64_extra(path: Path, extra: bytes) -> list[int]:
    position = 0
    while position + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, position)
        if tag == 0x0001:
            body = extra[position + 4:position + 4 + length]
            return list(struct.unpack(f"<{len(body) // 8}Q", body[:len(body) // 8 * 8]))
        position += 4 + length
    raise _bad_zip(path, "a zip64 entry without its zip64 extra field")


def _as_utf8(path: Path, name: bytes, flags: int) -> bytes:
    """A member name as UTF-8 bytes, decoded as zipfile does (UTF-8 when flag bit 11 says so, else cp437)."""
    if b"\0" in name:
        raise _bad_zip(path, f"member name {name!r} holds a NUL byte")
    if name.isascii():
        return name
    try:
        return name.decode("utf-8" if flags & 0x800 else "cp437").encode()
    except UnicodeDecodeError:
        raise _bad_zip(path, f"member name {name!r} is not valid UTF-8") from None


def _check_names(path: Path, names: list[bytes]) -> None:
    """Refuse the archive if any member name could escape the folder it is read into."""
    for name in names:
        # Fast path: a name with no backslash, no leading '/', no ':' and no '..' is safe; others get the full check.
        if b"\\" in name or name[:1] == b"/" or b":" in name or b".." in name:
            release.check_member_name(path, name.decode())


__all__ = ["ZipIndex", "ZipIndexError", "INDEX_FORMAT"]
