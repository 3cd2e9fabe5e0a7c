"""Commit only messages that were processed (replaces ``Consumer.ack``; faust-streaming 0.15)."""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.runtime.metrics import (
    REBALANCE_SKIPPED_MESSAGES,
)


def commit_only_processed_messages() -> None:
    """Never count a message as safe to commit when the stream skipped it in a rebalance.

    While a rebalance is under way (flow stopped), or afterwards for a message of an older
    consumer generation, Faust's stream skips the message it takes from its buffer and
    then *acknowledges* it, so the next commit could move past an event nobody applied.
    Here such an acknowledgement only releases the message (a revocation waiting for
    in-flight messages must not hang) without making its offset committable. After the
    rebalance the partition is read again from its committed offset; had a stream applied
    the message after all, applying it again is a no-op (de-duplication by event id).
    Counted in ``cdp_rebalance_skipped_messages_total``.
    """
    if getattr(Consumer.ack, "commits_only_processed", False):
        return
    ack = Consumer.ack

    def ack_processed(self: Consumer, message: Any) -> bool:
        app = self.app
        if app.flow_control.is_active() and message.generation_id == app.consumer_generation_id:
            return ack(self, message)
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
        REBALANCE_SKIPPED_MESSAGES.inc()
        return False

    ack_processed.commits_only_processed = True  # type: ignore[attr-defined]
    Consumer.ack = ack_processed  # type: ignore[method-assign]
