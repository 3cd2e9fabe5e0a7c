"""Where the tests keep their files: in memory, where the machine has a tmpfs for it.

Every worker a test starts opens a RocksDB database per table partition (16 here), and
RocksDB syncs about ten times to open one. On a disk whose syncs are slow, as on one CI
machine, where opening one database took up to 1.7 s, a worker spent a minute opening its
state while holding the GIL (rocksdict does not release it), so it missed heartbeats and
was not ready in time. The databases are as real on a tmpfs; what the tests check, state that
outlives a killed process, holds there too, since the page cache outlives a process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_MEMORY_TEMP_ROOT = Path("/dev/shm")
TEMP_ROOT_VARIABLE = "PYTEST_DEBUG_TEMPROOT"  # pytest's own: where tmp_path roots


def pytest_configure(config: pytest.Config) -> None:
    if TEMP_ROOT_VARIABLE not in os.environ and os.access(IN_MEMORY_TEMP_ROOT, os.W_OK):
        os.environ[TEMP_ROOT_VARIABLE] = str(IN_MEMORY_TEMP_ROOT)
