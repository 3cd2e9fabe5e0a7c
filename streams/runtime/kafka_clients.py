"""How every Kafka client connects: bootstrap plus the ``CDP_KAFKA_*`` security settings.

librdkafka clients (the sender, admin clients, the producer API, the CLI's readers) take
:func:`client_config`; Faust's aiokafka clients take :func:`faust_credentials`. The password
comes from ``CDP_KAFKA_SASL_PASSWORD`` or the file ``CDP_KAFKA_SASL_PASSWORD_FILE`` names and
is never logged: nothing here logs a config. :func:`check_connection` turns a broker that
rejects the credentials or a certificate that is not trusted into one line naming the setting.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streams.settings import SecurityProtocol, Settings, get_settings

SASL = (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)
TLS = (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)


class ConnectionSetupError(RuntimeError):
    """The broker refused the configured credentials or certificates; names the setting."""


def sasl_password(settings: Settings) -> str:
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_sasl_password_file is not None:
        lines = settings.kafka_sasl_password_file.read_text().splitlines()
        return lines[0] if lines else ""
    return ""


def security_config(settings: Settings) -> dict[str, str]:
    """librdkafka's security properties for ``settings`` (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    config: dict[str, str] = {}
    if protocol is SecurityProtocol.PLAINTEXT:
        return config
    config["security.protocol"] = protocol.value
    if protocol in SASL:
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism.value
        config["sasl.username"] = settings.kafka_sasl_username or ""
        config["sasl.password"] = sasl_password(settings)
    if protocol in TLS:
        if settings.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
        if settings.kafka_ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
        if settings.kafka_ssl_key_file is not None:
            config["ssl.key.location"] = str(settings.kafka_ssl_key_file)
    return config


ClientConfig = dict[str, str | int | float | bool]


def client_config(bootstrap: str, settings: Settings | None = None) -> ClientConfig:
    """``bootstrap.servers`` and the security properties: the base of every librdkafka client.

    Without ``settings``, this process's (``CDP_*`` of its environment)."""
    return {"bootstrap.servers": bootstrap, **security_config(settings or get_settings())}


def ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None
    )
    if settings.kafka_ssl_cert_file is not None:
        context.load_cert_chain(
            str(settings.kafka_ssl_cert_file),
            str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
        )
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for ``settings``; None for PLAINTEXT."""
    import faust
    from faust.types.auth import SASLMechanism

    protocol = settings.kafka_security_protocol
    if protocol is SecurityProtocol.PLAINTEXT:
        return None
    context = ssl_context(settings) if protocol in TLS else None
    if protocol in SASL:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=sasl_password(settings),
            ssl_context=context,
            mechanism=SASLMechanism(settings.kafka_sasl_mechanism.value),
        )
    return faust.SSLCredentials(context)


def refused(error: KafkaError) -> bool:
    """An error no retry mends: credentials or a certificate the other side refused."""
    text = str(error.str())
    return error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) or (
        "uthentication failed" in text or "certificate verify failed" in text
    )


def check_connection(bootstrap: str, settings: Settings, timeout: float = 15.0) -> None:
    """Raise :class:`ConnectionSetupError` naming the setting the broker or TLS refused.

    A broker that is merely unreachable is left to the clients' retries, and PLAINTEXT has
    nothing to refuse: it is not checked."""
    if settings.kafka_security_protocol is SecurityProtocol.PLAINTEXT:
        return
    errors: list[KafkaError] = []
    lock = threading.Lock()

    def keep(error: KafkaError) -> None:
        with lock:
            errors.append(error)

    # librdkafka's own log lines of each failed attempt would bury the one line below.
    config: dict[str, Any] = {
        **client_config(bootstrap, settings),
        "error_cb": keep,
        "log_level": 0,
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException as exc:
            errors.append(exc.args[0])
        admin.poll(0.1)
        with lock:
            if any(refused(error) for error in errors):
                break
    for error in errors:
        text = str(error.str())
        if error.code() == KafkaError._AUTHENTICATION or "uthentication failed" in text:
            raise ConnectionSetupError(
                f"the broker at {bootstrap} rejected CDP_KAFKA_SASL_USERNAME / "
                f"CDP_KAFKA_SASL_PASSWORD ({settings.kafka_sasl_mechanism.value}): {text}"
            )
        if error.code() == KafkaError._SSL or "certificate verify failed" in text:
            raise ConnectionSetupError(
                f"the certificate of the broker at {bootstrap} is not trusted by "
                f"CDP_KAFKA_SSL_CA_FILE ({settings.kafka_ssl_ca_file or 'the system CAs'}): {text}"
            )
