"""One typed settings object, read from ``CDP_*`` environment variables.

A bad value is reported by :func:`load_settings` as one line per problem, naming the
variable, the value given and what is allowed (:class:`SettingsError`), before anything
connects anywhere.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from streams.durations import Duration, parse_duration
from streams.events import DEFAULT_BLOCKED_IDENTIFIERS, EventKind, IdentifierCaps

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class OutputFormat(StrEnum):
    JSON = "json"
    AVRO = "avro"


class ProcessingGuarantee(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


Port = Annotated[int, Field(ge=1, le=65535)]
# Kafka's legal topic characters; the prefix and the app id become parts of topic names.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST_PORT = re.compile(r"^[^\s:,]+:\d{1,5}$")
# The collector's default URL-path rule: /category/<name>/... (also /categories/, /c/).
DEFAULT_CATEGORY_PATTERN = r"^/(?:category|categories|c)/(?P<category>[^/?#]+)"


def compile_category_pattern(pattern: str) -> re.Pattern[str]:
    """The URL-path rule; raises ValueError if it is no regex with a ``category`` group."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"is not a regular expression: {exc}") from None
    if "category" not in compiled.groupindex:
        raise ValueError("needs a named group (?P<category>...)")
    return compiled


class Settings(BaseSettings):
    """Every knob of a worker; each field is ``CDP_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CDP_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means start or reuse the embedded broker.",
    )
    kafka_connect_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long a command waits for Kafka to answer before it gives up.",
    )
    # How every Kafka client of the worker, collector, producer API and CLI connects
    # (streams/runtime/kafka_clients.py); the password is never logged.
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; or CDP_KAFKA_SASL_PASSWORD_FILE."
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="A file holding the SASL password (its first line)."
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="PEM CA certificates the broker's certificate must chain to."
    )
    kafka_ssl_cert_file: Path | None = Field(
        default=None, description="PEM client certificate, for brokers that require one."
    )
    kafka_ssl_key_file: Path | None = Field(
        default=None, description="PEM private key of the client certificate."
    )
    embedded_broker_port: Port = 9092
    apache_kafka_libs: Path = Field(
        default=PROJECT_ROOT / ".kafka" / "libs",
        description="Where `make kafka` put Apache Kafka's jars (cdp broker --apache-kafka).",
    )
    apache_kafka_heap: str = Field(
        default="512m",
        pattern=r"^[1-9][0-9]*[kmgKMG]$",
        description="Heap cap of the local Apache Kafka broker's JVM, e.g. 512m or 1g.",
    )
    topic_prefix: str = "cdp."
    partitions: int = Field(default=8, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=100)
    # Off by default: in the SIGKILL suite a worker promoting its standby copy of a partition
    # to active sometimes held the partition's offset without all of its values, and served
    # those profiles as new, on the embedded broker and on Apache Kafka alike
    # (docs/operations.md, "Workers joining and leaving").
    standby_replicas: int = Field(
        default=0,
        ge=0,
        description="Standby copies of each table partition on other workers, for fast takeover.",
    )
    # The tables' changelogs are compacted: a profile's erasure (a tombstone) must leave the
    # log within a bound, which needs the active segment rolled and the cleaner forced in time.
    changelog_min_compaction_lag: Duration = Field(
        default=parse_duration("0s"),
        description="Changelog records stay uncompacted at least this long "
        "(min.compaction.lag.ms).",
    )
    changelog_max_compaction_lag: Duration = Field(
        default=parse_duration("7d"),
        description="A superseded or erased changelog value is compacted away within about this "
        "long (max.compaction.lag.ms); the bound an erasure relies on.",
    )
    changelog_delete_retention: Duration = Field(
        default=parse_duration("1d"),
        description="How long a changelog tombstone stays readable (delete.retention.ms): a "
        "worker restoring longer than this may miss an erasure.",
    )
    changelog_segment: Duration = Field(
        default=parse_duration("1d"),
        description="Changelog segments roll after this long (segment.ms); the active segment "
        "is never compacted, so it is at most the compaction bound.",
    )
    anonymous_retention: Duration = Field(
        default=parse_duration("90d"),
        description="A profile with no user id and no email is erased this long after its "
        "latest event (event time).",
    )
    profile_retention: Duration | None = Field(
        default=None,
        description="Known profiles are erased this long after their latest event; unset: "
        "kept.",
    )
    erased_mark_retention: Duration = Field(
        default=parse_duration("1d"),
        description="How long an erased profile's mark (its id and erasure time) stays in the "
        "profile table: the time the erasure's unlinks have to reach its identifiers.",
    )
    dead_letter_retention: Duration = Field(
        default=parse_duration("14d"),
        description="How long the dead-letter topic keeps a record (retention.ms, set when "
        "the topic is created): the bound for a person's raw bytes there.",
    )
    app_id: str = "cdp-streams"
    data_dir: Path = Path(".cdp-data")
    web_host: str = "127.0.0.1"
    web_port: Port = 6066
    advertised_url: str | None = Field(
        default=None,
        description="URL other workers use to reach this one's API (lookups are routed by key).",
    )
    output_format: OutputFormat = OutputFormat.JSON
    schemas_dir: Path = PROJECT_ROOT / "schemas"
    schema_registry_url: str | None = None
    segments_file: Path | None = None
    journeys_file: Path | None = None
    session_timeout_seconds: float = Field(default=10.0, ge=1)
    heartbeat_interval_seconds: float = Field(default=1.0, gt=0)
    recheck_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How often due segment rechecks and journey steps run; a step runs about two"
            " rounds after its time (once the input before it is applied)."
        ),
    )
    backfill_rate: float = Field(
        default=200.0,
        ge=0,
        description="Profiles stored under other segment definitions that a worker evaluates"
        " under the current ones per second, in the background (0: each at its next event).",
    )
    broker_probe_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often readiness checks that the broker answers."
    )
    broker_probe_timeout_seconds: float = Field(
        default=3.0, gt=0, description="How long the broker may take to answer that check."
    )
    fetch_max_wait_ms: int = Field(
        default=50, ge=1, description="Longest a fetch waits for data; bounds idle latency."
    )
    produce_linger_ms: float = Field(
        default=5.0,
        ge=0,
        description="How long the worker's producer gathers records into one request: an "
        "output reaches the broker up to this long after its timestamp.",
    )
    processing_guarantee: ProcessingGuarantee = Field(
        default=ProcessingGuarantee.AT_LEAST_ONCE,
        description="at_least_once: outputs may repeat after a crash, with the same ids; "
        "exactly_once (Apache Kafka only): a batch's outputs, table writes and input offsets "
        "commit in one Kafka transaction, for consumers reading read_committed.",
    )
    batch_max_messages: int = Field(
        default=500,
        ge=1,
        description="Most messages a stage handles as one batch (one table write per key); "
        "a batch is what one fetch brought for the stage, up to this many. A fetch takes "
        "privacy requests and internal hops first, then up to this many of every topic.",
    )
    state_block_cache_bytes: int = Field(
        default=64 * 2**20,
        ge=2**20,
        description="RocksDB block cache shared by every table partition of a worker.",
    )
    state_write_buffer_bytes: int = Field(
        default=8 * 2**20,
        ge=2**20,
        description="RocksDB write buffer per table partition (up to two at a time).",
    )
    max_event_bytes: int = Field(default=1_048_576, ge=1024)
    recent_event_ids: int = Field(
        default=512, ge=16, description="Event ids kept per profile for idempotent replays."
    )
    popup_cooldown_days: float = Field(default=7.0, ge=0)
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the lookup and decision API requires; unset: open (development).",
    )
    privacy_salt: SecretStr | None = Field(
        default=None,
        description="Secret the privacy table hashes identifiers with (request status, "
        "suppression list); unset: a public development salt, and a warning at start.",
    )
    privacy_request_bound: Duration = Field(
        default=parse_duration("5m"),
        description="How long a privacy request may stay open before the alert fires "
        "(exported as cdp_privacy_open_request_bound_seconds).",
    )
    blocked_identifiers: list[str] = Field(
        default=list(DEFAULT_BLOCKED_IDENTIFIERS),
        description="Identifier values that never identify anyone (JSON list; case-insensitive).",
    )
    max_user_ids: int = Field(
        default=1, ge=1, le=100, description="User ids one profile may hold; more are refused."
    )
    max_emails: int = Field(
        default=5, ge=1, le=100, description="Email addresses one profile may hold."
    )
    max_anonymous_ids: int = Field(
        default=50, ge=1, le=1000, description="Anonymous ids (devices) one profile may hold."
    )
    log_level: LogLevel = LogLevel.INFO
    # The collector (`cdp collector`): Segment's HTTP Tracking API in front of the topics.
    collector_host: str = "127.0.0.1"
    collector_port: Port = 8088
    collector_write_keys: SecretStr | None = Field(
        default=None,
        description="Write keys the collector accepts, each with the source it names: "
        "key:source,key2:source2.",
    )
    collector_queue_messages: int = Field(
        default=100_000,
        ge=100,
        le=10_000_000,
        description="Messages the collector's producer may hold undelivered; beyond, 429.",
    )
    collector_delivery_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long the collector waits for Kafka to confirm a request's events.",
    )
    collector_category_pattern: str = Field(
        default=DEFAULT_CATEGORY_PATTERN,
        description="Regex with a (?P<category>...) group: a page's category from its URL "
        "path when the page gives none.",
    )
    demo_shop_port: Port = Field(
        default=8090, description="Where `cdp demo` serves its demo shop (/shop), on 127.0.0.1."
    )
    cors_origins: list[str] = Field(
        default=[],
        description="Browser origins allowed to call the collector and /decisions/* "
        '(JSON list, e.g. ["https://shop.example"]).',
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_servers(cls, value: str | None) -> str | None:
        if value is not None and not all(_HOST_PORT.match(s.strip()) for s in value.split(",")):
            raise ValueError("must be host:port, or several separated by commas")
        return value

    @field_validator("topic_prefix", "app_id")
    @classmethod
    def _topic_name_part(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value):
            raise ValueError("may hold only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("advertised_url", "schema_registry_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("api_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (unset it to serve the API without a token)")
        return value

    @field_validator("privacy_salt")
    @classmethod
    def _salt_length(cls, value: SecretStr | None) -> SecretStr | None:
        # BLAKE2b takes a key of at most 64 bytes; 16 is the least worth calling secret.
        if value is not None and not 16 <= len(value.get_secret_value().encode()) <= 64:
            raise ValueError("must be 16 to 64 bytes (e.g. openssl rand -hex 32)")
        return value

    @field_validator("collector_write_keys")
    @classmethod
    def _write_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_write_keys(value.get_secret_value())
        return value

    @field_validator("collector_category_pattern")
    @classmethod
    def _category_pattern(cls, value: str) -> str:
        compile_category_pattern(value)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^\s/]+$", origin):
                raise ValueError(f"{origin!r} is no origin (scheme://host[:port], no path)")
        return value

    @property
    def write_keys(self) -> dict[str, str]:
        """Write key -> the source name it stands for."""
        secret = self.collector_write_keys
        return parse_write_keys(secret.get_secret_value()) if secret is not None else {}

    @field_validator("schemas_dir")
    @classmethod
    def _existing_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError("must be a directory holding the .avsc schemas")
        return value

    @field_validator("segments_file", "journeys_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("must be an existing YAML file")
        return value

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Settings:
        if self.heartbeat_interval_seconds >= self.session_timeout_seconds:
            raise ValueError(
                "CDP_HEARTBEAT_INTERVAL_SECONDS must be less than CDP_SESSION_TIMEOUT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        sasl = self.kafka_security_protocol in (
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        )
        if sasl and not self.kafka_sasl_username:
            raise ValueError(
                f"CDP_KAFKA_SASL_USERNAME is required with {self.kafka_security_protocol}"
            )
        if sasl and self.kafka_sasl_password is None and self.kafka_sasl_password_file is None:
            raise ValueError(
                "CDP_KAFKA_SASL_PASSWORD or CDP_KAFKA_SASL_PASSWORD_FILE is required with "
                f"{self.kafka_security_protocol}"
            )
        for name in ("ca", "cert", "key"):
            path: Path | None = getattr(self, f"kafka_ssl_{name}_file")
            if path is not None and not path.is_file():
                raise ValueError(f"CDP_KAFKA_SSL_{name.upper()}_FILE: no file at {path}")
        password_file = self.kafka_sasl_password_file
        if password_file is not None and not password_file.is_file():
            raise ValueError(f"CDP_KAFKA_SASL_PASSWORD_FILE: no file at {password_file}")
        return self

    @model_validator(mode="after")
    def _compaction_bounds(self) -> Settings:
        if self.changelog_segment > self.changelog_max_compaction_lag:
            raise ValueError(
                "CDP_CHANGELOG_SEGMENT must not exceed CDP_CHANGELOG_MAX_COMPACTION_LAG "
                "(the active segment is never compacted)"
            )
        if self.changelog_min_compaction_lag > self.changelog_max_compaction_lag:
            raise ValueError(
                "CDP_CHANGELOG_MIN_COMPACTION_LAG must not exceed CDP_CHANGELOG_MAX_COMPACTION_LAG"
            )
        return self

    @property
    def api_url(self) -> str:
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = socket.gethostname() if self.web_host in ("0.0.0.0", "::") else self.web_host
        return f"http://{host}:{self.web_port}"

    def topic(self, suffix: str) -> str:
        return f"{self.topic_prefix}{suffix}"

    def input_topic(self, kind: EventKind) -> str:
        return self.topic(kind.topic_suffix)

    @property
    def input_topics(self) -> list[str]:
        return [self.input_topic(kind) for kind in EventKind]

    @property
    def segment_changes_topic(self) -> str:
        return self.topic("segment-changes")

    @property
    def journeys_topic(self) -> str:
        return self.topic("email-journeys")

    @property
    def journey_events_topic(self) -> str:
        return self.topic("journey-events")

    @property
    def dead_letter_topic(self) -> str:
        return self.topic("dead-letter")

    @property
    def identity_merges_topic(self) -> str:
        return self.topic("identity-merges")

    @property
    def privacy_requests_topic(self) -> str:
        return self.topic("privacy-requests")

    @property
    def privacy_events_topic(self) -> str:
        return self.topic("privacy-events")

    @property
    def output_records(self) -> dict[str, str]:
        """Output topic -> the Avro record (``schemas/<name>.avsc``) its values carry."""
        return {
            self.segment_changes_topic: "SegmentChange",
            self.journeys_topic: "JourneyTrigger",
            self.journey_events_topic: "JourneyEvent",
            self.dead_letter_topic: "DeadLetter",
            self.identity_merges_topic: "IdentityMerge",
            self.privacy_events_topic: "PrivacyEvent",
        }

    @property
    def output_topics(self) -> list[str]:
        return list(self.output_records)

    @property
    def identifier_caps(self) -> IdentifierCaps:
        return IdentifierCaps(self.max_user_ids, self.max_emails, self.max_anonymous_ids)


def parse_write_keys(text: str) -> dict[str, str]:
    """``key:source,key2:source2`` as a dict; raises ValueError naming no key (they are secret)."""
    keys: dict[str, str] = {}
    for position, pair in enumerate(text.split(","), start=1):
        key, sep, source = (part.strip() for part in pair.partition(":"))
        if not sep or not key or not source:
            raise ValueError(f"entry {position} must be key:source (e.g. wk_shop:web-shop)")
        if not _TOPIC_NAME.match(source):
            raise ValueError(f"entry {position}: the source may hold only letters, digits, . _ -")
        keys[key] = source
    return keys


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_SECRET = frozenset({"api_token", "kafka_sasl_password", "collector_write_keys", "privacy_salt"})
_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "json_invalid": "must be JSON",
    "list_type": "must be a JSON list",
}


def _problem(error: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    if not error["loc"]:
        return str(error["msg"]).removeprefix("Value error, ")
    name = str(error["loc"][0])
    variable = f"CDP_{name.upper()}"
    given = environ.get(variable, "")
    shown = "<hidden>" if name in _SECRET else given
    kind, context = error["type"], error.get("ctx") or {}
    if kind in ("greater_than_equal", "less_than_equal") and name.endswith("port"):
        allowed = "must be a port number 1-65535"
    elif kind == "greater_than_equal":
        allowed = f"must be at least {context['ge']}"
    elif kind == "less_than_equal":
        allowed = f"must be at most {context['le']}"
    elif kind == "greater_than":
        allowed = f"must be more than {context['gt']}"
    elif kind == "enum":
        allowed = f"must be one of {context['expected'].replace(chr(39), '')}"
    elif kind == "value_error":
        allowed = str(error["msg"]).removeprefix("Value error, ")
    else:
        allowed = _MESSAGES.get(kind, str(error["msg"]).lower())
    return f"{variable}={shown}: {allowed}"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``CDP_*`` variables that are no setting (a typo), each with the closest setting."""
    environ = os.environ if environ is None else environ
    known = {f"CDP_{name.upper()}" for name in Settings.model_fields}
    found = []
    for variable in sorted(environ):
        if variable.startswith("CDP_") and variable not in known | NOT_SETTINGS:
            close = difflib.get_close_matches(variable, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append(f"{variable} is not a setting{hint}")
    return found


# Read by the test suite, not by the worker.
NOT_SETTINGS = frozenset({"CDP_TEST_BROKER"})


def load_settings() -> Settings:
    """The settings from ``CDP_*`` variables; raises :class:`SettingsError` naming each bad one."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError([_problem(e, os.environ) for e in exc.errors()]) from None
    except PydanticSettingsError as exc:
        # A list setting whose value is not JSON: the library names the field, not the value.
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        variable = f"CDP_{field.upper()}"
        raise SettingsError(
            [f'{variable}={os.environ.get(variable, "")}: must be a JSON list, e.g. ["a","b"]']
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
