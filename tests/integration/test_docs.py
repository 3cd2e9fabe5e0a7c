"""Every example in README.md and docs/ runs, against a real broker and worker.

Fenced blocks are read from the Markdown as a reader copies them: ``sh`` blocks run in bash
from the repository's root, ``python`` blocks in this interpreter, and each line of a
``jsonc`` block of input events must decode as the worker decodes it. A block that cannot
run here says why in its fence (```sh not-run: needs a Kubernetes cluster), visibly.
The examples address the development defaults (broker 127.0.0.1:9092, API 127.0.0.1:6066);
the test points those at its own broker and worker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.codec import Codec
from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker, free_port
from streams.settings import PROJECT_ROOT

from .conftest import Worker, worker_env

DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
RUNNABLE = ("sh", "python", "jsonc")
FENCE = re.compile(r"^```(\S*)(.*)$")
NOT_RUN = re.compile(r"^\s*not-run:\s*(\S.*)$")
# A block may need the worker to catch up with what an earlier one sent.
RETRY_FOR_S = 30.0


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    language: str
    reason_not_run: str | None
    code: str

    @property
    def name(self) -> str:
        return f"{self.document}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1
        not_run = NOT_RUN.match(opened.group(2))
        found.append(
            Block(
                str(path.relative_to(PROJECT_ROOT)),
                start + 1,
                opened.group(1),
                not_run.group(1) if not_run else None,
                "\n".join(body) + "\n",
            )
        )
    return found


ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks(path)]


def test_every_example_runs_or_says_why_not() -> None:
    for block in ALL_BLOCKS:
        if block.language in RUNNABLE or block.reason_not_run is not None:
            continue
        # Pictures and listings: no commands in them.
        assert block.language in ("", "text"), f"{block.name}: unknown language {block.language}"
        command = re.search(r"^\s*(\$ |\.venv/bin/|cdp |make |curl |kubectl )", block.code, re.M)
        assert command is None, f"{block.name} holds a command: mark it sh, or not-run with why"
    assert [b for b in ALL_BLOCKS if b.language in RUNNABLE and b.reason_not_run is None]


@pytest.fixture(scope="module")
def docs_worker(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A worker on the documented topic names (prefix ``cdp.``), its own group and port."""
    tmp = tmp_path_factory.mktemp("docs")
    env = worker_env(
        broker,
        tmp,
        CDP_TOPIC_PREFIX="cdp.",
        CDP_APP_ID=f"cdp-docs-{uuid.uuid4().hex[:6]}",
        CDP_WEB_PORT=str(free_port()),
    )
    from streams.runtime.topics import ensure_topics

    from .conftest import settings_from

    settings = settings_from(env)
    ensure_topics(broker.bootstrap, settings)
    worker = Worker(settings, env, tmp / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def pointed_at(code: str, broker: EmbeddedBroker, worker: Worker) -> str:
    return code.replace("127.0.0.1:9092", broker.bootstrap).replace(
        "http://127.0.0.1:6066", worker.api
    )


def run_until_it_succeeds(
    command: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        result = subprocess.run(
            command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1)


EXAMPLES = [b for b in ALL_BLOCKS if b.language in ("sh", "python") and not b.reason_not_run]


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.name for b in EXAMPLES])
def test_the_example_runs(
    block: Block, broker: EmbeddedBroker, docs_worker: Worker
) -> None:
    worker = docs_worker
    code = pointed_at(block.code, broker, worker)
    env = {**worker.env, "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:{worker.env.get('PATH', '')}"}
    if block.language == "sh":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    result = run_until_it_succeeds(command, env)
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"


INPUT_KINDS = {
    "order_id": EventKind.ORDER,
    "campaign_id": EventKind.EMAIL,
    "url": EventKind.PAGE_VIEW,
}


def kind_of(event: dict[str, object]) -> EventKind:
    return next((kind for field, kind in INPUT_KINDS.items() if field in event), EventKind.IDENTIFY)


SAMPLES = [b for b in ALL_BLOCKS if b.language == "jsonc" and not b.reason_not_run]


@pytest.mark.parametrize("block", SAMPLES, ids=[b.name for b in SAMPLES])
def test_the_sample_events_decode(block: Block) -> None:
    codec = Codec(PROJECT_ROOT / "schemas")
    lines = [line for line in block.code.splitlines() if line.strip()]
    assert lines
    for line in lines:
        event = json.loads(line)
        decoded = codec.decode(kind_of(event), line.encode())
        assert decoded.event_id == event["event_id"]
