"""Subscriptions' pure logic: the organization of every event, filters, roles, signing,
URL safety, retry delays, and the SSE ring."""

from __future__ import annotations

import base64
import ipaddress
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from services.gateway.events import filters, signing
from services.gateway.events.api import parse_duration
from services.gateway.events.filters import EventFilter, matches, may_read, parse_types
from services.gateway.events.service import retry_delay, webhook_id_for
from services.gateway.events.stream import EventHub, frame, stream_event
from services.gateway.events.urls import refusal
from services.gateway.identity.auth import Principal
from services.gateway.identity.models import Organization, Role, User
from services.gateway.settings import EventStreamSettings, WebhookSettings
from shared.errors import InvalidInput
from shared.events import EVENT_TYPES, ORGANIZATION_FIELD, Event, decode_event, organization_of

ART = {"organization": "acme", "name": "iris", "version": "v1"}
DEP = {"organization": "acme", "cluster": "c", "namespace": "n", "name": "web"}
PUSHED = {"artifact": ART, "size_bytes": 1, "object_key": "k"}
SPEC = {"deployment": DEP, "bento": ART, "revision": 1, "spec": {}}
BUILD = {"build_id": "b", "bento": ART}
# One valid event of every type. A new type fails `test_every_event_type_...` until it has
# a sample here, and the sample must name its organization.
SAMPLES: dict[str, dict[str, Any]] = {
    "bento.pushed": PUSHED,
    "model.pushed": PUSHED,
    "bento.deleted": {"artifact": ART},
    "model.deleted": {"artifact": ART},
    "build.requested": BUILD,
    "build.started": {**BUILD, "image": "i"},
    "build.completed": {
        **BUILD,
        "image": "i@sha256:x",
        "digest": "sha256:x",
        "duration_seconds": 1,
    },
    "build.failed": {**BUILD, "reason": "BuildError", "message": "m"},
    "deployment.requested": SPEC,
    "deployment.updated": SPEC,
    "deployment.terminated": {"deployment": DEP},
    "deployment.deleted": {"deployment": DEP},
    "deployment.status_changed": {"deployment": DEP, "status": "running"},
}


def _with_organization(value: Any, organization: str) -> Any:
    if isinstance(value, dict):
        return {
            k: organization if k == "organization" else _with_organization(v, organization)
            for k, v in value.items()
        }
    return value


def sample(event_type: str, organization: str = "acme") -> Event:
    data = _with_organization(SAMPLES[event_type], organization)
    event: Event = decode_event({"source": "/t", "type": event_type, "subject": "s", "data": data})
    return event


def test_every_event_type_names_its_organization() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES), "add a sample of the new event type above"
    assert set(ORGANIZATION_FIELD) == set(EVENT_TYPES), (
        "an event type has no organization in its data: subscriptions cannot route it"
    )
    for event_type in EVENT_TYPES:
        assert organization_of(sample(event_type, "globex")) == "globex", event_type


def principal(role: Role, scopes: tuple[str, ...] = ("api",), org: str = "acme") -> Principal:
    now = datetime.now(UTC)
    return Principal(
        user=User(1, "u", "alice", "", "", "", now, None),
        org=Organization(1, "o", org, "", now, None),
        role=role,
        token_uid="t",
        token_name="t",
        scopes=frozenset(scopes),
    )


def test_roles_and_scopes_decide_the_readable_types() -> None:
    guest = principal(Role.GUEST)
    assert may_read(guest, "deployment.status_changed")
    assert not may_read(guest, "deployment.requested")
    assert may_read(principal(Role.DEVELOPER), "deployment.requested")
    org_only = principal(Role.ADMIN, ("read_organization",))
    assert may_read(org_only, "bento.pushed")
    assert not may_read(org_only, "deployment.status_changed")
    assert may_read(principal(Role.ADMIN, ("operate_cluster",)), "deployment.updated")
    assert filters.readable_types(principal(Role.ADMIN)) == frozenset(EVENT_TYPES)


def test_type_patterns() -> None:
    assert parse_types("deployment.*, bento.pushed,,bento.pushed") == (
        "deployment.*",
        "bento.pushed",
    )
    assert matches(("deployment.*",), "deployment.status_changed")
    assert not matches(("deployment.*",), "build.completed")
    assert matches((), "anything")
    assert matches(("build.c*",), "build.completed")
    for bad, message in (
        ("bento.pushd", "unknown event type"),
        ("nothing.*", "matches no event type"),
        ("a*b*", "may only end"),
    ):
        with pytest.raises(InvalidInput, match=message):
            parse_types(bad)


def test_a_filter_accepts_only_its_organization_and_what_it_asked_for() -> None:
    wanted = EventFilter.for_principal(
        principal(Role.GUEST), types="bento.*", subject="bentos/acme/iris:*"
    )
    assert wanted.accepts("acme", "bento.pushed", "bentos/acme/iris:v1")
    assert not wanted.accepts("globex", "bento.pushed", "bentos/acme/iris:v1")
    assert not wanted.accepts("acme", "bento.pushed", "bentos/acme/wine:v1")
    assert not wanted.accepts("acme", "model.pushed", "bentos/acme/iris:v1")
    assert not wanted.accepts("acme", "bento.pushed", None)


def test_signatures_verify_with_the_reference_implementation() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    body = b'{"specversion":"1.0","id":"e1"}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = signing.headers(secret, "msg_1", timestamp, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"specversion": "1.0", "id": "e1"}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(secret).verify(body + b" ", headers)


def test_secrets_are_sealed_not_stored() -> None:
    box = signing.SecretBox(b"k")
    secret = signing.new_secret()
    sealed = box.seal(secret)
    assert secret.encode() not in sealed
    assert box.open(sealed) == secret
    with pytest.raises(RuntimeError, match="does not decrypt"):
        signing.SecretBox(b"other").open(sealed)


def test_webhook_ids_are_stable_per_event_and_endpoint() -> None:
    assert webhook_id_for("w1", "e1") == webhook_id_for("w1", "e1")
    assert webhook_id_for("w1", "e1") != webhook_id_for("w2", "e1")
    assert webhook_id_for("w1", "e1").startswith("msg_")


def test_retry_delays_grow_exponentially_with_jitter_and_a_ceiling() -> None:
    settings = WebhookSettings(retry_base_seconds=1, retry_max_seconds=60)
    rand = random.Random(7)
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (20, 60)):
        delays = {retry_delay(attempt, settings, rand) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("127.0.0.1", None),  # allowed below
        ("127.9.9.9", None),
        ("::1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.5", "a multicast address"),
        ("240.0.0.1", "a private address"),
        ("100.64.0.1", "a non-public address"),  # shared address space (carrier NAT)
        ("::ffff:192.168.0.1", "a private address"),
        ("fc00::1", "a private address"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_which_addresses_a_webhook_may_reach(address: str, reason: str | None) -> None:
    allowed = [ipaddress.ip_network("127.0.0.0/8")]
    assert refusal(ipaddress.ip_address(address), allowed) == reason


def test_replay_durations() -> None:
    assert parse_duration("1h").total_seconds() == 3600
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("90s").total_seconds() == 90
    for bad in ("", "1x", "h", "1h 2m", "-1h"):
        with pytest.raises(InvalidInput):
            parse_duration(bad)


def test_the_ring_is_bounded_and_readers_take_what_follows_their_cursor() -> None:
    hub = EventHub(EventStreamSettings(buffer_events=16))
    for seq in range(1, 41):
        hub.publish(seq, sample("bento.pushed").model_dump_json().encode())
    hub.publish(41, b"not an event")
    assert hub.head == 41
    assert hub.floor == 24  # 25..40 are held, the rest fell out
    assert [e.seq for e in hub.after(30, 100)] == list(range(31, 41))
    assert [e.seq for e in hub.after(30, 3)] == [31, 32, 33]
    assert hub.after(40, 10) == []
    assert stream_event(1, b"{}") is None
    event = stream_event(7, sample("bento.pushed").model_dump_json().encode())
    assert event is not None
    assert frame(event).startswith(b"id: 7\nevent: bento.pushed\ndata: {")
    assert frame(event).endswith(b"}\n\n")
