"""A bad setting is one line naming the variable, the value and what is allowed."""

from __future__ import annotations

import pytest

from streams.cli import profile_lookup
from streams.settings import SettingsError, load_settings, unknown_variables


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CDP_PARTITIONS", "abc", "CDP_PARTITIONS=abc: must be a whole number"),
        ("CDP_PARTITIONS", "0", "CDP_PARTITIONS=0: must be at least 1"),
        ("CDP_WEB_PORT", "-1", "CDP_WEB_PORT=-1: must be a port number 1-65535"),
        ("CDP_WEB_PORT", "70000", "CDP_WEB_PORT=70000: must be a port number 1-65535"),
        ("CDP_OUTPUT_FORMAT", "xml", "CDP_OUTPUT_FORMAT=xml: must be one of json or avro"),
        ("CDP_LOG_LEVEL", "loud", "CDP_LOG_LEVEL=loud: must be one of debug, info,"),
        ("CDP_BLOCKED_IDENTIFIERS", "x", "CDP_BLOCKED_IDENTIFIERS=x: must be a JSON list"),
        ("CDP_KAFKA_BOOTSTRAP", "localhost", "CDP_KAFKA_BOOTSTRAP=localhost: must be host:port"),
        ("CDP_TOPIC_PREFIX", "a/b", "CDP_TOPIC_PREFIX=a/b: may hold only letters"),
        ("CDP_SCHEMAS_DIR", "/nowhere", "CDP_SCHEMAS_DIR=/nowhere: must be a directory"),
        ("CDP_SEGMENTS_FILE", "/no.yaml", "CDP_SEGMENTS_FILE=/no.yaml: must be an existing"),
        ("CDP_ADVERTISED_URL", "worker-0", "CDP_ADVERTISED_URL=worker-0: must be an http://"),
        ("CDP_API_TOKEN", " ", "CDP_API_TOKEN=<hidden>: must not be empty"),
        ("CDP_PRIVACY_SALT", "short", "CDP_PRIVACY_SALT=<hidden>: must be 16 to 64 bytes"),
        ("CDP_PRIVACY_REQUEST_BOUND", "soon", "CDP_PRIVACY_REQUEST_BOUND=soon: "),
        ("CDP_RECHECK_INTERVAL_SECONDS", "0", "CDP_RECHECK_INTERVAL_SECONDS=0: must be more"),
        ("CDP_MAX_EMAILS", "1000", "CDP_MAX_EMAILS=1000: must be at most 100"),
        (
            "CDP_COLLECTOR_WRITE_KEYS",
            "secret-key",
            "CDP_COLLECTOR_WRITE_KEYS=<hidden>: entry 1 must be key:source",
        ),
        (
            "CDP_COLLECTOR_WRITE_KEYS",
            "k1:shop,k2:a b",
            "CDP_COLLECTOR_WRITE_KEYS=<hidden>: entry 2: the source may hold only",
        ),
        ("CDP_COLLECTOR_PORT", "0", "CDP_COLLECTOR_PORT=0: must be a port number 1-65535"),
        ("CDP_COLLECTOR_QUEUE_MESSAGES", "5", "CDP_COLLECTOR_QUEUE_MESSAGES=5: must be at least"),
        (
            "CDP_COLLECTOR_CATEGORY_PATTERN",
            "^/(x",
            "CDP_COLLECTOR_CATEGORY_PATTERN=^/(x: is not a regular expression",
        ),
        (
            "CDP_COLLECTOR_CATEGORY_PATTERN",
            "^/c/(.*)",
            "CDP_COLLECTOR_CATEGORY_PATTERN=^/c/(.*): needs a named group",
        ),
        ("CDP_CORS_ORIGINS", "shop.example", "CDP_CORS_ORIGINS=shop.example: must be a JSON list"),
        (
            "CDP_CORS_ORIGINS",
            '["https://shop.example/path"]',
            "CDP_CORS_ORIGINS=[\"https://shop.example/path\"]: 'https://shop.example/path' is no",
        ),
    ],
)
def test_one_line_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert len(refused.value.problems) == 1
    assert refused.value.problems[0].startswith(expected)


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_PARTITIONS", "abc")
    monkeypatch.setenv("CDP_WEB_PORT", "-1")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert [p.split("=")[0] for p in refused.value.problems] == ["CDP_PARTITIONS", "CDP_WEB_PORT"]


def test_the_token_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_API_TOKEN", "   ")
    monkeypatch.setenv("CDP_WEB_PORT", "x")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "<hidden>" in str(refused.value)


def test_a_misspelt_variable_is_named_with_the_setting_meant() -> None:
    found = unknown_variables({"CDP_WEB_PROT": "1", "CDP_WEB_PORT": "1", "PATH": "/bin"})
    assert found == ["CDP_WEB_PROT is not a setting (did you mean CDP_WEB_PORT?)"]


@pytest.mark.parametrize(
    ("typed", "lookup"),
    [
        ("ann@example.com", ("/profiles", {"email": "ann@example.com"})),
        ("email:ann@example.com", ("/profiles", {"email": "ann@example.com"})),
        ("user_id:42", ("/profiles", {"user_id": "42"})),
        ("anonymous_id:a:b", ("/profiles", {"anonymous_id": "a:b"})),
        ("p_0123456789abcdef01234567", ("/profiles/p_0123456789abcdef01234567", {})),
        ("foo", None),
        ("p_123", None),
        ("phone:123", None),
        ("user_id:", None),
    ],
)
def test_profile_takes_kind_value_or_an_unmistakable_identifier(
    typed: str, lookup: tuple[str, dict[str, str]] | None
) -> None:
    assert profile_lookup(typed) == lookup
