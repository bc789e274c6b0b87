"""Writing outputs without harming what is already there.

Every command that writes a folder or a file goes through here:

* a path that exists is refused unless the caller passes ``overwrite=True`` (``--overwrite`` on the command line);
* the output is written to a hidden staging path beside its destination (``.NAME.partial-PID-XXXXXXXX``) and
  renamed into place only when it is complete, so an interrupted run leaves the old state, or nothing at all;
* staging left behind by an earlier run that was killed (its process is gone) is removed, and a destination
  moved aside for ``overwrite`` and never replaced is put back.

    with staged_folder("runs/bb", overwrite=False) as staging:
        model.save_pretrained(staging)          # runs/bb appears, whole, when the block ends without error
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

#: Written into every staging folder, so that cleaning up never touches a folder this package did not make.
STAGING_MARKER = ".bioscan5m-staging"


class OutputExistsError(FileExistsError):
    """The destination of an output exists and overwriting it was not asked for."""


def check_output(path: str | os.PathLike, overwrite: bool = False, inputs=(), copies_inputs: bool = False) -> Path:
    """Refuse ``path`` if it exists (unless ``overwrite``), or if it is or holds one of the command's ``inputs``;
    return it as a ``Path``. Staging left at ``path`` by a killed run is cleaned up first.

    A new output may lie inside an input folder (results beside a model, say), but an existing path there is never
    replaced, even with ``overwrite``: it would change the input. Of a release root only what is read counts:
    its ``bioscan5m`` folder and its ``BIOSCAN_5M_*`` archives, so outputs kept elsewhere under it are replaced as
    usual. ``copies_inputs``: the output copies the input folders, so it may not lie inside one at all. An empty
    folder counts as free: it holds nothing of the user's (a folder made for the output, say).
    """
    path = Path(os.path.expanduser(str(path)))
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputExistsError(f"{path}: {parent} is not a folder; choose another output path.")
            break
    clean_stale_staging(path)
    replaced = overwrite and (path.is_symlink() or path.exists() and not _is_empty_folder(path))
    for given, relation in _relations_to_inputs(path, inputs):
        if relation == "is or holds":
            raise OutputExistsError(f"{path} is, or holds, this command's input {given}; choose another output path.")
        if copies_inputs:
            raise OutputExistsError(f"{path} lies inside {given}, which this command copies; choose an output "
                                    "outside it.")
        if relation == "inside what is read" and replaced:
            raise OutputExistsError(f"{path} lies inside this command's input {given}: replacing it would change "
                                    "the input, --overwrite or not; choose another output path.")
    if path.is_symlink() or (path.exists() and not _is_empty_folder(path)):
        if not overwrite:
            raise OutputExistsError(f"{path} already exists; choose a new path, or pass --overwrite "
                                    "(overwrite=True) to replace it.")
        if path.is_symlink() or not path.is_dir() and not path.is_file():
            raise OutputExistsError(f"{path} is not a plain file or folder; refusing to replace it.")
    return path


def check_outside_inputs(path: str | os.PathLike, inputs, what: str = "") -> None:
    """Refuse a folder a command writes into as it goes (checkpoints, say) that is, holds or lies inside what it
    reads of its ``inputs``; ``what``: how the message names ``path`` (e.g. ``--checkpoint-dir``)."""
    name = f"{what} {path}".strip()
    for given, relation in _relations_to_inputs(path, inputs):
        if relation == "is or holds":
            raise OutputExistsError(f"{name} is, or holds, this command's input {given}; choose another folder.")
        if relation == "inside what is read":
            raise OutputExistsError(f"{name} lies inside this command's input {given}; choose a folder outside it.")


def _relations_to_inputs(path, inputs):
    """``(input, relation)`` for each input folder or file that ``path`` is or holds (``"is or holds"``), or lies
    inside: inside what is read of it (``"inside what is read"``) or elsewhere in the folder (``"inside"``)."""
    target = Path(os.path.expanduser(str(path))).resolve()
    for given in inputs:
        if not isinstance(given, (str, os.PathLike)):
            continue
        source = Path(os.path.expanduser(str(given))).resolve()
        if source == target or target in source.parents:
            yield given, "is or holds"
        elif source in target.parents and source.is_dir():
            read = any(part == target or part in target.parents for part in _parts_read(source))
            yield given, "inside what is read" if read else "inside"


def _parts_read(folder: Path) -> list[Path]:
    """What a command reads of an input folder: of a release root, its ``bioscan5m`` folder and archives; of any
    other folder (a model, an index), all of it."""
    if (folder / "bioscan5m").is_dir():
        return [folder / "bioscan5m", *folder.glob("BIOSCAN_5M_*")]
    return [folder]


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike, overwrite: bool = False, main_process: bool = True) -> Iterator[Path]:
    """Yield a staging folder to write into; on success it replaces ``path``, on any error it is removed.

    ``main_process=False`` (the other processes of a distributed run) only checks ``path`` and yields the staging
    path without creating it: those processes must not write.
    """
    path = check_output(path, overwrite)
    staging = _staging_path(path)
    if not main_process:
        yield staging
        return
    _make_parent(path)
    try:
        staging.mkdir()
    except OSError as error:
        raise OSError(f"{path}: cannot write in {path.parent} ({error.strerror}).") from None
    (staging / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    try:
        yield staging
        _publish(staging, path, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Unmarked only once in place: a kill before this leaves a complete output with a stray hidden file, never a
    # staging folder that cleaning could not recognise.
    (path / STAGING_MARKER).unlink(missing_ok=True)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging file path beside ``path``; on success it replaces ``path`` (one atomic rename)."""
    path = check_output(path, overwrite)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; expected a file path.")
    _make_parent(path)
    staging = _staging_path(path)
    try:
        staging.touch(exist_ok=False)
    except OSError as error:
        raise OSError(f"{path}: cannot write in {path.parent} ({error.strerror}).") from None
    try:
        yield staging
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{path}: cannot make its folder {path.parent} ({error.strerror}).") from None


def _staging_path(path: Path) -> Path:
    # Host and process in the name, so that cleaning up can tell a dead run's staging from a live one's.
    return path.parent / f".{path.name}.partial-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _publish(staging: Path, path: Path, overwrite: bool) -> None:
    if not path.exists() or _is_empty_folder(path):
        os.replace(staging, path)  # rename(2) replaces an empty folder, atomically
        return
    if not overwrite:  # something appeared at the path while this run was writing
        raise OutputExistsError(f"{path} appeared while this output was being written; it was left as it is.")
    # Two renames: the old output is moved aside first and deleted only once the new one is in place. A kill
    # between the two leaves the old one aside, and the next run puts it back (clean_stale_staging).
    aside = path.parent / f".{path.name}.replaced-{os.getpid()}"
    os.replace(path, aside)
    os.replace(staging, path)
    if aside.is_dir():
        shutil.rmtree(aside)
    else:
        aside.unlink()


def clean_stale_staging(path: str | os.PathLike) -> list[Path]:
    """Remove staging folders of ``path`` left by runs that were killed; return what was removed.

    Only folders carrying this package's marker (or empty ones), made on this machine by a process that no longer
    runs, are removed. A destination moved aside for overwriting by such a run is restored when the new output
    never took its place.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    name = glob.escape(path.name)
    for candidate in path.parent.glob(f".{name}.partial-*"):
        if candidate.is_symlink():
            continue
        if candidate.is_dir() and _is_abandoned(candidate):
            shutil.rmtree(candidate)
        elif candidate.is_file() and _owner_is_gone(candidate.name):
            candidate.unlink()
        else:
            continue
        removed.append(candidate)
    for aside in path.parent.glob(f".{name}.replaced-*"):
        pid = aside.name.rsplit("-", 1)[-1]
        if aside.is_symlink() or not pid.isdigit() or _process_alive(int(pid)):
            continue
        if _is_empty_folder(path):
            path.rmdir()
        if not path.exists():
            os.replace(aside, path)  # the new output never took its place: the old one comes back
        elif aside.is_dir():
            shutil.rmtree(aside)
        else:
            aside.unlink()
        removed.append(aside)
    return removed


def _is_abandoned(folder: Path) -> bool:
    marker = folder / STAGING_MARKER
    if not marker.is_file():
        return _is_empty_folder(folder)  # killed between making the folder and marking it
    try:
        owner = json.loads(marker.read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (ValueError, KeyError, TypeError, OSError):
        return False
    return host == socket.gethostname() and not _process_alive(pid)


def _owner_is_gone(staging_name: str) -> bool:
    """Whether the run that made a staging file (``.NAME.partial-HOST-PID-XXXXXXXX``) ran on this machine and is
    gone."""
    host_and_pid, _, _ = staging_name.rpartition("-")
    host, _, pid = host_and_pid.rpartition("-")
    return host.endswith(f".partial-{socket.gethostname()}") and pid.isdigit() and not _process_alive(int(pid))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


__all__ = ["OutputExistsError", "check_output", "staged_folder", "staged_file", "clean_stale_staging", "STAGING_MARKER"]
