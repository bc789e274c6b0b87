"""Killing a command at a chosen point, for the tests that an interrupted run leaves nothing that loads."""

from __future__ import annotations

import signal
import subprocess
import time


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` is true (failing if it exits or ``timeout`` passes first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never reached the point to kill it at"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
