"""Download the official release files: lazily per split group, resumable, checksum-verified.

Each file comes from the Hub mirror through ``huggingface_hub`` at a pinned revision (resume, authentication and
``HF_HUB_OFFLINE`` as everywhere on the Hub), else from Zenodo over plain HTTP with Range resumes. Files land in
the release root exactly as the official mirrors name them; the builder reads the metadata and image archives in
place, so nothing needs extracting.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from . import release
from .release import RemoteFile

CHUNK_BYTES = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file does not match its published MD5, its recorded size, or is not the archive it should be."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_verified(path: Path) -> bool:
    """A file verified once is not hashed again unless its size or mtime changed."""
    stamp = _stamp(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    stat = path.stat()
    return stamp.read_text().strip() == f"{stat.st_size} {stat.st_mtime_ns}"


def _http_get(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, resuming from its current size with an HTTP Range request."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the partial file is already complete
            return
        raise
    with response:
        resumed = offset and response.status == 206
        if offset and not resumed:
            offset = 0  # the server ignored Range: start over
        total = response.length + offset if response.length is not None else None
        with open(part, "ab" if resumed else "wb") as handle, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], leave=False, disable=None) as bar:
            for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                handle.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise TimeoutError(f"the connection closed after {part.stat().st_size:,} of {total:,} bytes")


def _hub_get(remote: RemoteFile, root: Path, timeout: float) -> Path:
    """Fetch ``remote`` from the Hub mirror into ``root``. ``huggingface_hub`` downloads into
    ``root/.cache/huggingface`` (resumed there after an interruption) and moves the file into place once complete.
    A ``.cache`` folder this call made is removed again when the download failed before writing anything."""
    from huggingface_hub import hf_hub_download

    cache = root / ".cache"
    made_cache = not cache.exists()
    try:
        return Path(hf_hub_download(release.HUB_REPO_ID, remote.filename, repo_type="dataset",
                                    revision=remote.hub_revision, local_dir=root, etag_timeout=timeout))
    except BaseException:
        if made_cache and all(p.is_dir() or p.name in (".gitignore", "CACHEDIR.TAG") or p.suffix == ".lock"
                              for p in cache.rglob("*")):
            shutil.rmtree(cache, ignore_errors=True)
        raise


def _download(remote: RemoteFile, destination: Path, timeout: float) -> Path:
    """Download ``remote`` from its first source that answers; return the complete file (the destination itself,
    or a ``.part`` file beside it)."""
    errors = []
    if remote.hub_revision is not None:
        try:
            return _hub_get(remote, destination.parent, timeout)
        except Exception as error:  # any failure of the Hub falls back to Zenodo, and is reported if that fails too
            errors.append(f"the Hub ({release.HUB_REPO_ID}@{remote.hub_revision}): {str(error).splitlines()[0]}")
    part = destination.with_name(destination.name + ".part")
    for url in remote.urls:
        try:
            _http_get(url, part, timeout)
            return part
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            errors.append(f"{url}: {getattr(error, 'reason', error)}")
    raise ConnectionError(
        f"Could not download {remote.filename}; tried {'; '.join(errors)}. If this machine is offline, download "
        f"the file elsewhere and place it at {destination} (a partial download is kept and resumed next time)."
    )


def fetch(remote: RemoteFile, root: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download one release file into ``root`` (resuming an interrupted download) and verify it."""
    root = Path(os.path.expanduser(str(root)))
    root.mkdir(parents=True, exist_ok=True)
    destination = root / remote.filename
    if _is_verified(destination):
        return destination
    placed_by_user = destination.is_file()  # verified before anything is downloaded, and never deleted
    downloaded = destination if placed_by_user else _download(remote, destination, timeout)
    problem = _verification_problem(remote, downloaded)
    if problem is not None:
        if placed_by_user:
            raise ChecksumError(f"{destination}: {problem}; the file is corrupt or a different version. Move it "
                                "away and download again.")
        downloaded.unlink()
        raise ChecksumError(f"{destination.name}: {problem}; the download was deleted (corrupt, truncated or not "
                            "the file asked for). Run the download again.")
    if downloaded != destination:
        downloaded.replace(destination)
    stat = destination.stat()
    _stamp(destination).write_text(f"{stat.st_size} {stat.st_mtime_ns}")
    return destination


def _verification_problem(remote: RemoteFile, path: Path) -> str | None:
    """What is wrong with a downloaded file, or None: the published MD5 when there is one; otherwise the recorded
    size, and for an archive that it opens as a zip whose members are all safe to read (an HTML error page, say,
    is not)."""
    if remote.md5 is not None:
        actual = md5sum(path)
        return None if actual == remote.md5 else f"MD5 {actual} does not match the published {remote.md5}"
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size:,} bytes, but the release file has {remote.size:,}"
    if remote.filename.endswith(".zip"):
        try:
            with release.open_zip(path) as archive:
                for name in archive.namelist():
                    release.check_member_name(path, name)
        except (zipfile.BadZipFile, release.UnsafeArchiveError, OSError) as error:
            return f"not a usable zip archive ({error})"
    return None


def download(root: str | os.PathLike, package: str | None = None, split: str = "all", timeout: float = 60.0) -> list[Path]:
    """Fetch the metadata and, when ``package`` is given, that package's archives for the split groups of ``split``.

    Only the groups the requested splits need are downloaded (``pretrain``, ``train``, ``eval``), as in
    `bioscan-dataset`. Returns the local paths.
    """
    if package is not None and package not in release.IMAGE_PACKAGES:
        raise ValueError(f"Unknown image package {package!r}; choose from {', '.join(release.IMAGE_PACKAGES)}.")
    splits = release.parse_split(split)
    if package is None and set(splits) != set(release.SPLITS):
        raise ValueError(f"split={split!r} chooses image archives, and no image package is asked for (the metadata "
                         "holds every split); give the package too (--package), or leave the split out.")
    # Every file is known before the first byte is fetched, so a request that cannot be met fails at once.
    remotes = [release.METADATA_REMOTE]
    for group in release.split_groups(splits) if package is not None else ():
        if (package, group) not in release.IMAGE_REMOTES:
            raise ValueError(
                f"No published download URL is known for {package!r} images of the {group!r} split group. Get the "
                f"archive from https://zenodo.org/records/11973457 or https://huggingface.co/datasets/bioscan-ml/BIOSCAN-5M "
                f"and place it in {root}; the builder reads BIOSCAN_5M_{package}*.zip archives in place."
            )
        remotes += release.IMAGE_REMOTES[(package, group)]
    return [fetch(remote, root, timeout) for remote in remotes]
