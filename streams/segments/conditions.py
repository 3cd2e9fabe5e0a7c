"""A CEL condition over the profile outside a segment file: what a journey's ``if`` runs.

Compiled and checked as segment expressions are (known paths, a bool on an empty profile),
evaluated over the nested view of only the paths it reads.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.expressions import cel
from streams.profiles.model import Profile
from streams.segments.definitions import minimal_paths, referenced_paths
from streams.segments.view import CEL_PATHS, cel_view, ms_to_datetime


def compile_condition(expression: str) -> Callable[[Profile, int], bool]:
    """``expression`` as ``test(profile, now_ms) -> bool``; raises ValueError naming the
    problem. An expression that fails on a profile is false there."""
    try:
        program = cel.compile(expression)
    except Exception as exc:  # the extension raises ValueError; be liberal
        raise ValueError(f"CEL syntax error: {exc}") from exc
    paths = referenced_paths(expression)
    unknown = sorted(paths - CEL_PATHS)
    if unknown:
        raise ValueError(f"unknown profile field(s): {', '.join(unknown)}")
    nested = tuple(minimal_paths(paths))
    clock = "now" in program.variables()

    def test(profile: Profile, now_ms: int) -> bool:
        variables: dict[str, object] = {"profile": cel_view(profile, nested, now_ms)}
        if clock:
            variables["now"] = ms_to_datetime(now_ms)
        try:
            return program.execute(variables) is True
        except Exception:
            return False

    try:
        result = program.execute(
            {"profile": cel_view(Profile.new("condition-check"), nested), "now": ms_to_datetime(0)}
        )
    except Exception as exc:
        raise ValueError(f"expression fails on an empty profile: {exc}") from exc
    if not isinstance(result, bool):
        raise ValueError(f"expression must be a bool, got {type(result).__name__}")
    return test
