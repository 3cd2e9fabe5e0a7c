"""Mark nothing for discovery (replaces ``faust.utils.venusian.attach``; faust-streaming 0.15)."""

from __future__ import annotations

from typing import Any

from faust.utils import venusian


def mark_nothing_for_discovery() -> None:
    """Skip the marks Faust's decorators leave for autodiscovery, which the app has off.

    ``@app.agent`` and ``@app.page`` mark what they decorate for venusian, whose mark reads
    the caller's source file and searches ``sys.modules`` for its module: 60-90 ms of every
    worker start for the app's eleven agents and views, for a scan that never runs.
    """
    if getattr(venusian.attach, "marks_nothing", False):
        return

    def attach(*args: Any, **kwargs: Any) -> None:
        return None

    attach.marks_nothing = True  # type: ignore[attr-defined]
    venusian.attach = attach
