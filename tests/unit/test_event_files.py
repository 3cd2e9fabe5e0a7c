"""Reading events as people write them: JSON Lines, arrays, pretty-printed objects."""

from __future__ import annotations

import json

import pytest

from streams.codec import Codec
from streams.event_files import documents, read_events
from streams.events import EventKind
from streams.settings import PROJECT_ROOT

CODEC = Codec(PROJECT_ROOT / "schemas")
VIEW = {
    "event_id": "e-1",
    "occurred_at": "2026-11-23T10:00:00Z",
    "identity": {"anonymous_id": "a-1"},
    "url": "https://shop.example/toys",
}


def view(event_id: str) -> dict[str, object]:
    return {**VIEW, "event_id": event_id}


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(json.dumps(view(f"e-{n}")) for n in range(3)) + "\n",
        json.dumps([view(f"e-{n}") for n in range(3)]),
        "\n\n".join(json.dumps(view(f"e-{n}"), indent=2) for n in range(3)),
        "".join(json.dumps(view(f"e-{n}")) for n in range(3)),
    ],
    ids=["json-lines", "array", "pretty-printed", "back-to-back"],
)
def test_every_layout_gives_the_same_events(text: str) -> None:
    checked = read_events(text, EventKind.PAGE_VIEW, CODEC)
    assert [c.event.event_id for c in checked if c.event] == ["e-0", "e-1", "e-2"]
    assert all(c.problem is None for c in checked)


def test_a_bad_line_is_reported_with_its_number_and_the_rest_still_read() -> None:
    lines = [
        json.dumps(view("e-1")),
        "{not json",
        json.dumps({**view("e-3"), "identity": None}),
        json.dumps({k: v for k, v in view("e-4").items() if k != "occurred_at"}),
        json.dumps(view("e-5")),
    ]
    checked = read_events("\n".join(lines), EventKind.PAGE_VIEW, CODEC)
    problems = {c.line: c.problem for c in checked if c.problem}
    assert set(problems) == {2, 3, 4}
    assert problems[2] is not None
    assert problems[2].startswith("invalid JSON")
    assert problems[3] is not None
    assert problems[3].startswith("missing_identity")
    assert problems[4] is not None
    assert "occurred_at" in problems[4]
    assert [c.event.event_id for c in checked if c.event] == ["e-1", "e-5"]


def test_pretty_printed_objects_start_where_their_brace_is() -> None:
    text = json.dumps(view("e-1"), indent=2) + "\n" + json.dumps(view("e-2"), indent=2)
    starts = [line for line, _, _ in documents(text)]
    assert starts == [1, 1 + text.splitlines().index("{", 1)]


def test_the_value_sent_is_the_compact_event_the_decoder_checked() -> None:
    (checked,) = read_events(json.dumps(view("e-1"), indent=4), EventKind.PAGE_VIEW, CODEC)
    assert b"\n" not in checked.value
    assert CODEC.decode(EventKind.PAGE_VIEW, checked.value).event_id == "e-1"


def test_the_wrong_kind_is_refused() -> None:
    (checked,) = read_events(json.dumps(view("e-1")), EventKind.ORDER, CODEC)
    assert checked.event is None
    assert checked.problem is not None
    assert checked.problem.startswith("schema_violation")
