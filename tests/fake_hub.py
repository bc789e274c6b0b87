"""A fake Hugging Face Hub on 127.0.0.1 for tests: the resolve API that ``hf_hub_download`` talks to, for real.

The suite runs with ``HF_HUB_OFFLINE=1``; the ``hub`` fixture points ``huggingface_hub`` at this server and turns
offline mode off for one test."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import urllib.parse

import huggingface_hub.constants
import pytest

HUB_COMMIT = "e" * 40


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    """The Hub's ``/[datasets/]{repo}/resolve/{revision}/{file}``: the headers hf_hub_download reads, then the
    bytes. ``files`` maps ``(repo path, revision, filename)`` to bytes, e.g. ``("bioscan-ml/BarcodeBERT", "main",
    "config.json")`` or ``("datasets/bioscan-ml/BIOSCAN-5M", "eeefb30", ...)``."""

    files: dict = {}
    requests: list = []
    stall_after: int | None = None  # stop sending (and hang) after this many bytes of a body
    stalled = threading.Event()

    def _answer(self, with_body: bool):
        FakeHubHandler.requests.append((self.command, self.path, self.headers.get("authorization"),
                                        self.headers.get("Range")))
        repo, _, rest = self.path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        data = FakeHubHandler.files.get((repo, revision, urllib.parse.unquote(filename)))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", HUB_COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if with_body and FakeHubHandler.stall_after is not None:
            self.wfile.write(data[start:FakeHubHandler.stall_after])
            self.wfile.flush()
            FakeHubHandler.stalled.set()
            time.sleep(60)
        elif with_body:
            self.wfile.write(data[start:])

    def do_HEAD(self):
        self._answer(with_body=False)

    def do_GET(self):
        self._answer(with_body=True)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch):
    """huggingface_hub pointed at a fake Hub on 127.0.0.1, online (the suite runs with HF_HUB_OFFLINE=1)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHubHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    FakeHubHandler.files, FakeHubHandler.requests, FakeHubHandler.stall_after = {}, [], None
    FakeHubHandler.endpoint = endpoint
    FakeHubHandler.stalled.clear()
    yield FakeHubHandler
    httpd.shutdown()
