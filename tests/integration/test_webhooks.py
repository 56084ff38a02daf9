"""Webhooks on a real gateway and real receivers: signed, retried, ordered, isolated."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.subscriptions import (
    LiveGateway,
    Receiver,
    eventually,
    live_gateway,
    publish,
    pushed,
    status_changed,
    subscription_settings,
)

WEBHOOKS = "/api/ekiben/v1/webhooks"


@pytest.fixture
async def gateway(nats_url: str, pg_dsn: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = subscription_settings(
        nats_url, pg_dsn, tmp_path / "token", webhooks={"max_attempts": 40}
    )
    async with live_gateway(settings) as live:
        yield live


async def create(
    gateway: LiveGateway, receiver: Receiver, token: str | None = None, **body: Any
) -> dict[str, Any]:
    response = await gateway.call("POST", WEBHOOKS, token, json={"url": receiver.url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secret = created["secret"]
    return created


async def deliveries(gateway: LiveGateway, uid: str, **params: str) -> list[dict[str, Any]]:
    response = await gateway.call(
        "GET", f"{WEBHOOKS}/{uid}/deliveries", params={"count": "1000", **params}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def by_subject(receiver: Receiver) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for received in receiver.received:
        seen[received.event["subject"]].append(received.event["id"])
    return seen


async def test_every_delivery_is_signed_structured_and_recorded(gateway: LiveGateway) -> None:
    async with Receiver() as receiver:
        created = await create(gateway, receiver, types=["bento.*"], description="ci")
        assert created["secret"].startswith("whsec_")
        events = [pushed("default", f"m{i % 4}", f"v{i}") for i in range(20)]
        await publish(gateway.nats_url, [*events, status_changed("default", "web")])
        await eventually(lambda: len(receiver.received) >= 20, what="20 deliveries")
        assert receiver.bad_signatures == []
        assert sorted(receiver.event_ids()) == sorted(e.id for e in events)
        for received, event in zip(
            sorted(receiver.received, key=lambda r: r.event["id"]),
            sorted(events, key=lambda e: e.id),
            strict=True,
        ):
            assert received.headers["content-type"].startswith("application/cloudevents+json")
            assert received.event == json.loads(event.model_dump_json())
            assert received.event["specversion"] == "1.0"
        assert len({r.webhook_id for r in receiver.received}) == 20
        # Each event in order per subject (the stream's order).
        expected: dict[str, list[str]] = defaultdict(list)
        for event in events:
            expected[event.subject or ""].append(event.id)
        assert by_subject(receiver) == expected

        # The secret is never shown again.
        got = await gateway.call("GET", f"{WEBHOOKS}/{created['uid']}")
        assert got.status_code == 200
        assert "secret" not in got.json()
        listed = await gateway.call("GET", WEBHOOKS)
        assert [w["uid"] for w in listed.json()["items"]] == [created["uid"]]
        assert "secret" not in listed.text
        assert created["secret"] not in listed.text
        stored = await gateway.runtime.pool.fetchval(
            "SELECT secret_encrypted FROM webhook_endpoints"
        )
        assert created["secret"].encode() not in stored

        # Every attempt is on record with its status code and latency.
        await eventually(
            lambda: _all_succeeded(gateway, created["uid"], 20), what="deliveries recorded"
        )
        records = await deliveries(gateway, created["uid"])
        assert {r["webhook_id"] for r in records} == {r.webhook_id for r in receiver.received}
        for record in records:
            [attempt] = record["history"]
            assert attempt["status_code"] == 200
            assert attempt["latency_ms"] > 0
            assert attempt["error"] is None
            assert attempt["response_body"] == "ok"

        # The test event arrives signed too, and the answer is its attempted delivery.
        tested = await gateway.call("POST", f"{WEBHOOKS}/{created['uid']}/test")
        assert tested.status_code == 200, tested.text
        assert tested.json()["status"] == "succeeded"
        assert receiver.received[-1].event["type"] == "ekiben.webhook.test"
        assert receiver.bad_signatures == []

        audit = await gateway.call("GET", "/api/ekiben/v1/audit")
        actions = [r["action"] for r in audit.json()["items"]]
        assert "webhook.created" in actions
        assert "webhook.tested" in actions


async def _all_succeeded(gateway: LiveGateway, uid: str, count: int) -> bool:
    records = await deliveries(gateway, uid, status="succeeded")
    return len(records) >= count


async def test_a_receiver_down_for_a_while_gets_everything_it_missed_in_order(
    gateway: LiveGateway,
) -> None:
    receiver = Receiver()
    await receiver.start()
    created = await create(gateway, receiver)
    await receiver.stop()  # connection refused from now on
    events = [pushed("default", f"m{i % 3}", f"v{i}") for i in range(30)]
    await publish(gateway.nats_url, events)
    pool = gateway.runtime.pool
    await eventually(
        lambda: _failed_attempts(gateway, 9), what="attempts failing while the receiver is down"
    )

    async def queued() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 30)

    await eventually(queued, what="30 deliveries queued")
    await receiver.start()
    try:
        await eventually(lambda: len(set(receiver.event_ids())) == 30, 30, "all 30 after recovery")
        expected: dict[str, list[str]] = defaultdict(list)
        for event in events:
            expected[event.subject or ""].append(event.id)
        assert by_subject(receiver) == expected
        assert receiver.bad_signatures == []
        records = await deliveries(gateway, created["uid"])
        retried = [r for r in records if len(r["history"]) > 1]
        assert retried, "some deliveries needed more than one attempt"
        for record in retried:
            assert "Cannot connect" in (record["history"][0]["error"] or "")
            assert record["history"][-1]["status_code"] == 200
    finally:
        await receiver.stop()


async def _failed_attempts(gateway: LiveGateway, count: int) -> bool:
    found = await gateway.runtime.pool.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE error IS NOT NULL"
    )
    return bool(found >= count)


async def test_a_receiver_answering_500_forever_is_disabled_with_a_reason_and_can_be_enabled(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    settings = subscription_settings(
        nats_url,
        pg_dsn,
        tmp_path / "token",
        webhooks={"max_attempts": 3, "disable_after_failures": 2},
    )
    async with live_gateway(settings) as gateway, Receiver(status=500) as receiver:
        created = await create(gateway, receiver)
        uid = created["uid"]
        # One subject: each delivery waits for the one before to succeed or fail for good.
        events = [pushed("default", "iris", "v1") for _ in range(3)]
        await publish(gateway.nats_url, events)

        async def disabled() -> bool:
            body = (await gateway.call("GET", f"{WEBHOOKS}/{uid}")).json()
            return body["enabled"] is False

        await eventually(disabled, what="the endpoint disabled")
        body = (await gateway.call("GET", f"{WEBHOOKS}/{uid}")).json()
        assert body["disabled_reason"] == (
            "disabled after 2 deliveries in a row failed every attempt; the last: HTTP 500"
        )
        assert body["failure_streak"] == 2
        assert receiver.requests == 6  # two deliveries, three attempts each
        records = {r["event_id"]: r for r in await deliveries(gateway, uid)}
        assert [records[e.id]["status"] for e in events] == ["failed", "failed", "pending"]
        assert [a["status_code"] for a in records[events[0].id]["history"]] == [500, 500, 500]
        # Nothing more is sent while it is disabled, and new events are not queued for it.
        await publish(gateway.nats_url, [pushed("default", "iris", "v2")])
        await asyncio.sleep(0.5)
        assert receiver.requests == 6
        assert len(await deliveries(gateway, uid)) == 3
        audit = (await gateway.call("GET", "/api/ekiben/v1/audit")).json()["items"]
        [auto] = [r for r in audit if r["action"] == "webhook.disabled"]
        assert auto["actor"] == "system:webhooks"
        assert "HTTP 500" in auto["details"]["reason"]
        refused = await gateway.call(
            "POST", f"{WEBHOOKS}/deliveries/{records[events[0].id]['uid']}/redeliver"
        )
        assert refused.status_code == 409

        # Re-enabled, with the receiver fixed, the pending delivery goes out.
        receiver.status = 200
        enabled = await gateway.call("PATCH", f"{WEBHOOKS}/{uid}", json={"enabled": True})
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["enabled"] is True
        assert enabled.json()["disabled_reason"] is None
        assert enabled.json()["failure_streak"] == 0
        await eventually(lambda: receiver.event_ids() == [events[2].id], what="sent after enabling")
        actions = [
            r["action"] for r in (await gateway.call("GET", "/api/ekiben/v1/audit")).json()["items"]
        ]
        assert "webhook.updated" in actions


async def test_a_redelivery_carries_the_same_webhook_id(gateway: LiveGateway) -> None:
    async with Receiver() as receiver:
        created = await create(gateway, receiver)
        await publish(gateway.nats_url, [pushed("default", "iris", "v1")])
        await eventually(lambda: len(receiver.received) == 1)
        await eventually(lambda: _all_succeeded(gateway, created["uid"], 1))
        [record] = await deliveries(gateway, created["uid"])
        again = await gateway.call("POST", f"{WEBHOOKS}/deliveries/{record['uid']}/redeliver")
        assert again.status_code == 202, again.text
        await eventually(lambda: len(receiver.received) == 2)
        first, second = receiver.received
        assert first.webhook_id == second.webhook_id == record["webhook_id"]
        assert first.body == second.body
        assert receiver.bad_signatures == []
        await eventually(lambda: _all_succeeded(gateway, created["uid"], 1))
        [after] = await deliveries(gateway, created["uid"])
        assert [a["attempt"] for a in after["history"]] == [1, 2]
        missing = await gateway.call("POST", f"{WEBHOOKS}/deliveries/nope/redeliver")
        assert missing.status_code == 404


async def test_refused_urls_are_4xx_with_a_reason(gateway: LiveGateway) -> None:
    for url, reason in (
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://192.168.0.10/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://[::ffff:10.0.0.1]/", "a private address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("ftp://example.com/hook", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("not a url", "unsupported scheme"),
        ("http:///nohost", "no host"),
    ):
        response = await gateway.call("POST", WEBHOOKS, json={"url": url})
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert reason in error["message"].replace("a unspecified", "an unspecified"), (url, error)
    assert await gateway.runtime.pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
    async with Receiver() as receiver:
        created = await create(gateway, receiver)
        moved = await gateway.call(
            "PATCH", f"{WEBHOOKS}/{created['uid']}", json={"url": "http://10.0.0.8/"}
        )
        assert moved.status_code == 422
        assert "private address" in moved.json()["error"]["message"]
    bad_type = await gateway.call("POST", WEBHOOKS, json={"url": receiver.url, "types": ["nope"]})
    assert bad_type.status_code == 422
    # Only admins manage webhooks.
    developer = await gateway.member_token("dev", "developer")
    refused = await gateway.call("POST", WEBHOOKS, developer, json={"url": receiver.url})
    assert refused.status_code == 403
    assert (await gateway.call("GET", WEBHOOKS, developer)).status_code == 403


async def test_an_organization_never_receives_another_organizations_events(
    gateway: LiveGateway,
) -> None:
    acme_token = await gateway.organization("acme")
    async with Receiver() as ours, Receiver() as theirs:
        await create(gateway, ours)
        acme_hook = await create(gateway, theirs, acme_token)
        # Neither sees the other's webhook.
        assert (await gateway.call("GET", f"{WEBHOOKS}/{acme_hook['uid']}")).status_code == 404
        mine = [pushed("default", "iris", f"v{i}") for i in range(5)]
        acme = [pushed("acme", "iris", f"v{i}") for i in range(5)] + [status_changed("acme", "web")]
        await publish(
            gateway.nats_url, [e for pair in zip(mine, acme, strict=False) for e in pair] + acme[5:]
        )
        await eventually(lambda: len(ours.received) >= 5 and len(theirs.received) >= 6)
        await asyncio.sleep(0.3)  # room for a wrong delivery to show up
        assert sorted(ours.event_ids()) == sorted(e.id for e in mine)
        assert sorted(theirs.event_ids()) == sorted(e.id for e in acme)
        assert ours.bad_signatures == theirs.bad_signatures == []


async def test_deleting_a_webhook_with_a_delivery_in_flight_is_clean(gateway: LiveGateway) -> None:
    import structlog  # noqa: PLC0415

    async with Receiver() as receiver:
        receiver.delay = 0.5
        created = await create(gateway, receiver)
        with structlog.testing.capture_logs() as logs:
            await publish(gateway.nats_url, [pushed("default", "iris", "v1")])
            await eventually(lambda: receiver.requests == 1, what="the delivery in flight")
            deleted = await gateway.call("DELETE", f"{WEBHOOKS}/{created['uid']}")
            assert deleted.status_code == 200, deleted.text
            await eventually(lambda: len(receiver.received) == 1, what="the answer given")
            await asyncio.sleep(0.2)
        assert not [e for e in logs if e["event"] == "gateway.webhooks.record_failed"]
        assert await gateway.runtime.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        assert (await gateway.call("GET", f"{WEBHOOKS}/{created['uid']}")).status_code == 404


async def test_two_gateway_replicas_share_the_work_without_doubling_or_reordering(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    settings = subscription_settings(nats_url, pg_dsn, tmp_path / "token")
    async with (
        live_gateway(settings) as one,
        live_gateway(settings) as two,
        Receiver() as receiver,
    ):
        await create(one, receiver)
        events = [pushed("default", f"m{i % 3}", f"v{i}") for i in range(60)]
        await publish(nats_url, events)
        await eventually(lambda: len(set(receiver.event_ids())) == 60, 30, "all 60 delivered")
        assert two.runtime.pool is not one.runtime.pool
        assert await one.runtime.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 60
        expected: dict[str, list[str]] = defaultdict(list)
        for event in events:
            expected[event.subject or ""].append(event.id)
        assert by_subject(receiver) == expected
        assert receiver.bad_signatures == []
