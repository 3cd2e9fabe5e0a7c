"""The ``cdp`` command: demo, worker, collector, broker, produce, profile, dead-letters,
journeys, privacy."""

from __future__ import annotations

import faulthandler
import json
import logging
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.events import EventKind, IdentifierKind
from streams.runtime.broker import LOOPBACK, EmbeddedBroker, is_listening, start_broker
from streams.runtime.kafka_clients import ConnectionSetupError, check_connection
from streams.runtime.topics import ensure_topics
from streams.settings import Settings, SettingsError, get_settings, unknown_variables

if TYPE_CHECKING:
    from streams.runtime.dead_letters import DeadLetter

cli = typer.Typer(
    help="cdp-streams: Kafka-native customer data platform core.",
    no_args_is_help=True,
    add_completion=False,
    # Locals of a failing frame can hold personal data or the API token.
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True)

PROFILE_ID = re.compile(r"^p_[0-9a-f]{24}$")
EMAIL = re.compile(r"^[^@\s:]+@[^@\s]+\.[^@\s]+$")


class PortInUseError(RuntimeError):
    pass


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Fail before connecting anywhere when the port a command would listen on is taken."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on {host} ({setting}) is in use: stop what holds it, "
                f"or choose another with {setting}"
            ) from exc


@contextmanager
def kafka(settings: Settings, *, log_file: Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address: the configured Kafka, a running embedded broker, or a new one."""
    if settings.kafka_bootstrap:
        check_connection(settings.kafka_bootstrap, settings)
        yield settings.kafka_bootstrap
        return
    port = settings.embedded_broker_port
    if is_listening(LOOPBACK, port):
        err.print(f"[dim]using the embedded broker already running on {LOOPBACK}:{port}[/]")
        yield f"{LOOPBACK}:{port}"
        return
    broker: EmbeddedBroker = start_broker(port, log_file=log_file)
    err.print(f"[dim]started the embedded broker on {broker.bootstrap} (memory only)[/]")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@cli.command()
def broker(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 9092,
    apache_kafka: Annotated[
        bool,
        typer.Option(
            "--apache-kafka",
            help="Run Apache Kafka (KRaft, one node; jars from `make kafka`, needs Java 17) "
            "with its log in $CDP_DATA_DIR/kafka-<port>, instead of the embedded broker.",
        ),
    ] = False,
) -> None:
    """Run a broker in the foreground and create the topics: embedded (memory only) or Kafka."""
    from streams.runtime.broker import BrokerError
    from streams.runtime.kafka_broker import ApacheKafkaBroker, start_apache_kafka

    settings = get_settings()
    ensure_port_free(LOOPBACK, port, "--port")
    running: EmbeddedBroker | ApacheKafkaBroker
    try:
        if apache_kafka:
            err.print("[dim]starting Apache Kafka…[/]")
            running = start_apache_kafka(
                port,
                data_dir=settings.data_dir / f"kafka-{port}",
                libs_dir=settings.apache_kafka_libs,
                heap=settings.apache_kafka_heap,
            )
        else:
            running = start_broker(port)
    except BrokerError as exc:
        err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        raise typer.Exit(2) from exc
    name = "Apache Kafka (KRaft)" if apache_kafka else "embedded broker (memory only)"
    # SIGTERM (systemd, docker stop, a test) must stop the broker too, not orphan it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        ensure_topics(running.bootstrap, settings)
        console.print(f"{name} on [bold]{running.bootstrap}[/]; topics created. Ctrl-C stops it.")
        running.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def kcat(ctx: typer.Context) -> None:
    """Run kcat with these arguments, on a librdkafka that reads the embedded broker.

    Debian's kcat 1.7.1 cannot talk to the embedded broker with its own librdkafka 2.0.2;
    this runs the same kcat on the newer librdkafka the confluent-kafka package ships.
    Against Apache Kafka, plain kcat works as well.
    """
    import os

    from streams.runtime.broker import BrokerError, kcat_command

    try:
        argv, env = kcat_command(list(ctx.args))
    except BrokerError as exc:
        sys.stderr.write(f"{exc}\n")
        raise typer.Exit(2) from exc
    os.execve(argv[0], argv, env)


@cli.command()
def worker() -> None:
    """Run a stream worker (uses CDP_KAFKA_BOOTSTRAP, else starts or reuses an embedded broker)."""
    from faust.worker import Worker

    from streams.api import views
    from streams.rule_files import DefinitionError
    from streams.runtime.app import create_runtime, discard_untrusted_state, mark_stopped_cleanly
    from streams.runtime.broker_kind import guarantee_problem
    from streams.runtime.faust_patches import UnsupportedFaustError
    from streams.runtime.worker_topics import ensure_worker_topics

    settings = get_settings()
    ensure_port_free(settings.web_host, settings.web_port, "CDP_WEB_PORT")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with kafka(settings, log_file=settings.data_dir / "broker.log") as bootstrap:
        problem = guarantee_problem(settings, bootstrap)
        if problem is not None:
            err.print(f"[red]{problem}[/]")
            raise typer.Exit(2)
        ensure_topics(bootstrap, settings)
        try:
            runtime = create_runtime(settings, bootstrap)
            views.install(runtime)
        except DefinitionError as exc:
            err.print(f"[red]invalid definitions: {exc}[/]")
            raise typer.Exit(2) from exc
        except UnsupportedFaustError as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        discard_untrusted_state(runtime, bootstrap)
        # After the check above, which reads missing changelogs as a broker that lost them.
        ensure_worker_topics(bootstrap, settings)
        err.print(f"[dim]API on {settings.api_url}[/]")
        if runtime.sender.transactional_id is not None:
            err.print(f"[dim]exactly_once: transactions as {runtime.sender.transactional_id}[/]")
        worker = Worker(
            runtime.app, loglevel=settings.log_level.value, quiet=True, redirect_stdouts=False
        )
        # At WARNING and above Faust's terminal spinner sets the root logger to DEBUG, so every
        # debug call in Faust and aiokafka built a log record (visible in a busy worker's profile).
        worker.spinner = None
        # `kill -USR1 <pid>` writes every thread's stack to the log: for a worker that hangs.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            # Faust exits 0 only after a stop that flushed its producer and closed the tables;
            # a batch is acknowledged only once its sends are delivered (exactly once:
            # committed), so whatever the sender still holds belongs to batches that will be
            # read again.
            undelivered = runtime.sender.close()
            if exit_.code in (None, 0) and not undelivered and not runtime.app._crashed.is_set():
                mark_stopped_cleanly(runtime)
            raise


@cli.command()
def collector() -> None:
    """Run the Segment-compatible HTTP collector (CDP_COLLECTOR_PORT) in front of the topics.

    Takes Segment's HTTP Tracking API (/v1/track, /v1/identify, /v1/page, /v1/screen,
    /v1/alias, /v1/group, /v1/batch) with the write keys of CDP_COLLECTOR_WRITE_KEYS.
    """
    from streams.api.collector import run

    settings = get_settings()
    if not settings.write_keys:
        sys.stderr.write(
            "CDP_COLLECTOR_WRITE_KEYS is unset: give the write keys the collector accepts, "
            "as key:source,key2:source2\n"
        )
        raise typer.Exit(2)
    ensure_port_free(settings.collector_host, settings.collector_port, "CDP_COLLECTOR_PORT")
    with kafka(settings) as bootstrap:
        ensure_topics(bootstrap, settings)
        err.print(
            f"[dim]collector on http://{settings.collector_host}:{settings.collector_port}"
            f" ({plural(len(settings.write_keys), 'write key')})[/]"
        )
        run(settings, bootstrap)


@cli.command()
def produce(
    kind: Annotated[EventKind, typer.Argument(help="Which input topic the events go to.")],
    skip_invalid: Annotated[
        bool, typer.Option(help="Send the valid events and report the rest, instead of nothing.")
    ] = False,
    raw: Annotated[
        bool,
        typer.Option(help="Send every non-empty line as it is, unchecked (to test dead letters)."),
    ] = False,
) -> None:
    """Produce events from stdin to an input topic, keyed by each event's strongest identifier.

    Takes JSON Lines, a JSON array, or pretty-printed objects one after another. Every event
    is checked with the worker's own decoder first: if any is refused, each is reported with
    its line and reason and nothing is sent (unless --skip-invalid); the exit status is 1.
    """
    from streams.codec import Codec
    from streams.event_files import read_events
    from streams.identity.resolver import routing_key
    from streams.producer import EventProducer

    settings = get_settings()
    topic = settings.input_topic(kind)
    text = sys.stdin.read()
    sends: list[tuple[bytes | None, bytes]]
    if raw:
        sends = [(None, line.strip().encode()) for line in text.splitlines() if line.strip()]
        refused = 0
    else:
        checked = read_events(text, kind, Codec(settings.schemas_dir))
        bad = [c for c in checked if c.event is None]
        sys.stderr.write("".join(f"line {item.line}: {item.problem}\n" for item in bad))
        refused = len(bad)
        if bad and not skip_invalid:
            err.print(f"nothing sent: {plural(refused, 'event')} of {len(checked)} refused")
            raise typer.Exit(1)
        sends = [(routing_key(c.event).encode(), c.value) for c in checked if c.event]
    with kafka(settings) as bootstrap:
        ensure_topics(bootstrap, settings)
        producer = EventProducer(bootstrap, settings=settings)
        for key, value in sends:
            producer.send_raw(topic, key, value)
        producer.flush(settings.kafka_connect_timeout_seconds)
    err.print(f"produced {plural(len(sends), 'event')} to {topic}")
    if refused:
        err.print(f"refused {plural(refused, 'event')}")
        raise typer.Exit(1)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


IdentifierArgument = Annotated[
    str,
    typer.Argument(
        help="A profile id (p_…), an email, or kind:value (user_id:42, anonymous_id:abc)."
    ),
]
ApiOption = Annotated[str | None, typer.Option(help="Worker API base URL.")]


@cli.command()
def profile(identifier: IdentifierArgument, api: ApiOption = None) -> None:
    """Print a profile, looked up through a worker's API (with CDP_API_TOKEN when set)."""
    path, params = identifier_lookup(identifier)
    console.print_json(data=api_get(api, path, params))


def identifier_lookup(identifier: str) -> tuple[str, dict[str, str]]:
    """:func:`profile_lookup`, or exit 2 saying what an identifier may look like."""
    lookup = profile_lookup(identifier)
    if lookup is None:
        sys.stderr.write(
            f"cannot tell what {identifier!r} is: give kind:value "
            f"(user_id:{identifier}, anonymous_id:{identifier}, email:…) or a profile id p_…\n"
        )
        raise typer.Exit(2)
    return lookup


def api_get(api: str | None, path: str, params: dict[str, str]) -> Any:
    """The JSON a worker's API answers to a GET (with CDP_API_TOKEN when set); anything but
    200 is reported and exits."""
    import httpx  # here, not at the top: a worker starts sooner without it

    settings = get_settings()
    base = (api or settings.api_url).rstrip("/")
    token = settings.api_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        response = httpx.get(f"{base}{path}", params=params, headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach the worker API at {base}: {exc}[/]")
        raise typer.Exit(2) from exc
    if response.status_code != 200:
        err.print(
            f"[red]{response.status_code}: {response.json().get('message', response.text)}[/]"
        )
        raise typer.Exit(1)
    return response.json()


def profile_lookup(identifier: str) -> tuple[str, dict[str, str]] | None:
    """The API path and query for an identifier as typed; None when its kind is unclear."""
    kinds = {kind.value for kind in IdentifierKind}
    kind, sep, value = identifier.partition(":")
    if sep and kind in kinds and value:
        return "/profiles", {kind: value}
    if PROFILE_ID.match(identifier):
        return f"/profiles/{identifier}", {}
    if EMAIL.match(identifier):
        return "/profiles", {IdentifierKind.EMAIL.value: identifier}
    return None


@cli.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(min=1, help="Seconds to run; default until Ctrl-C.")
    ] = None,
    rate: Annotated[
        float,
        typer.Option(min=1, max=100_000, help="Shopper actions per second (each 1 to 4 events)."),
    ] = 300,
    shoppers: Annotated[int, typer.Option(min=1, help="Simulated shoppers.")] = 2000,
    mix: Annotated[
        str | None,
        typer.Option(
            help="Event mix as name=weight pairs, e.g. page-view=80,order=20; names are event "
            "kinds or the simulation's actions. Default: a shop's day, mostly browsing."
        ),
    ] = None,
) -> None:
    """Broker, worker, collector, simulated shoppers and a demo shop (/shop) with a live view."""
    from streams.demo.runner import DemoOptions, run_demo
    from streams.demo.traffic import parse_mix

    try:
        weights = parse_mix(mix) if mix is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mix") from exc

    settings = get_settings()
    ensure_port_free(settings.web_host, settings.web_port, "CDP_WEB_PORT")
    ensure_port_free(settings.collector_host, settings.collector_port, "CDP_COLLECTOR_PORT")
    ensure_port_free(LOOPBACK, settings.demo_shop_port, "CDP_DEMO_SHOP_PORT")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with kafka(settings, log_file=settings.data_dir / "broker.log") as bootstrap:
        ensure_topics(bootstrap, settings)
        options = DemoOptions(duration, rate, shoppers, weights)
        code = run_demo(settings, bootstrap, options, console)
    raise typer.Exit(code)


dead_letters = typer.Typer(
    help="Inspect the dead-letter topic and replay letters after a fix.", no_args_is_help=True
)
cli.add_typer(dead_letters, name="dead-letters")

ReasonOption = Annotated[
    list[str] | None, typer.Option("--reason", help="Only this reason (repeatable).")
]
TopicOption = Annotated[
    list[str] | None, typer.Option("--topic", help="Only letters from this topic (repeatable).")
]
AtOption = Annotated[
    list[str] | None,
    typer.Option("--at", help="Only the letter at PARTITION:OFFSET of the dead-letter topic."),
]


def running_kafka(settings: Settings) -> str:
    """The configured Kafka or the embedded broker already running: never a new, empty one."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    if is_listening(LOOPBACK, settings.embedded_broker_port):
        return f"{LOOPBACK}:{settings.embedded_broker_port}"
    err.print("[red]no broker: set CDP_KAFKA_BOOTSTRAP, or run cdp worker / cdp broker first[/]")
    raise typer.Exit(2)


def chosen_letters(
    settings: Settings, reason: list[str] | None, topic: list[str] | None, at: list[str] | None
) -> tuple[str, list[DeadLetter]]:
    from streams.codec import Codec
    from streams.runtime.dead_letters import read, select

    bootstrap = running_kafka(settings)
    letters = read(bootstrap, settings.dead_letter_topic, Codec(settings.schemas_dir))
    return bootstrap, select(letters, reasons=reason or (), topics=topic or (), at=at or ())


@dead_letters.command("list")
def list_dead_letters(
    reason: ReasonOption = None,
    topic: TopicOption = None,
    at: AtOption = None,
    limit: Annotated[int, typer.Option(help="Show the latest N letters.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="All matching letters as JSON lines (bytes base64).")
    ] = False,
) -> None:
    """Dead letters by reason and topic, and the latest ones with their details."""
    from streams.runtime.dead_letters import count_by

    settings = get_settings()
    _, letters = chosen_letters(settings, reason, topic, at)
    if as_json:
        for letter in letters:
            sys.stdout.write(json.dumps(letter.to_json()) + "\n")
        return
    console.print(f"[bold]{len(letters)}[/] dead letters on {settings.dead_letter_topic}")
    for field, title in (("reason", "reason"), ("topic", "from topic")):
        table = Table(title.capitalize(), "letters", box=box.SIMPLE_HEAD)
        for name, count in count_by(letters, field).most_common():
            table.add_row(name, str(count))
        console.print(table)
    latest = sorted(letters, key=lambda letter: letter.dead_lettered_at)[-limit:]
    table = Table("at", "dead-lettered", "from", "reason", "detail", "bytes", box=box.SIMPLE_HEAD)
    for letter in latest:
        when = datetime.fromtimestamp(letter.dead_lettered_at / 1000, UTC)
        table.add_row(
            letter.at,
            when.strftime("%Y-%m-%d %H:%M:%S"),
            f"{letter.topic}[{letter.source_partition}]@{letter.source_offset}",
            letter.reason,
            letter.detail,
            str(len(letter.value)),
        )
    if latest:
        console.print(table)


@dead_letters.command("replay")
def replay_dead_letters(
    reason: ReasonOption = None,
    topic: TopicOption = None,
    at: AtOption = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every letter (otherwise a filter is required).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Say what would be replayed, send nothing.")
    ] = False,
) -> None:
    """Publish chosen letters again to their original topic, with their key and headers."""
    from streams.runtime.dead_letters import count_by, replay

    if not (reason or topic or at or replay_all):
        err.print("[red]choose letters with --reason, --topic or --at, or pass --all[/]")
        raise typer.Exit(2)
    bootstrap, letters = chosen_letters(get_settings(), reason, topic, at)
    by_topic = ", ".join(f"{n} to {t}" for t, n in count_by(letters, "topic").most_common())
    if dry_run:
        console.print(f"would replay {len(letters)} letters ({by_topic or 'none'})")
        return
    sent = replay(bootstrap, letters)
    console.print(f"replayed {sent} letters ({by_topic or 'none'})")


privacy_cli = typer.Typer(
    help=(
        "Serve the rights of the people profiled: erase, suppress, unsuppress a person by one"
        " identifier; a request's status; export everything held about a person."
    ),
    no_args_is_help=True,
)
cli.add_typer(privacy_cli, name="privacy")
RequestIdentifierArgument = Annotated[
    str,
    typer.Argument(help="kind:value (email:ann@example.com, user_id:42, anonymous_id:abc)."),
]


def put_request(type_name: str, identifier: str) -> None:
    """Put a privacy request on its topic; print its id (stdout) and what to ask next."""
    import uuid

    from streams.events import now_ms
    from streams.privacy.requests import InvalidRequestError, new_request
    from streams.producer import EventProducer

    settings = get_settings()
    try:
        request = new_request(
            type_name, identifier, settings.partitions, uuid.uuid4().hex, now_ms()
        )
    except InvalidRequestError as exc:
        sys.stderr.write(f"{exc}\n")
        raise typer.Exit(2) from exc
    bootstrap = running_kafka(settings)
    ensure_topics(bootstrap, settings)
    producer = EventProducer(bootstrap, settings=settings)
    producer.send_raw(
        settings.privacy_requests_topic, request.identifier.encode(), request.to_bytes()
    )
    producer.flush(settings.kafka_connect_timeout_seconds)
    # Plain writes: a terminal's width must not wrap the id a script reads.
    sys.stdout.write(f"{request.request_id}\n")
    sys.stderr.write(
        f"{request.type.value} request taken; see: cdp privacy status {request.request_id}\n"
    )


@privacy_cli.command("erase")
def privacy_erase(
    identifier: RequestIdentifierArgument,
    suppress: Annotated[
        bool,
        typer.Option(
            "--suppress",
            help="Also drop every later event carrying any identifier of the person "
            "(suppress_with_delete).",
        ),
    ] = False,
) -> None:
    """Erase the profile IDENTIFIER belongs to, with everything pointing to it (delete)."""
    put_request("suppress_with_delete" if suppress else "delete", identifier)


@privacy_cli.command("suppress")
def privacy_suppress(identifier: RequestIdentifierArgument) -> None:
    """Drop every later event routed under IDENTIFIER (suppress); nothing is erased."""
    put_request("suppress", identifier)


@privacy_cli.command("unsuppress")
def privacy_unsuppress(identifier: RequestIdentifierArgument) -> None:
    """Take IDENTIFIER off the suppression list (unsuppress)."""
    put_request("unsuppress", identifier)


@privacy_cli.command("status")
def privacy_status(
    request_id: Annotated[str, typer.Argument(help="The id erase/suppress printed (r_…).")],
    api: ApiOption = None,
) -> None:
    """Print a privacy request's status and timings, asked of a worker's API."""
    console.print_json(data=api_get(api, f"/privacy/requests/{request_id}", {}))


@privacy_cli.command("export")
def privacy_export(identifier: IdentifierArgument, api: ApiOption = None) -> None:
    """Print everything held about a person as one JSON document (the access right)."""
    path, params = identifier_lookup(identifier)
    profile_id = identifier if not params else api_get(api, path, params)["profile_id"]
    sys.stdout.write(json.dumps(api_get(api, f"/profiles/{profile_id}/export", {}), indent=2))
    sys.stdout.write("\n")


journeys_cli = typer.Typer(help="Check journey definitions, and try them without Kafka.")
cli.add_typer(journeys_cli, name="journeys")


@journeys_cli.command("check")
def journeys_check(
    file: Annotated[Path, typer.Argument(help="A journeys file (YAML).")],
    segments: Annotated[
        Path | None, typer.Option(help="The segments file (default: CDP_SEGMENTS_FILE or shipped).")
    ] = None,
) -> None:
    """Check a journeys file as a worker would at start; one line naming journey, step and
    problem when it is not valid (exit status 1)."""
    from streams.rule_files import DefinitionError
    from streams.steps.process import Rules

    try:
        rules = Rules.load(segments or get_settings().segments_file, file)
    except DefinitionError as exc:
        sys.stderr.write(f"{exc}\n")
        raise typer.Exit(1) from exc
    for journey in rules.journeys:
        sends = [step.key for step in journey.program if hasattr(step, "template")]
        console.print(
            f"{journey.name}: entry {journey.entry.kind}:{journey.entry.pattern}, "
            f"{plural(len(journey.program), 'step')}, sends {', '.join(sends)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"ok: {plural(len(rules.journeys), 'journey')}")


@journeys_cli.command("simulate")
def journeys_simulate(
    file: Annotated[Path, typer.Argument(help="A journeys file (YAML).")],
    events: Annotated[
        Path,
        typer.Option(
            help="Events, JSON Lines (or an array): each an input event as the topics take it, "
            'with "kind": page-view | order | email | identify.'
        ),
    ],
    after: Annotated[
        str, typer.Option(help="How long the clock runs on after the last event: 30s, 12h, 90d.")
    ] = "30d",
    segments: Annotated[
        Path | None, typer.Option(help="The segments file (default: CDP_SEGMENTS_FILE or shipped).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Print what the journeys would send when, and every journey decision, on a virtual
    clock that runs from event to event and on to due steps: no Kafka, no worker."""
    from streams.codec import Codec, DecodeError
    from streams.event_files import documents
    from streams.journeys.definitions import duration_ms
    from streams.rule_files import DefinitionError
    from streams.steps.process import Rules
    from streams.steps.simulate import simulate

    settings = get_settings()
    run_on = duration_ms(after)
    if run_on is None or run_on < 0:
        sys.stderr.write(f"--after must be a duration like 30s, 12h, 90d; got {after!r}\n")
        raise typer.Exit(2)
    try:
        rules = Rules.load(segments or settings.segments_file, file)
    except DefinitionError as exc:
        sys.stderr.write(f"{exc}\n")
        raise typer.Exit(1) from exc
    try:
        text = events.read_text(encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"cannot read {events}: {exc}\n")
        raise typer.Exit(2) from exc
    codec = Codec(settings.schemas_dir)
    decoded, problems = [], []
    for line, value, error in documents(text):
        if error is None and not (isinstance(value, dict) and value.get("kind") in _KINDS):
            error = f'each event needs "kind": one of {", ".join(_KINDS)}'
        if error is None:
            assert isinstance(value, dict)
            fields = {k: v for k, v in value.items() if k != "kind"}
            try:
                decoded.append(codec.decode(EventKind(value["kind"]), json.dumps(fields).encode()))
            except DecodeError as exc:
                error = f"{exc.reason.value}: {exc.detail}"
        if error is not None:
            problems.append(f"line {line}: {error}")
    if problems:
        sys.stderr.write("".join(f"{p}\n" for p in problems))
        raise typer.Exit(1)
    last = max((e.occurred_at for e in decoded), default=0)
    simulation = simulate(rules, decoded, until=last + run_on)
    for entry in sorted(simulation.lines, key=lambda e: e.at):
        if entry.kind == "segment_change":
            continue
        if as_json:
            console.print_json(data={"kind": entry.kind, **entry.record}, indent=None)
            continue
        when = datetime.fromtimestamp(entry.at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        r = entry.record
        if entry.kind == "send":
            what = f"SEND {r['journey']}/{r['step']} to {r['email']}"
        else:
            detail = [r["step"], r["reason"], r["action"]]
            if r["due_at"] is not None:
                due = datetime.fromtimestamp(r["due_at"] / 1000, UTC)
                detail.append(f"until {due:%Y-%m-%d %H:%M:%SZ}")
            what = f"{r['kind']} {r['journey']} " + " ".join(str(d) for d in detail if d)
        console.print(f"{when}  {entry.profile_id}  {what}", highlight=False, soft_wrap=True)
    sent = sum(1 for entry in simulation.lines if entry.kind == "send")
    err.print(f"{plural(len(decoded), 'event')}, {plural(sent, 'send')}")


_KINDS = [kind.value for kind in EventKind]


VERBOSE = "--verbose"


@cli.callback()
def options(
    verbose: Annotated[
        bool, typer.Option(VERBOSE, help="Show tracebacks of errors, for bug reports.")
    ] = False,
) -> None:
    """cdp-streams: Kafka-native customer data platform core."""
    sys.stderr.write("".join(f"warning: {warning}\n" for warning in unknown_variables()))


def main() -> None:
    """The ``cdp`` command: a mistake in a setting or option, an unreachable broker or a taken
    port is one line naming what to fix, not a traceback (``--verbose`` keeps them)."""
    from streams.runtime.topics import KafkaUnreachableError

    logging.basicConfig(level=logging.WARNING)
    try:
        cli(standalone_mode=True)
    except SettingsError as exc:
        if VERBOSE in sys.argv:
            raise
        sys.stderr.write("".join(f"{problem}\n" for problem in exc.problems))
        sys.exit(2)
    except (KafkaUnreachableError, PortInUseError) as exc:
        if VERBOSE in sys.argv:
            raise
        sys.stderr.write(f"{exc}\n")
        sys.exit(2 if isinstance(exc, PortInUseError) else 1)
    except ConnectionSetupError as exc:
        if VERBOSE in sys.argv:
            raise
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)
