"""Downloads: from the Hub mirror through huggingface_hub at a pinned revision, else resumable over HTTP Range;
MD5-verified, lazy per split group, clear offline errors.

Real HTTP servers on 127.0.0.1 stand in for Zenodo and for the Hub's resolve API (hf_hub_download runs for real
against it); the release's own URLs cannot be reached from here."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from bioscan5m import release
from bioscan5m.data.download import ChecksumError, download, fetch
from bioscan5m.data.release import RemoteFile

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    served: list = []

    def do_GET(self):
        data = PAYLOAD
        ranged = "Range" in self.headers
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if ranged else 0
        # Recorded before answering: the client may finish reading (and the test check) before this thread resumes.
        RangeHandler.served.append((self.path, start))
        if ranged:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.served = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_verifies_and_resumes(server, tmp_path):
    remote = RemoteFile("archive.zip", (f"{server}/archive.zip",), hashlib.md5(PAYLOAD).hexdigest(), hub_revision=None)
    part = tmp_path / "archive.zip.part"
    part.write_bytes(PAYLOAD[:300_000])  # an interrupted earlier download
    path = fetch(remote, tmp_path)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert RangeHandler.served == [("/archive.zip", 300_000)]  # only the missing bytes were requested
    assert fetch(remote, tmp_path) == path and len(RangeHandler.served) == 1  # verified once, not fetched again


def test_checksum_mismatch_is_an_error_and_discards_the_download(server, tmp_path):
    remote = RemoteFile("archive.zip", (f"{server}/archive.zip",), "0" * 32, hub_revision=None)
    with pytest.raises(ChecksumError, match=r"archive\.zip: MD5 [0-9a-f]{32} does not match the published 0{32}"):
        fetch(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_file_placed_by_hand_is_reported_not_deleted(tmp_path):
    (tmp_path / "archive.zip").write_bytes(b"not the archive")
    remote = RemoteFile("archive.zip", ("http://127.0.0.1:9/archive.zip",), hashlib.md5(PAYLOAD).hexdigest())
    with pytest.raises(ChecksumError, match="Move it away and download again"):
        fetch(remote, tmp_path)
    assert (tmp_path / "archive.zip").read_bytes() == b"not the archive"


def test_offline_error_says_what_to_do(tmp_path):
    remote = RemoteFile("archive.zip", ("http://127.0.0.1:9/a.zip", "http://127.0.0.1:9/b.zip"), None)
    with pytest.raises(ConnectionError, match=r"Could not download archive\.zip; tried .*a\.zip.*b\.zip.*place it at"):
        fetch(remote, tmp_path, timeout=5)


def test_official_remotes_are_complete():
    assert release.METADATA_REMOTE.urls[0].startswith("https://zenodo.org/records/11973457/files/")
    assert release.METADATA_REMOTE.hub_revision == release.HUB_REVISION
    for group in release.SPLIT_GROUPS:
        for remote in release.IMAGE_REMOTES[("cropped_256", group)]:
            assert len(remote.md5) == 32 and remote.urls[0].endswith(remote.filename)
            assert remote.hub_revision == release.HUB_REVISION  # a pinned revision wherever an MD5 guards the file
    assert release.split_groups(["test", "val"]) == ["eval"]
    assert release.split_groups(release.SPLITS) == ["pretrain", "train", "eval"]


def test_unknown_package_and_unpublished_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "METADATA_REMOTE", RemoteFile("m.zip", ("http://127.0.0.1:9/m.zip",), None))
    (tmp_path / "m.zip").write_bytes(b"x")  # metadata already present
    with pytest.raises(ValueError, match="Unknown image package 'cropped256'"):
        download(tmp_path, package="cropped256")
    with pytest.raises(ValueError, match="No published download URL is known for 'cropped' images of the 'eval'"):
        download(tmp_path, package="cropped", split="test")


DATASET_REPO = f"datasets/{release.HUB_REPO_ID}"


def test_hub_mirror_is_fetched_at_the_pinned_revision(hub, server, tmp_path):
    hub.files[(DATASET_REPO, release.HUB_REVISION, "archive.zip")] = PAYLOAD
    remote = RemoteFile("archive.zip", (f"{server}/archive.zip",), hashlib.md5(PAYLOAD).hexdigest())
    path = fetch(remote, tmp_path)
    assert path == tmp_path / "archive.zip" and path.read_bytes() == PAYLOAD
    assert (tmp_path / "archive.zip.verified").is_file()
    paths = {path for _, path, _, _ in hub.requests}
    assert paths == {f"/datasets/{release.HUB_REPO_ID}/resolve/{release.HUB_REVISION}/archive.zip"}
    assert all(auth == "Bearer hf_test_token" for _, _, auth, _ in hub.requests)  # the user's token, as on the Hub
    assert RangeHandler.served == []  # Zenodo was never asked
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache", "archive.zip", "archive.zip.verified"]
    count = len(hub.requests)
    assert fetch(remote, tmp_path) == path and len(hub.requests) == count  # verified once: no request at all


def test_a_file_missing_from_the_hub_comes_from_zenodo(hub, server, tmp_path):
    remote = RemoteFile("archive.zip", (f"{server}/archive.zip",), hashlib.md5(PAYLOAD).hexdigest())
    assert fetch(remote, tmp_path).read_bytes() == PAYLOAD
    assert hub.requests and RangeHandler.served == [("/archive.zip", 0)]


def test_a_corrupt_hub_download_is_deleted(hub, tmp_path):
    hub.files[(DATASET_REPO, release.HUB_REVISION, "archive.zip")] = b"an error page, not the archive"
    remote = RemoteFile("archive.zip", (), hashlib.md5(PAYLOAD).hexdigest())
    with pytest.raises(ChecksumError, match="MD5 .* does not match the published"):
        fetch(remote, tmp_path)
    assert not (tmp_path / "archive.zip").exists() and not (tmp_path / "archive.zip.verified").exists()


def test_offline_mode_names_both_sources(tmp_path):
    # The suite runs with HF_HUB_OFFLINE=1: the Hub is not asked, and the error says what to do.
    remote = RemoteFile("archive.zip", ("http://127.0.0.1:9/archive.zip",), None)
    with pytest.raises(ConnectionError, match=rf"tried the Hub \({release.HUB_REPO_ID}@{release.HUB_REVISION}\).*"
                                              r"127\.0\.0\.1:9/archive\.zip.*place it at"):
        fetch(remote, tmp_path, timeout=5)


KILLED_FETCH = """
import sys
from bioscan5m.data.download import fetch
from bioscan5m.data.release import RemoteFile
fetch(RemoteFile("archive.zip", (), sys.argv[2]), sys.argv[1])
"""


def test_a_hub_download_killed_midway_leaves_no_file_and_a_rerun_completes(hub, tmp_path):
    hub.files[(DATASET_REPO, release.HUB_REVISION, "archive.zip")] = PAYLOAD
    hub.stall_after = 400_000
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    process = subprocess.Popen([sys.executable, "-c", KILLED_FETCH, str(tmp_path), hashlib.md5(PAYLOAD).hexdigest()],
                               env=env, stderr=subprocess.PIPE)
    assert hub.stalled.wait(120), process.stderr.read().decode()[-2000:] if process.poll() is not None else ""
    time.sleep(1)  # let the client write what it received
    process.kill()
    process.wait()
    assert not (tmp_path / "archive.zip").exists()   # nothing that loads as complete
    hub.stall_after = None
    assert fetch(RemoteFile("archive.zip", (), hashlib.md5(PAYLOAD).hexdigest()), tmp_path).read_bytes() == PAYLOAD


def test_a_failed_hub_attempt_never_touches_a_cache_folder_it_did_not_make(hub, server, tmp_path):
    # The suite's Hub answers 404 for this file, so the Hub attempt fails and Zenodo serves it.
    users = tmp_path / ".cache"
    (users / "huggingface").mkdir(parents=True)
    (users / "notes.txt").write_text("mine")
    (users / "huggingface" / ".gitignore").write_text("*")   # even the files the Hub library itself writes
    remote = RemoteFile("archive.zip", (f"{server}/archive.zip",), hashlib.md5(PAYLOAD).hexdigest())
    assert fetch(remote, tmp_path).read_bytes() == PAYLOAD
    assert (users / "notes.txt").read_text() == "mine" and (users / "huggingface" / ".gitignore").is_file()
    empty = tmp_path / "empty-root" / ".cache"
    empty.mkdir(parents=True)                                  # an empty .cache of the user's stays too
    fetch(remote, tmp_path / "empty-root")
    assert empty.is_dir()


def test_a_corrupt_download_deletes_only_what_this_run_wrote(hub, server, tmp_path):
    # A file already at the destination is verified, never fetched over; a bad one is reported and kept.
    hub.files[(DATASET_REPO, release.HUB_REVISION, "archive.zip")] = PAYLOAD
    (tmp_path / "archive.zip").write_bytes(b"the user's own file")
    with pytest.raises(ChecksumError, match="Move it away"):
        fetch(RemoteFile("archive.zip", (f"{server}/archive.zip",), hashlib.md5(PAYLOAD).hexdigest()), tmp_path)
    assert (tmp_path / "archive.zip").read_bytes() == b"the user's own file"
    assert hub.requests == [] and RangeHandler.served == []   # nothing was downloaded over it


def test_a_split_without_a_package_is_refused_before_anything_is_fetched(tmp_path):
    from bioscan5m.data.download import download

    with pytest.raises(ValueError, match="no image package is asked for"):
        download(tmp_path / "release", split="train")
    with pytest.raises(ValueError, match="bogus"):
        download(tmp_path / "release", package="cropped_256", split="bogus")
    assert not (tmp_path / "release").exists()
