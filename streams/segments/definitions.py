"""Segment definitions: YAML + CEL, validated and compiled once at load time.

The YAML format is documented in ``default_segments.yaml``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.expressions import STRING_LITERAL, cel, mask_string_literals
from streams.profiles.model import Profile
from streams.rule_files import field_reader, read_entries
from streams.segments.clock import ClockTerm, clock_terms, with_clock_paths
from streams.segments.view import (
    CEL_MAPS,
    CEL_PATHS,
    CEL_TOP_LEVEL,
    cel_sources,
    cel_variable,
    cel_view,
    flat_variables,
    ms_to_datetime,
)

_GROUPS = frozenset(p.partition(".")[0] for p in CEL_PATHS if "." in p)
# An expression split into code and its string literals (the odd pieces), for the rewrite.
_STRING_LITERAL_PIECES = re.compile(f"({STRING_LITERAL.pattern})")
_PROFILE_REF = re.compile(r"\bprofile\b(\s*\.\s*([A-Za-z_]\w*)(\s*\.\s*([A-Za-z_]\w*))?)?")
# The variable itself, not a member of something else (`x.profile`).
_PROFILE_VARIABLE = re.compile(r"(?<![.\w])" + _PROFILE_REF.pattern)
# How a map is read by a literal key: `m["k"]`, `m.k` (not a method, `m.size()`), `"k" in m`.
_PLAIN_LITERAL = r"""(?:"([^"\\]*)"|'([^'\\]*)')"""
_INDEXED = re.compile(r"\s*\[\s*" + _PLAIN_LITERAL + r"\s*\]")
_MEMBER = re.compile(r"\s*\.\s*([A-Za-z_]\w*)(?!\w)(?!\s*\()")
_TESTED = re.compile(_PLAIN_LITERAL + r"\s+in\s*$")
# What may stand before the literal of `"k" in m` without taking it as its operand.
_BEFORE_TESTED = ("(", "&&", "||", "?", ":", ",")


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    # A definition is its name and expression (equal, and hashed, by them alone: evaluation
    # looks up what it derived from sets of definitions for every event).
    name: str
    when: str
    program: cel.Program = field(repr=False, compare=False)
    description: str = field(default="", compare=False)
    # True when the expression reads `now`: membership can change without an event.
    time_based: bool = field(default=False, compare=False)
    # Paths below `profile` the expression reads: as variables of their own when `flat`
    # (see flattened), else in the `profile` map (streams.segments.view.cel_view).
    paths: frozenset[str] = field(default=frozenset(), compare=False)
    # The Profile attributes those paths are computed from: the expression's result can
    # change only when one of these does, or one of `keyed_sources` at one of its keys, or
    # (see `clock`) the clock.
    sources: frozenset[str] = field(default=frozenset(), compare=False)
    # Maps read by literal keys alone (literal_keys), as Profile attributes and by path.
    keyed_sources: tuple[tuple[str, frozenset[str]], ...] = field(default=(), compare=False)
    keys: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False)
    # True when `program` is the expression flattened (see flattened).
    flat: bool = field(default=False, compare=False)
    # Where the clock enters the expression (streams.segments.clock): no terms when it
    # does not, None when it does in a form not analysed (then it runs at every change).
    clock: tuple[ClockTerm, ...] | None = field(default=(), compare=False)


def load_segments(path: Path | None = None) -> list[SegmentDefinition]:
    """Load, compile and check segment definitions (``None``: the shipped defaults)."""
    source, entries = read_entries(path, "default_segments.yaml", "segments")
    empty = Profile.new("definition-check")
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    definitions = []
    for name, entry in entries:
        read = field_reader(source, name, entry, {"when", "description", "time_based"})
        when: str = read.get("when", str, check=lambda s: bool(s.strip()))
        description: str = read.get("description", str, "")
        try:
            program = cel.compile(when)
        except Exception as exc:  # the extension raises ValueError; be liberal
            raise read.fail(f"CEL syntax error: {exc}") from exc
        uses_now = "now" in program.variables()
        time_based: bool = read.get("time_based", bool, uses_now)
        if uses_now and not time_based:
            raise read.fail("expression uses 'now' but time_based is false")
        paths = referenced_paths(when)
        unknown = sorted(paths - CEL_PATHS)
        if unknown:
            raise read.fail(f"unknown profile field(s): {', '.join(unknown)}")
        flat = flattened(when)
        keys: dict[str, frozenset[str]] = {}
        if flat is not None:
            program, paths = flat
            keys = literal_keys(program.source, paths)
        whole = cel_sources(paths - keys.keys())
        keyed = {a: k for path, k in keys.items() for a in cel_sources([path]) if a not in whole}
        definition = SegmentDefinition(
            name,
            when,
            program,
            description,
            time_based,
            paths,
            whole,
            tuple(sorted(keyed.items())),
            keys,
            flat=flat is not None,
            clock=with_clock_paths(clock_terms(when), paths),
        )
        try:
            result = program.execute(cel_variables((definition,), empty, now_ms))
        except Exception as exc:
            raise read.fail(f"expression fails on an empty profile: {exc}") from exc
        if not isinstance(result, bool):
            raise read.fail(f"expression must be a bool, got {type(result).__name__}")
        definitions.append(definition)
    return definitions


def cel_variables(
    definitions: Sequence[SegmentDefinition], profile: Profile, now_ms: int
) -> dict[str, Any]:
    """The variables ``definitions`` are evaluated over, for ``profile`` at ``now_ms``."""
    flat, keys, nested, clock = _reads(tuple(definitions))
    variables = flat_variables(profile, flat, keys, now_ms)
    if nested:
        variables["profile"] = cel_view(profile, nested, now_ms)
    if clock:
        variables["now"] = ms_to_datetime(now_ms)
    return variables


@functools.lru_cache(maxsize=64)
def _reads(
    definitions: tuple[SegmentDefinition, ...],
) -> tuple[frozenset[str], dict[str, frozenset[str]], frozenset[str], bool]:
    """The paths ``definitions`` read as variables, the keys of those maps among them that
    all read by literal keys alone, the paths they read in the ``profile`` map, and whether
    they read the clock; worked out once per set of definitions, not at every evaluation."""
    flat = [d for d in definitions if d.flat]
    read_whole = {p for d in flat for p in d.paths - d.keys.keys()}
    keys: dict[str, frozenset[str]] = {}
    for d in flat:
        for path, wanted in d.keys.items():
            if path not in read_whole:
                keys[path] = keys.get(path, frozenset()) | wanted
    nested = minimal_paths(p for d in definitions if not d.flat for p in d.paths)
    paths = frozenset(p for d in flat for p in d.paths)
    return paths, keys, nested, any(d.time_based for d in definitions)


def flattened(expression: str) -> tuple[cel.Program, frozenset[str]] | None:
    """``expression`` compiled to read each ``profile`` path as a variable of its own, and
    the paths it reads; ``None`` when it reads ``profile`` otherwise (whole, or indexed).

    The CEL binding tries several conversions on every map key before the string one, so
    the nested ``profile`` map costs about as much again as the values in it. Flattened,
    ``profile.orders.count`` reads ``profile__orders__count``
    (:func:`~streams.profiles.model.cel_variable`) and ``profile.orders["count"]`` reads
    ``profile__orders["count"]``. A rewrite that does not compile is not used, nor one of
    an expression with triple-quoted strings, whose quoting the rewrite does not follow.
    """
    if "'''" in expression or '"""' in expression:
        return None
    paths: set[str] = set()
    whole = False

    def variable(match: re.Match[str]) -> str:
        nonlocal whole
        head, tail = match.group(2), match.group(4)
        if head is None:
            whole = True
            return match.group(0)
        path = _path(head, tail)
        # A member of a map that is not a group stays a member of the variable.
        rest = "" if "." in path else match.group(3) or ""
        paths.add(path)
        return cel_variable(path) + rest

    # The odd pieces are string literals, left as they are.
    pieces = _STRING_LITERAL_PIECES.split(expression)
    rewritten = "".join(
        piece if i % 2 else _PROFILE_VARIABLE.sub(variable, piece) for i, piece in enumerate(pieces)
    )
    if whole or not paths <= CEL_PATHS:
        return None
    try:
        program = cel.compile(rewritten)
    except ValueError:
        return None
    if "profile" in program.variables():
        return None
    return program, frozenset(paths)


def literal_keys(source: str, paths: Iterable[str]) -> dict[str, frozenset[str]]:
    """The maps among ``paths`` (:data:`CEL_MAPS`) that the flattened expression ``source``
    reads by literal keys alone, each with those keys.

    Such an expression gives the same result over the map restricted to those keys, and
    its result cannot change while their entries do not; any other read (``size(m)``,
    ``m.exists(..)``, ``k in m`` for a computed ``k``) leaves the map out.
    """
    masked = mask_string_literals(source)
    found: dict[str, frozenset[str]] = {}
    for path in CEL_MAPS.intersection(paths):
        uses = re.finditer(rf"(?<![.\w]){cel_variable(path)}(?!\w)", masked)
        keys = [_literal_key(source, use.start(), use.end()) for use in uses]
        if keys and None not in keys:
            found[path] = frozenset(key for key in keys if key is not None)
    return found


def _literal_key(source: str, start: int, end: int) -> str | None:
    """The literal key the map variable at ``source[start:end]`` is read by, if it is."""
    read = _INDEXED.match(source, end) or _MEMBER.match(source, end)
    if read is not None:
        return next(g for g in read.groups() if g is not None)
    tested = _TESTED.search(source, 0, start)
    if tested is None or source[end:].lstrip()[:1] in (".", "["):
        return None
    before = source[: tested.start()].rstrip()
    if before and not before.endswith(_BEFORE_TESTED):
        return None
    return next(g for g in tested.groups() if g is not None)


def referenced_paths(expression: str) -> frozenset[str]:
    """The ``profile`` paths ``expression`` reads, for :func:`~streams.segments.view.cel_view`.

    ``profile.a.b`` gives ``a.b`` (or ``a`` when ``a`` is not a group); a bare or indexed
    ``profile`` gives every top-level path. Over-approximating is harmless: it only costs
    conversion time.
    """
    paths: set[str] = set()
    for match in _PROFILE_REF.finditer(STRING_LITERAL.sub('""', expression)):
        head, tail = match.group(2), match.group(4)
        if head is None:
            return frozenset(CEL_TOP_LEVEL)
        paths.add(_path(head, tail))
    return minimal_paths(paths)


def _path(head: str, tail: str | None) -> str:
    """The path ``profile.head.tail`` reads: ``head.tail`` for a group's member, else
    ``head`` (members of other maps, ``views_by_category.toys``, are map keys)."""
    return f"{head}.{tail}" if tail and head in _GROUPS else head


def minimal_paths(paths: Iterable[str]) -> frozenset[str]:
    """``paths`` without members of groups also present whole (they would be built twice)."""
    wanted = frozenset(paths)
    return frozenset(p for p in wanted if "." not in p or p.partition(".")[0] not in wanted)
