"""The worker runs with a read-only root file system, as the Kubernetes pods do
(``readOnlyRootFilesystem``), writing only to its data directory and a temporary directory
(``/data`` and the ``/tmp`` emptyDir there).

The worker runs in a mount namespace of its own (``unshare -m``) in which ``/`` is
remounted read-only and its data and temporary directories are fresh tmpfs mounts; the
rest of the machine is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.processes import local_http, wait_ready
from streams.runtime.topics import ensure_topics

from .conftest import WORKER_READY_TIMEOUT_S, settings_from, wait_until, worker_env

pytestmark = pytest.mark.integration

# Printed by the wrapper once it has shown that the root file system refuses writes.
READ_ONLY_MARK = "root file system is read-only"


def test_the_worker_needs_no_writable_root_file_system(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    assert shutil.which("unshare"), "util-linux unshare is needed"
    data, temporary = tmp_path / "data", tmp_path / "tmp"
    data.mkdir()
    temporary.mkdir()
    env = worker_env(
        broker, tmp_path, CDP_DATA_DIR=str(data), TMPDIR=str(temporary), HOME="/nonexistent"
    )
    settings = settings_from(env)
    ensure_topics(broker.bootstrap, settings)
    # Somewhere the test's own user may write outside the namespace: the virtualenv.
    probe = Path(sys.prefix) / f"write-probe-{uuid.uuid4().hex}"
    script = (
        "set -e; mount -o remount,bind,ro /;"
        f" mount -t tmpfs tmpfs {data}; mount -t tmpfs tmpfs {temporary};"
        f' if touch {probe} 2>/dev/null; then rm -f {probe}; exit 3; fi; echo "{READ_ONLY_MARK}";'
        f" exec {sys.executable} -m streams worker"
    )
    log_file = tmp_path / "worker.log"
    with open(log_file, "ab") as output:
        process = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        api = f"http://127.0.0.1:{env['CDP_WEB_PORT']}"
        ready = wait_ready(api, process, WORKER_READY_TIMEOUT_S)
        log = log_file.read_text(errors="replace")
        assert ready, f"not ready (exit code {process.poll()}):\n{log[-3000:]}"
        assert READ_ONLY_MARK in log

        visitor = f"ro-{uuid.uuid4().hex[:8]}"
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for number in range(10):
            event = {
                "event_id": f"{visitor}-{number}",
                "occurred_at": int(time.time() * 1000),
                "identity": {"anonymous_id": visitor},
                "url": "https://shop.example/toys",
                "category": "toys",
            }
            producer.produce(settings.input_topic(EventKind.PAGE_VIEW), json.dumps(event).encode())
        assert producer.flush(10) == 0

        def folded() -> bool:
            response = local_http().get(f"{api}/profiles", params={"anonymous_id": visitor})
            return response.status_code == 200 and response.json()["views"]["count"] == 10

        wait_until(folded, timeout=30)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log = log_file.read_text(errors="replace")
    assert "Read-only file system" not in log
    assert process.returncode == 0, log[-3000:]
    assert not os.path.exists(probe)
