"""The live view of ``cdp demo``: what goes in, what comes out, and where to look next.

:class:`DemoStats` is plain bookkeeping that the demo loop feeds with what it produces and
with the records it reads back from the output topics; :func:`render` turns a snapshot of
it into a ``rich`` renderable (for ``rich.live.Live``) and :func:`summary` into the closing
report of ``cdp demo --duration N``. Nothing here touches Kafka, so it is tested by
rendering to a recording console.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

THROUGHPUT_WINDOW_S = 5.0
FEED_SIZE = 12
# Throughput is kept in 100 ms buckets so a loop reporting every event stays O(1) in memory.
_BUCKET_S = 0.1
_SHORT_ID = 8


def _short(profile_id: str) -> str:
    return profile_id if len(profile_id) <= _SHORT_ID else profile_id[:_SHORT_ID] + "…"


def _clock_time(epoch_ms: Any) -> str:
    """``HH:MM:SS`` (UTC) of an output's ``occurred_at``; blank when it is not a number."""
    if not isinstance(epoch_ms, int | float) or isinstance(epoch_ms, bool):
        return "        "
    try:
        return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "        "


class DemoStats:
    """Counters of one demo run. Records are the output topics' JSON objects, read leniently:
    the view must keep running whatever a worker writes."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.produced: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.segment_entries: Counter[str] = Counter()
        self.segment_exits: Counter[str] = Counter()
        self.triggers: Counter[str] = Counter()
        # Sends held back to a later time (quiet hours, a frequency cap, a stay), by journey
        # and by reason: at night every send of the shipped journeys is one of these.
        self.deferred: Counter[str] = Counter()
        self.deferred_reasons: Counter[str] = Counter()
        self.merges = 0
        self.profiles: set[str] = set()
        # (style, line) pairs, newest last.
        self.feed: deque[tuple[str, str]] = deque(maxlen=FEED_SIZE)
        self.last_dead_letter: str | None = None
        self._buckets: deque[list[float]] = deque()  # [bucket start, events]

    # -- recording

    def record_produced(self, kind: str, n: int = 1) -> None:
        self.produced[kind] += n
        now = self._clock()
        start = now - now % _BUCKET_S
        buckets = self._buckets
        if buckets and buckets[-1][0] == start:
            buckets[-1][1] += n
        else:
            buckets.append([start, float(n)])
        self._expire(now)

    def record_segment_change(self, record: Mapping[str, Any]) -> None:
        profile = str(record.get("profile_id", "?"))
        segment = str(record.get("segment", "?"))
        change = str(record.get("change", "?"))
        if change == "exited":
            self.segment_exits[segment] += 1
            style = "yellow"
        else:
            self.segment_entries[segment] += 1
            style = "green"
        self.profiles.add(profile)
        when = _clock_time(record.get("occurred_at"))
        self.feed.append((style, f"{when} {_short(profile)} {change} {segment}"))

    def record_trigger(self, record: Mapping[str, Any]) -> None:
        profile = str(record.get("profile_id", "?"))
        journey = str(record.get("journey", "?"))
        step = record.get("step")
        email = record.get("email")
        self.triggers[journey] += 1
        self.profiles.add(profile)
        target = f" → {email}" if email else ""
        label = f"{journey}/{step}" if step else journey
        when = _clock_time(record.get("occurred_at"))
        self.feed.append(("cyan", f"{when} {_short(profile)} triggered {label}{target}"))

    def record_journey_event(self, record: Mapping[str, Any]) -> None:
        """Counts the deferred sends; the other journey decisions are not shown."""
        if record.get("kind") != "suppressed" or record.get("action") != "deferred":
            return
        profile = str(record.get("profile_id", "?"))
        journey = str(record.get("journey", "?"))
        step = record.get("step")
        reason = str(record.get("reason", "?"))
        self.deferred[journey] += 1
        self.deferred_reasons[reason] += 1
        self.profiles.add(profile)
        label = f"{journey}/{step}" if step else journey
        until = _clock_time(record.get("due_at")).strip()
        self.feed.append(
            (
                "blue",
                f"{_clock_time(record.get('occurred_at'))} {_short(profile)} deferred {label}"
                f" ({reason})" + (f" to {until} UTC" if until else ""),
            )
        )

    def record_merge(self, record: Mapping[str, Any]) -> None:
        merged_away = str(record.get("from_profile_id", "?"))
        into = str(record.get("into_profile_id", "?"))
        identifiers = record.get("identifiers")
        count = len(identifiers) if isinstance(identifiers, list) else 0
        self.merges += 1
        self.profiles.add(into)
        self.feed.append(
            (
                "magenta",
                f"{_clock_time(record.get('occurred_at'))}  {_short(merged_away)} merged into "
                f"{_short(into)} ({count} identifiers)",
            )
        )

    def record_dead_letter(self, record: Mapping[str, Any]) -> None:
        reason = str(record.get("reason", "unknown"))
        self.dead_letters[reason] += 1
        detail = record.get("detail")
        topic = record.get("topic")
        where = f" on {topic}" if topic else ""
        self.last_dead_letter = f"{reason}{where}: {detail}" if detail else f"{reason}{where}"

    # -- reading

    def elapsed_s(self) -> float:
        return self._clock() - self.started

    def events_per_second(self) -> float:
        """Produced events per second over the last ``THROUGHPUT_WINDOW_S`` seconds."""
        now = self._clock()
        self._expire(now)
        # Early in a run the window is not full yet; divide by the time actually covered.
        span = min(THROUGHPUT_WINDOW_S, max(now - self.started, _BUCKET_S))
        return sum(count for _, count in self._buckets) / span

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - THROUGHPUT_WINDOW_S:
            buckets.popleft()

    @property
    def total_produced(self) -> int:
        return sum(self.produced.values())


# -- rendering


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _counter_line(counter: Counter[str]) -> str:
    return " · ".join(f"{name} {_number(n)}" for name, n in sorted(counter.items()))


def _segments_table(stats: DemoStats) -> Table:
    table = Table(title="Segments", box=box.SIMPLE_HEAD, expand=True, title_justify="left")
    table.add_column("segment", style="bold")
    table.add_column("entered", justify="right", style="green")
    table.add_column("exited", justify="right", style="yellow")
    table.add_column("members", justify="right")
    names = sorted(set(stats.segment_entries) | set(stats.segment_exits))
    for name in names:
        entered, exited = stats.segment_entries[name], stats.segment_exits[name]
        # Members now = entries - exits, since every exit follows an entry of the same profile.
        table.add_row(name, _number(entered), _number(exited), _number(entered - exited))
    if not names:
        table.add_row(Text("waiting for segment changes…", style="dim"), "", "", "")
    return table


def _journeys_table(stats: DemoStats) -> Table:
    table = Table(title="Journeys", box=box.SIMPLE_HEAD, expand=True, title_justify="left")
    table.add_column("journey", style="bold")
    table.add_column("triggers", justify="right", style="cyan")
    table.add_column("deferred", justify="right", style="blue")
    for name in sorted(set(stats.triggers) | set(stats.deferred)):
        table.add_row(name, _number(stats.triggers[name]), _number(stats.deferred[name]))
    if not stats.triggers and not stats.deferred:
        table.add_row(Text("waiting for triggers…", style="dim"), "", "")
    return table


def _feed_panel(stats: DemoStats) -> Panel:
    lines = Text()
    for style, line in stats.feed:
        if lines:
            lines.append("\n")
        lines.append(line, style=style)
    if not stats.feed:
        lines.append("nothing yet", style="dim")
    return Panel(
        lines,
        title="Latest segment changes, triggers, deferred sends and merges",
        title_align="left",
        height=FEED_SIZE + 2,
    )


def _dead_letter_line(stats: DemoStats) -> Text:
    total = sum(stats.dead_letters.values())
    line = Text("Dead letters: ", style="bold")
    if not total:
        line.append("0", style="green")
        return line
    line.append(_number(total), style="red")
    line.append(f" ({_counter_line(stats.dead_letters)})")
    if stats.last_dead_letter:
        line.append(f" — last: {stats.last_dead_letter}", style="dim")
    return line


def _urls_panel(api_urls: Iterable[str]) -> Panel:
    text = Text()
    for url in api_urls:
        if text:
            text.append("\n")
        text.append(url, style=f"link {url}")
    return Panel(
        text or Text("API not started", style="dim"), title="Try the API", title_align="left"
    )


def _headline(stats: DemoStats, elapsed_s: float, duration_s: float | None) -> RenderableType:
    grid = Table.grid(padding=(0, 3))
    for _ in range(5):
        grid.add_column()
    running = f"{elapsed_s:,.0f} s" + (f" / {duration_s:,.0f} s" if duration_s else "")
    grid.add_row(
        Text.assemble(("running ", "dim"), (running, "bold")),
        Text.assemble((_number(stats.events_per_second()), "bold green"), (" events/s", "dim")),
        Text.assemble((_number(stats.total_produced), "bold"), (" events produced", "dim")),
        Text.assemble((_number(len(stats.profiles)), "bold"), (" profiles in outputs", "dim")),
        Text.assemble((_number(stats.merges), "bold magenta"), (" identity merges", "dim")),
    )
    if not stats.produced:
        return grid
    return Group(grid, Text(_counter_line(stats.produced), style="dim"))


def progress_line(stats: DemoStats, elapsed_s: float, duration_s: float | None) -> str:
    """One plain line of the run so far, for output that is not a terminal (a pipe, CI)."""
    running = f"{elapsed_s:,.0f} s" + (f" / {duration_s:,.0f} s" if duration_s else "")
    return (
        f"{running}: {stats.total_produced:,} events produced "
        f"({stats.events_per_second():,.0f}/s), {len(stats.profiles):,} profiles, "
        f"{sum(stats.segment_entries.values()):,} segment entries, "
        f"{sum(stats.segment_exits.values()):,} exits, {sum(stats.triggers.values()):,} "
        f"journey triggers ({sum(stats.deferred.values()):,} deferred), {stats.merges:,} merges, "
        f"{sum(stats.dead_letters.values()):,} dead letters"
    )


def render(
    stats: DemoStats, *, api_urls: list[str], elapsed_s: float, duration_s: float | None
) -> RenderableType:
    """One frame of the live view."""
    tables = Table.grid(expand=True, padding=(0, 2))
    tables.add_column(ratio=3)
    tables.add_column(ratio=2)
    tables.add_row(_segments_table(stats), _journeys_table(stats))
    return Group(
        Panel(
            _headline(stats, elapsed_s, duration_s),
            title="cdp-streams demo",
            title_align="left",
            border_style="blue",
        ),
        tables,
        _feed_panel(stats),
        _urls_panel(api_urls),
        _dead_letter_line(stats),
    )


def summary(stats: DemoStats, *, elapsed_s: float | None = None) -> RenderableType:
    """The closing report: totals of the whole run."""
    elapsed = stats.elapsed_s() if elapsed_s is None else elapsed_s
    rate = stats.total_produced / elapsed if elapsed > 0 else 0.0
    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("duration", f"{elapsed:,.1f} s")
    table.add_row(
        "events produced", f"{_number(stats.total_produced)} ({_number(rate)}/s on average)"
    )
    if stats.produced:
        table.add_row("", _counter_line(stats.produced))
    table.add_row("profiles in outputs", _number(len(stats.profiles)))
    table.add_row("segment entries", _number(sum(stats.segment_entries.values())))
    table.add_row("segment exits", _number(sum(stats.segment_exits.values())))
    table.add_row("journey triggers", _number(sum(stats.triggers.values())))
    table.add_row("journey sends deferred", _number(sum(stats.deferred.values())))
    if stats.deferred_reasons:
        table.add_row("", _counter_line(stats.deferred_reasons))
    table.add_row("identity merges", _number(stats.merges))
    table.add_row("dead letters", _number(sum(stats.dead_letters.values())))
    # One above the other: printed once, often 80 columns wide, names must not be cut.
    return Panel(
        Group(table, _segments_table(stats), _journeys_table(stats), _dead_letter_line(stats)),
        title="cdp-streams demo — summary",
        title_align="left",
        border_style="blue",
    )
