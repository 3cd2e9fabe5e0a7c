"""Starting `cdp worker` processes and waiting until they serve (demo, tests, benchmarks)."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def spawn_worker(env: Mapping[str, str], log_file: Path | None) -> subprocess.Popen[bytes]:
    """A ``cdp worker`` child process with ``env``; its output goes to ``log_file`` (or nowhere)."""
    command = [sys.executable, "-m", "streams", "worker"]
    if log_file is None:
        return subprocess.Popen(
            command, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
    # The child keeps its own copy of the descriptor; the parent's closes with the block.
    with open(log_file, "ab") as output:
        return subprocess.Popen(command, env=dict(env), stdout=output, stderr=subprocess.STDOUT)


def spawn_collector(env: Mapping[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """A ``cdp collector`` child process with ``env``; its output goes to ``log_file``."""
    command = [sys.executable, "-m", "streams", "collector"]
    with open(log_file, "ab") as output:
        return subprocess.Popen(command, env=dict(env), stdout=output, stderr=subprocess.STDOUT)


@functools.cache
def local_http() -> httpx.Client:
    """One HTTP client for the worker API calls of this process, reused: each ``httpx.get``
    builds a client and its TLS context (the CA bundle, even for plain HTTP), about 70 ms
    of CPU a call; polling ``/ready`` every 50 ms with it took more than half a core from
    the worker being waited for."""
    return httpx.Client(timeout=5)


def wait_ready(api_url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once the worker's ``/ready`` answers 200; False if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if local_http().get(f"{api_url}/ready", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        # Often enough that a start is timed to within a few tens of milliseconds.
        time.sleep(0.05)
    return False
