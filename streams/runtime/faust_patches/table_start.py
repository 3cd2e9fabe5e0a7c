"""Start the tables at once (replaces ``TableManager.on_start``; faust-streaming 0.15)."""

from __future__ import annotations

from faust.tables.manager import TableManager


def start_tables_at_once() -> None:
    """Start the tables (and so join the consumer group) without Faust's fixed 1 s wait.

    Faust's table manager sleeps a second before it starts, giving late tables time to be
    declared; every table here exists before the app starts, so the second only delays
    every start and restart (about a fifth of a restart with local state).
    """
    if getattr(TableManager.on_start, "starts_at_once", False):
        return

    async def on_start(self: TableManager) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    on_start.starts_at_once = True  # type: ignore[attr-defined]
    TableManager.on_start = on_start  # type: ignore[method-assign]
