"""Where the identity and profile steps' messages go: handled in place, or over a topic.

Partition p of the internal identity topic, of the internal profile topic and of both
tables is one worker's (Faust assigns topics of equal partition counts together). A message
the steps send about key K belongs to ``key_partition(K)``. When that is the partition
being handled and this worker holds it, the message is handled there and then, after what
was sent before it, as it would be on the topic; it is never encoded, produced, fetched
and decoded. Outputs, messages for any other partition and a question that waits for an
answer on its way from elsewhere (``Send.waits_its_turn``) are sent.

A new profile's id lands in its founding identifier's partition
(:func:`~streams.identity.resolver.profile_id_for`) and the producer API keys an event by
that identifier, so most events are handled in the partition they arrive in from start to
end; merges across partitions take the topics. A crash changes nothing either: what was
handled in place is written and acknowledged with the message that began it
(:mod:`streams.runtime.stages`), so a replay handles it again, as a replay of the topic would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from streams.partitioning import key_partition
from streams.steps.messages import INTERNAL, Out, Send

Headers = dict[str, bytes]
Handle = Callable[[Send, Headers, int], tuple[Send, ...]]
SendOver = Callable[[Send, Headers], None]
Holds = Callable[[Out, int], bool]
Failed = Callable[[Send, Headers, int, Exception], None]

# The input's append time travels along with what an event leads to, in place and over the
# internal topics, so the profile step can measure event-to-output latency.
RECEIVED_AT_HEADER = "cdp-received-at"


def passed_on(headers: Headers) -> Headers:
    """The headers a step's sends carry on: the input's append time."""
    received_at = headers.get(RECEIVED_AT_HEADER)
    return {RECEIVED_AT_HEADER: received_at} if received_at else {}


@dataclass(frozen=True)
class InPlace:
    """Handles a message and what it leads to in its partition; sends everything else."""

    partitions: int
    handle: Handle
    """Apply an identity or profile message in a partition (this worker's); its sends."""
    send: SendOver
    """Send an output, or a message for another partition, over its topic."""
    holds: Holds
    """Whether this worker holds a partition of the identity or profile topic."""
    failed: Failed
    """A message handled in place raised: dead-letter it."""

    def run(self, first: Send, headers: Headers, partition: int) -> None:
        """Handle ``first`` in ``partition``, then, in the order sent, what it leads to there.

        An error of ``first`` is raised (the stage dead-letters the message it came in);
        one of a message handled in place after it goes to :attr:`failed`.
        """
        pending = deque([(first, headers)])
        while pending:
            message, headers = pending.popleft()
            try:
                sends = self.handle(message, headers, partition)
            except Exception as exc:
                if message is first:
                    raise
                self.failed(message, headers, partition, exc)
                continue
            passed = passed_on(headers)
            for send in sends:
                if self.belongs_to(send, partition):
                    pending.append((send, passed))
                else:
                    self.send(send, passed)

    def belongs_to(self, send: Send, partition: int) -> bool:
        """Whether ``send`` is an internal message for ``partition``, held here."""
        return (
            send.topic in INTERNAL
            and not send.waits_its_turn
            and key_partition(send.key.encode(), self.partitions) == partition
            and self.holds(send.topic, partition)
        )
