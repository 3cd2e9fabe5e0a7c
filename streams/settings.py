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

from streams.events import DEFAULT_BLOCKED_IDENTIFIERS, EventKind, IdentifierCaps

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class OutputFormat(StrEnum):
    JSON = "json"
    AVRO = "avro"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


Port = Annotated[int, Field(ge=1, le=65535)]
# Kafka's legal topic characters; the prefix and the app id become parts of topic names.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST_PORT = re.compile(r"^[^\s:,]+:\d{1,5}$")


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
    embedded_broker_port: Port = 9092
    topic_prefix: str = "cdp."
    partitions: int = Field(default=8, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=100)
    # Off by default: in the SIGKILL suite a worker promoting its standby copy of a partition
    # to active sometimes held the partition's offset without all of its values, and served
    # those profiles as new (docs/operations.md, "Workers joining and leaving").
    standby_replicas: int = Field(
        default=0,
        ge=0,
        description="Standby copies of each table partition on other workers, for fast takeover.",
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
        description="How often due segment rechecks and journey steps run: how late one may be.",
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
    batch_max_messages: int = Field(
        default=500,
        ge=1,
        description="Most messages a stage handles as one batch (one table write per key); "
        "a batch is what one fetch brought for the stage, up to this many.",
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
    def output_records(self) -> dict[str, str]:
        """Output topic -> the Avro record (``schemas/<name>.avsc``) its values carry."""
        return {
            self.segment_changes_topic: "SegmentChange",
            self.journeys_topic: "JourneyTrigger",
            self.journey_events_topic: "JourneyEvent",
            self.dead_letter_topic: "DeadLetter",
            self.identity_merges_topic: "IdentityMerge",
        }

    @property
    def output_topics(self) -> list[str]:
        return list(self.output_records)

    @property
    def identifier_caps(self) -> IdentifierCaps:
        return IdentifierCaps(self.max_user_ids, self.max_emails, self.max_anonymous_ids)


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_SECRET = frozenset({"api_token"})
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
            [f"{variable}={os.environ.get(variable, '')}: must be a JSON list, e.g. [\"a\",\"b\"]"]
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
