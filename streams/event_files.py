"""Events as people write them into files: JSON Lines, a JSON array, or pretty-printed objects
one after another, each checked with the worker's own decoder before anything is sent.

``cdp produce`` reads its input with :func:`read_events`, so a file that would become dead
letters is refused with the line and the reason instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from streams.codec import Codec, DecodeError
from streams.events import Event, EventKind


@dataclass(frozen=True)
class Checked:
    line: int
    """Where the event starts in the input, counted from 1."""
    value: bytes
    """The event as one line of compact JSON: what the decoder checked, and what is sent."""
    event: Event | None
    problem: str | None = None


def documents(text: str) -> Iterator[tuple[int, object | None, str | None]]:
    """(line, parsed JSON, None) for every JSON document in ``text``, elements of a top-level
    array one by one; (line, None, error) for what does not parse, resuming at the next line."""
    decoder = json.JSONDecoder()
    position, end = 0, len(text)
    while True:
        while position < end and text[position].isspace():
            position += 1
        if position >= end:
            return
        line = text.count("\n", 0, position) + 1
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            yield line, None, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            next_line = text.find("\n", position)
            position = end if next_line < 0 else next_line + 1
            continue
        if isinstance(value, list):
            for element in value:
                yield line, element, None
        else:
            yield line, value, None


def read_events(text: str, kind: EventKind, codec: Codec) -> list[Checked]:
    """Every event of ``text``, decoded and validated as the worker would."""
    checked = []
    for line, value, error in documents(text):
        if error is not None:
            checked.append(Checked(line, b"", None, error))
            continue
        compact = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            event = codec.decode(kind, compact)
        except DecodeError as exc:
            checked.append(Checked(line, compact, None, f"{exc.reason.value}: {exc.detail}"))
            continue
        checked.append(Checked(line, compact, event))
    return checked
