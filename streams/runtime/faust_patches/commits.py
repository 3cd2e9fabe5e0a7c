"""Leave the input offsets to the transactions under exactly_once (replaces
``ThreadDelegateConsumer._commit``; faust-streaming 0.15)."""

from __future__ import annotations

from collections.abc import Mapping

from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP


def commit_in_transactions_only(exactly_once: bool) -> None:
    """Exactly once: Faust's own offset commits send nothing, and count as done.

    The stage commits each batch's input offsets in the batch's transaction before it
    acknowledges the batch's messages, so whatever Faust would commit is committed already.
    Sent anyway, Faust's commit of an earlier batch's offsets could reach the broker after a
    later transaction's and move the group's offsets back: a crash then would read that
    transaction's batch again and send its outputs twice. Told that its commit succeeded,
    Faust keeps its own record of committed offsets as after a commit.
    """
    commit = ThreadDelegateConsumer._commit
    if getattr(commit, "commits_in_transactions_only", None) == exactly_once:
        return
    original = getattr(commit, "original", commit)

    async def commit_unless_transactional(
        self: ThreadDelegateConsumer, offsets: Mapping[TP, int]
    ) -> bool:
        if exactly_once:
            return True
        committed: bool = await original(self, offsets)
        return committed

    commit_unless_transactional.original = original  # type: ignore[attr-defined]
    commit_unless_transactional.commits_in_transactions_only = exactly_once  # type: ignore[attr-defined]
    ThreadDelegateConsumer._commit = commit_unless_transactional  # type: ignore[method-assign]
