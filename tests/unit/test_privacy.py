"""Erasure and suppression through the real steps, in memory, in any interleaving.

The :class:`~tests.unit.test_identity_protocol.Cluster` runs the identity, profile and
privacy steps over per-partition queues with partitions picked at random. Whatever came
before (events on several devices, merges, duplicates) and whatever runs beside the
erasure, once it completes no table key or value and no later output names the person.
"""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import IdentifierKind, identifier_key
from streams.identity.identifiers import merged_into
from streams.identity.resolver import profile_id_for
from streams.privacy.requests import (
    InvalidRequestError,
    PrivacyEvent,
    PrivacyRequest,
    RequestStatus,
    RequestType,
    Status,
    is_request_id,
    parse_identifier,
    request_id_for,
)
from streams.profiles.model import Erased, Forward, dump_stored
from streams.profiles.retention import DAY_MS, DEFAULT_RETENTION, stored_expires_at
from streams.steps.identity import identity_step
from streams.steps.in_place import Headers
from streams.steps.messages import (
    Completed,
    Erase,
    Forget,
    InternalMessage,
    Out,
    Request,
    Send,
    Unlink,
    decode,
    encode,
)
from streams.steps.privacy import erasure_cause
from streams.steps.process import Rules
from tests.unit.test_identity_protocol import PARTITIONS, Cluster, Held, Person
from tests.unit.test_reducer import T0, page_view
from tests.unit.test_retention import expire

ERASING = (RequestType.DELETE, RequestType.SUPPRESS_WITH_DELETE)


def request(cluster: Cluster, kind: RequestType, identifier: str, nonce: str = "n") -> str:
    request_id = request_id_for(identifier, nonce, PARTITIONS)
    message = Request(request_id, kind, identifier, T0 + 10_000)
    cluster._append(Send(Out.IDENTITY, request_id, message))
    return request_id


def completions(cluster: Cluster, request_id: str) -> list[PrivacyEvent]:
    return [s.message for s in cluster.sent(Out.PRIVACY_EVENTS) if s.key == request_id]


def names(person: Person) -> set[str]:
    """Every identifier value and every profile id the person's data could be found by."""
    founded = {profile_id_for(key, PARTITIONS) for key in person.keys}
    values = {key.partition(":")[2] for key in person.keys}
    return {*person.keys, *values, *founded}


def state_text(cluster: Cluster) -> list[str]:
    """Every key and value of every table, as text."""
    rows: list[str] = []
    for key, owner in cluster.identities.values.items():
        rows.append(f"{key.decode()} {owner.encode().decode()}")
    for key, stored in cluster.profiles.values.items():
        rows.append(f"{key.decode()} {dump_stored(stored).decode()}")
    for key, value in cluster.privacy.values.items():
        rows.append(f"{key.decode()} {value.decode()}")
    return rows


def outputs_text(sends: list[Send]) -> list[str]:
    return [f"{s.key} {orjson.dumps(s.message.to_record()).decode()}" for s in sends]


def mentions(rows: list[str], person: Person) -> list[str]:
    wanted = names(person)
    return [row for row in rows if any(name in row for name in wanted)]


def erased_marks(cluster: Cluster) -> dict[str, Erased]:
    """The marks erased profiles leave for a day (an id and a time: events of before the
    erasure routed there on a replay are dropped), by profile id."""
    values = cluster.profiles.values.items()
    return {key.decode(): v for key, v in values if isinstance(v, Erased)}


def left_named(cluster: Cluster, person: Person) -> list[str]:
    """The table rows naming the person, but the erased profiles' marks."""
    marks = erased_marks(cluster)
    return [row for row in mentions(state_text(cluster), person) if row.split()[0] not in marks]


def forget_marks(cluster: Cluster) -> None:
    """What the worker's timers do a day after the erasures: their marks are forgotten."""
    marks = erased_marks(cluster)
    cluster.now = max((mark.at for mark in marks.values()), default=cluster.now) + DAY_MS
    for profile_id in marks:
        expire(cluster, profile_id)


def all_outputs(cluster: Cluster) -> list[Send]:
    return [send for sends in cluster.outputs.values() for send in sends]


@pytest.mark.parametrize("held", [Held.ALWAYS, Held.AT_RANDOM], ids=lambda h: h.value)
@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(ERASING),
    views=st.integers(0, 2),
    by=st.sampled_from(["user", "email", "device"]),
    settle=st.booleans(),
    shuffle=st.randoms(use_true_random=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_after_an_erasure_nothing_names_the_person(
    held: Held,
    kind: RequestType,
    views: int,
    by: str,
    settle: bool,
    shuffle: random.Random,
    seed: int,
) -> None:
    person, bystander = Person(0), Person(1)
    before = person.events(views) + bystander.events(views)
    before += [shuffle.choice(before) for _ in range(3)]  # duplicates
    shuffle.shuffle(before)
    cluster = Cluster(rnd=random.Random(seed), held=held)
    for event in before:
        cluster.produce(event)
        cluster.run(steps=cluster.rnd.randint(0, 4))
    cluster.run()
    identifier = {
        "user": identifier_key(IdentifierKind.USER_ID, person.user),
        "email": identifier_key(IdentifierKind.EMAIL, person.email),
        "device": identifier_key(IdentifierKind.ANONYMOUS_ID, person.devices[2]),
    }[by]
    request_id = request(cluster, kind, identifier)
    beside = [page_view(anon=f"other-{i}", event_id=f"other-{i}", at=T0 + 500) for i in range(3)]
    for event in beside:
        cluster.produce(event)
        cluster.run(steps=cluster.rnd.randint(0, 4))
    cluster.run()

    done = completions(cluster, request_id)
    assert len(done) == 1
    assert done[0].type == "erasure_completed"
    assert done[0].profile_found
    assert not left_named(cluster, person)
    # Every segment the person was in is exited, named as the erasure's doing.
    exits = [
        s.message
        for s in cluster.sent(Out.SEGMENT_CHANGES)
        if s.message.cause_event_id == erasure_cause(request_id)
    ]
    assert {c.segment for c in exits} >= {"newsletter_subscriber"}
    assert all(c.change == "exited" for c in exits)
    # The bystander is untouched.
    kept = cluster.resolve(identifier_key(IdentifierKind.EMAIL, bystander.email))
    assert kept.profile_id == bystander.profile_id
    assert kept.orders_placed == 1

    # Afterwards: the request again (a replay); the person's events of before the erasure
    # again (read again after a crash: its memory of applied events went with the profile);
    # for suppress_with_delete new ones too, on any device.
    written = len(all_outputs(cluster))
    cluster._append(
        Send(Out.IDENTITY, request_id, Request(request_id, kind, identifier, T0 + 10_000))
    )
    if settle:
        later = person.events(views)
        if kind is RequestType.SUPPRESS_WITH_DELETE:
            later += [
                page_view(anon=person.devices[1], event_id="later-1", at=T0 + 20000),
                page_view(anon=None, email=person.email, event_id="later-2", at=T0 + 20000),
            ]
        for event in later:
            cluster.produce(event)
            cluster.run(steps=cluster.rnd.randint(0, 4))
    cluster.run()
    assert len(completions(cluster, request_id)) == 1
    assert not mentions(outputs_text(all_outputs(cluster)[written:]), person)
    assert not left_named(cluster, person)
    forget_marks(cluster)
    assert not mentions(state_text(cluster), person)


def test_erasure_exits_the_journeys_the_profile_is_in() -> None:
    person = Person(0)
    cluster = Cluster()
    for event in person.events(1):
        cluster.produce(event)
    cluster.run()
    profile = cluster.resolve(identifier_key(IdentifierKind.EMAIL, person.email))
    assert profile.journey_flows, "the sign-up enters the welcome journey"
    request_id = request(
        cluster, RequestType.DELETE, identifier_key(IdentifierKind.EMAIL, person.email)
    )
    cluster.run()
    exited = [
        s.message
        for s in cluster.sent(Out.JOURNEY_EVENTS)
        if s.message.cause_id == erasure_cause(request_id)
    ]
    assert exited
    assert all(e.kind.value == "exited" and e.reason.value == "erased" for e in exited)


def test_an_unknown_identifier_completes_with_nothing_found() -> None:
    cluster = Cluster()
    request_id = request(cluster, RequestType.DELETE, "email:nobody@example.com")
    cluster.run()
    (done,) = completions(cluster, request_id)
    assert not done.profile_found
    status = RequestStatus.decode(cluster.privacy.values[request_id.encode()])
    assert status.status is Status.COMPLETED
    assert status.duration_ms is not None
    assert "nobody" not in cluster.privacy.values[request_id.encode()].decode()


def test_suppress_and_unsuppress_one_identifier() -> None:
    cluster = Cluster()
    email = "later@example.com"
    key = identifier_key(IdentifierKind.EMAIL, email)
    suppressed = request(cluster, RequestType.SUPPRESS, key)
    cluster.run()
    cluster.produce(page_view(anon=None, email=email, event_id="s-1"))
    cluster.run()
    assert not cluster.live_profiles()
    assert completions(cluster, suppressed)[0].type == "suppression_completed"
    unsuppressed = request(cluster, RequestType.UNSUPPRESS, key, nonce="2")
    cluster.run()
    assert completions(cluster, unsuppressed)[0].type == "unsuppression_completed"
    cluster.produce(page_view(anon=None, email=email, event_id="s-2"))
    cluster.run()
    assert [p.page_views for p in cluster.live_profiles()] == [1]
    assert not [k for k in cluster.privacy.values if k.startswith(b"s_")]


def test_request_ids_land_in_the_identifier_partition() -> None:
    from streams.partitioning import key_partition

    for n in range(50):
        identifier = f"email:p{n}@example.com"
        request_id = request_id_for(identifier, str(n), PARTITIONS)
        assert is_request_id(request_id)
        assert key_partition(request_id.encode(), PARTITIONS) == key_partition(
            identifier.encode(), PARTITIONS
        )


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("phone", "123", "identifier kind must be one of"),
        ("email", "   ", "identifier value must be 1 to"),
    ],
)
def test_bad_identifiers_are_named(kind: str, value: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_identifier(kind, value)


def test_requests_on_the_topic_are_checked() -> None:
    good = PrivacyRequest(
        request_id_for("email:a@b.c", "x", PARTITIONS), RequestType.DELETE, "email:a@b.c", T0
    )
    assert PrivacyRequest.from_bytes(good.to_bytes()) == good
    for bad in (
        b"{",
        b"{}",
        b'{"request_id": "r_1", "type": "delete", "identifier": "email:a@b.c", "received_at": 1}',
    ):
        with pytest.raises(InvalidRequestError):
            PrivacyRequest.from_bytes(bad)


def test_a_suppressed_identifier_joins_no_other_profile() -> None:
    """An event routed under another identifier (a new user id) keeps its own data, but the
    suppressed identifier it carries is refused, and not remembered by value."""
    cluster = Cluster()
    email = "gone@example.com"
    key = identifier_key(IdentifierKind.EMAIL, email)
    request(cluster, RequestType.SUPPRESS, key)
    cluster.run()
    cluster.produce(page_view(anon=None, user="u-new", email=email, event_id="s-1"))
    cluster.run()
    (profile,) = cluster.live_profiles()
    assert profile.user_ids == ("u-new",)
    assert not profile.emails
    assert email not in str(profile.to_dict())
    assert key.encode() not in cluster.identities.values


@pytest.mark.parametrize(
    "message",
    [
        Request("r_" + "a" * 24, RequestType.SUPPRESS, "email:a@b.c", T0),
        Erase("r_" + "a" * 24, T0, True),
        Unlink(("p_1", "p_2"), False),
        Unlink(("p_1",), True, T0),
        Forget(("p_1", "p_2")),
        Completed("r_" + "a" * 24, True),
    ],
    ids=lambda m: m.command.value,
)
def test_privacy_commands_cross_the_internal_topics_intact(message: InternalMessage) -> None:
    value, headers = encode(message)
    assert decode(value, headers) == message


def test_forwards_go_after_their_merge_markers_are_forgotten() -> None:
    """A profile remembers few ids (here 16): long after its merges their markers are gone,
    and the forwards they left are found as the profiles its identifiers founded."""
    person = Person(0)
    cluster = Cluster(rules=Rules.load(recent_ids=16))
    for event in person.events(1):
        cluster.produce(event)
    cluster.run()
    user = identifier_key(IdentifierKind.USER_ID, person.user)
    for n in range(40):
        cluster.produce(page_view(anon=None, user=person.user, event_id=f"late-{n}"))
    cluster.run()
    profile = cluster.resolve(user)
    assert not merged_into(profile), "the markers are still remembered"
    assert any(isinstance(v, Forward) for v in cluster.profiles.values.values())
    request(cluster, RequestType.DELETE, user)
    cluster.run()
    assert not left_named(cluster, person)
    forget_marks(cluster)
    assert not cluster.profiles.values


def test_a_replayed_request_erases_again_what_a_crash_left_behind() -> None:
    """A crashed batch's writes may reach the privacy table's changelog (the request's
    status) and not the others' (the tombstones): the request, read again, erases again."""
    cluster = Cluster()
    person = Person(0)
    for event in person.events(1):
        cluster.produce(event)
    cluster.run()
    profiles, identities = dict(cluster.profiles.values), dict(cluster.identities.values)
    key = identifier_key(IdentifierKind.EMAIL, person.email)
    request_id = request(cluster, RequestType.DELETE, key)
    cluster.run()
    assert not left_named(cluster, person)
    cluster.profiles.values.update(profiles)
    cluster.identities.values.update(identities)
    request(cluster, RequestType.DELETE, key)  # the same request, read again
    cluster.run()
    assert not left_named(cluster, person)
    assert len(completions(cluster, request_id)) == 1


def test_events_read_again_after_a_crash_before_the_unlinks_do_not_bring_the_person_back() -> None:
    """A worker killed after its profile stage erased the profile and before its identity
    stage applied the unlinks: on restart the person's events are read again and routed by
    the identity table of before, to the erased profile. Its mark drops them; the unlinks,
    read again too, then forget the identifiers. An event of after the erasure founds anew."""
    person = Person(0)
    cluster = Cluster(held=Held.NEVER)
    events = person.events(2)
    for event in events:
        cluster.produce(event)
    cluster.run()
    identities, privacy = dict(cluster.identities.values), dict(cluster.privacy.values)
    unlinks: list[Send] = []
    append = cluster._append

    def recording(send: Send, headers: Headers | None = None) -> None:
        if isinstance(send.message, Unlink):
            unlinks.append(send)
        append(send, headers)

    cluster._append = recording  # type: ignore[method-assign]
    email = identifier_key(IdentifierKind.EMAIL, person.email)
    request_id = request(cluster, RequestType.DELETE, email)
    cluster.run()
    assert unlinks
    # The crash: the identity stage's writes are lost; its input is read again.
    cluster.identities.values.clear()
    cluster.identities.values.update(identities)
    cluster.privacy.values.clear()
    cluster.privacy.values.update(privacy)
    for event in events:
        cluster.produce(event)
    for unlink in unlinks:
        append(unlink)
    cluster.run()

    assert len(completions(cluster, request_id)) == 1
    assert not cluster.live_profiles()
    assert not left_named(cluster, person)
    later = page_view(anon=None, email=person.email, event_id="after", at=T0 + 20_000)
    cluster.produce(later)
    cluster.run()
    assert cluster.resolve(email).page_views == 1


def test_an_erased_profiles_mark_is_kept_a_day_then_forgotten() -> None:
    cluster = Cluster()
    person = Person(0)
    for event in person.events(1):
        cluster.produce(event)
    cluster.run()
    request(cluster, RequestType.DELETE, identifier_key(IdentifierKind.USER_ID, person.user))
    cluster.run()
    key = person.profile_id.encode()
    mark = cluster.profiles.values[key]
    assert isinstance(mark, Erased)
    assert dump_stored(mark) == orjson.dumps({"erased_at": mark.at})
    assert stored_expires_at(orjson.loads(dump_stored(mark)), DEFAULT_RETENTION) == (
        mark.at + DAY_MS
    )
    cluster.now = mark.at + DAY_MS - 1
    expire(cluster, person.profile_id)
    assert cluster.profiles.values[key] == mark
    forget_marks(cluster)
    assert key not in cluster.profiles.values


def test_an_unlink_read_again_after_its_owner_went_still_marks_the_erasure() -> None:
    """A crash after the unlink's tombstone reached the changelog and before its erasure mark
    did: read again, it finds no owner, and marks the identifier all the same."""
    email = identifier_key(IdentifierKind.EMAIL, "a@example.com")
    step = identity_step(None, email, Unlink(("p_1",), False, erased_at=T0), PARTITIONS)
    assert step.erased_at == T0
    assert not step.delete
