"""Which broker a worker talks to: the embedded development broker, or a real Kafka.

Some fixes to Faust exist only for the embedded broker's quirks (Tansu reports a partition's
end as the start of its last record batch plus one). On Apache Kafka they are skipped, and
the worker says so in its log once. It has no transactions either, so a worker refuses
``CDP_PROCESSING_GUARANTEE=exactly_once`` there. The embedded broker is recognised by the
cluster id :func:`streams.broker.start_broker` gives it.
"""

from __future__ import annotations

import functools
import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.runtime.kafka_clients import client_config
from streams.settings import ProcessingGuarantee, Settings

log = logging.getLogger(__name__)

EMBEDDED_CLUSTER_ID = "cdp-streams-dev"


@functools.cache
def is_embedded_broker(bootstrap: str) -> bool:
    """True for the embedded broker; a broker that cannot be asked counts as embedded, so
    the workarounds stay on where nothing is known."""
    try:
        cluster_id = AdminClient(client_config(bootstrap)).list_topics(timeout=10).cluster_id
    except KafkaException as exc:
        log.warning(
            "cannot tell which broker %s is (%s): embedded-broker workarounds on", bootstrap, exc
        )
        return True
    embedded = cluster_id == EMBEDDED_CLUSTER_ID
    if embedded:
        log.info("embedded broker at %s: its end-offset workaround is on", bootstrap)
    else:
        log.info(
            "Kafka cluster %s at %s: embedded-broker workarounds off (changelog ends are taken "
            "as the broker reports them)",
            cluster_id,
            bootstrap,
        )
    return embedded


def guarantee_problem(settings: Settings, bootstrap: str) -> str | None:
    """Why the worker cannot keep ``CDP_PROCESSING_GUARANTEE`` on this broker, or None."""
    if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE and is_embedded_broker(
        bootstrap
    ):
        return (
            "CDP_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which the embedded "
            "broker lacks: use at_least_once (the default), or Apache Kafka (CDP_KAFKA_BOOTSTRAP)"
        )
    return None
