"""The SSE stream on a real gateway: resume exactly once, filters, isolation, bounds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from shared.events import EVENT_STREAM
from tests.fixtures.subscriptions import (
    LiveGateway,
    Reader,
    eventually,
    live_gateway,
    publish,
    pushed,
    read_stream,
    status_changed,
    subscription_settings,
)


@pytest.fixture
async def gateway(nats_url: str, pg_dsn: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    # A small ring, so that resuming readers read JetStream before the ring.
    settings = subscription_settings(
        nats_url, pg_dsn, tmp_path / "token", events={"buffer_events": 16, "max_lag_events": 100}
    )
    async with live_gateway(settings) as live:
        yield live


async def test_a_reader_that_resumes_with_last_event_id_gets_every_event_once_in_order(
    gateway: LiveGateway,
) -> None:
    first = [pushed("default", "iris", f"v{i}") for i in range(30)]
    later = [pushed("default", "iris", f"w{i}") for i in range(40)]
    reader = Reader()
    task = asyncio.create_task(read_stream(gateway, reader, until=lambda r: len(r.events) >= 12))
    await eventually(lambda: gateway.app.state.subscriptions.hub.readers == 1)
    seqs = await publish(gateway.nats_url, first)
    await task
    # Disconnected after 12; 18 more were sent meanwhile, then 40 while nobody listened.
    seqs += await publish(gateway.nats_url, later)
    resumed = Reader()
    await read_stream(
        gateway,
        resumed,
        last_event_id=reader.ids()[-1],
        until=lambda r: len(r.events) >= len(seqs) - 12,
    )
    got = [e["id"] for e in reader.data() + resumed.data()]
    assert got == [e.id for e in first + later]
    assert reader.ids() + resumed.ids() == seqs
    # The same with ?after=, and the whole story again with ?replay=.
    again = await read_stream(
        gateway, Reader(), params={"after": str(seqs[40])}, until=lambda r: len(r.events) >= 29
    )
    assert again.ids() == seqs[41:]
    replayed = await read_stream(
        gateway, Reader(), params={"replay": "1h"}, until=lambda r: len(r.events) >= len(seqs)
    )
    assert replayed.ids() == seqs
    await eventually(lambda: gateway.app.state.subscriptions.hub.readers == 0)

    # Each resume read JetStream with a consumer of its own (named sse-...); none outlives
    # its reader.
    async def reader_consumers() -> list[str]:
        nc = await nats.connect(gateway.nats_url)
        try:
            found = await nc.jetstream().consumers_info(EVENT_STREAM)
            return [c.name for c in found if c.name.startswith("sse-")]
        finally:
            await nc.close()

    async def only_the_gateways() -> bool:
        return await reader_consumers() == []

    await eventually(only_the_gateways, what="the readers' consumers removed")


async def test_idle_streams_get_keep_alive_comments(gateway: LiveGateway) -> None:
    reader = await read_stream(gateway, Reader(), until=lambda r: r.comments >= 3)
    assert reader.events == []


async def test_filters_by_type_pattern_and_subject(gateway: LiveGateway) -> None:
    events = [
        pushed("default", "iris", "v1"),
        status_changed("default", "web", "deploying"),
        pushed("default", "wine", "v1"),
        status_changed("default", "web", "running"),
        pushed("default", "iris", "v2"),
    ]
    await publish(gateway.nats_url, events)
    deployments = await read_stream(
        gateway,
        Reader(),
        params={"types": "deployment.*", "replay": "1h"},
        until=lambda r: len(r.events) >= 2,
    )
    assert [e["data"]["status"] for e in deployments.data()] == ["deploying", "running"]
    iris = await read_stream(
        gateway,
        Reader(),
        params={"types": "bento.pushed", "subject": "bentos/default/iris:*", "replay": "1h"},
        until=lambda r: len(r.events) >= 2,
    )
    assert [e["id"] for e in iris.data()] == [events[0].id, events[4].id]
    refused = await read_stream(gateway, Reader(), params={"types": "bento.pushd"})
    assert refused.status == 422
    assert refused.error is not None
    assert "unknown event type 'bento.pushd'" in refused.error["message"]


async def test_an_organization_never_sees_another_organizations_events(
    gateway: LiveGateway,
) -> None:
    acme_token = await gateway.organization("acme")
    ours = [pushed("default", "iris", f"v{i}") for i in range(5)]
    theirs = [pushed("acme", "iris", f"v{i}") for i in range(5)]
    mixed = [e for pair in zip(ours, theirs, strict=True) for e in pair]
    await publish(gateway.nats_url, mixed)
    last = pushed("acme", "end", "v1")
    await publish(gateway.nats_url, [last])
    acme = await read_stream(
        gateway,
        Reader(),
        token=acme_token,
        params={"replay": "1h"},
        until=lambda r: bool(r.events) and json.loads(r.events[-1].data)["id"] == last.id,
    )
    assert [e["id"] for e in acme.data()] == [e.id for e in theirs] + [last.id]
    default = await read_stream(
        gateway, Reader(), params={"replay": "1h"}, until=lambda r: len(r.events) >= 5
    )
    assert [e["id"] for e in default.data()] == [e.id for e in ours]
    # Naming the other organization is refused, not served.
    other = await read_stream(gateway, Reader(), params={"organization_name": "acme"})
    assert other.status == 403


async def test_a_guest_does_not_see_deployment_specs(gateway: LiveGateway) -> None:
    from shared.events import ArtifactRef, DeploymentRequested  # noqa: PLC0415

    guest = await gateway.member_token("gus", "guest")
    requested = DeploymentRequested(
        source="/ekiben/test",
        subject="deployments/default/web",
        data={
            "deployment": {
                "organization": "default",
                "cluster": "c",
                "namespace": "n",
                "name": "web",
            },
            "bento": ArtifactRef(organization="default", name="iris", version="v1"),
            "revision": 1,
            "spec": {"envs": [{"name": "API_KEY", "value": "hunter2"}]},
        },
    )
    status = status_changed("default", "web")
    await publish(gateway.nats_url, [requested, status])
    seen = await read_stream(
        gateway, Reader(), token=guest, params={"replay": "1h"}, until=lambda r: bool(r.events)
    )
    assert [e["type"] for e in seen.data()] == ["deployment.status_changed"]
    admin = await read_stream(
        gateway, Reader(), params={"replay": "1h"}, until=lambda r: len(r.events) >= 2
    )
    assert [e["type"] for e in admin.data()] == [
        "deployment.requested",
        "deployment.status_changed",
    ]


async def test_a_position_the_stream_no_longer_keeps_is_410(gateway: LiveGateway) -> None:
    seqs = await publish(gateway.nats_url, [pushed("default", "iris", f"v{i}") for i in range(3)])
    nc = await nats.connect(gateway.nats_url)
    try:
        await nc.jetstream().purge_stream(EVENT_STREAM)
    finally:
        await nc.close()
    gone = await read_stream(gateway, Reader(), last_event_id=seqs[0])
    assert gone.status == 410
    assert gone.error is not None
    assert gone.error["code"] == "gone"
    assert "no longer kept" in gone.error["message"]
    ahead = await read_stream(gateway, Reader(), params={"after": str(seqs[-1] + 100)})
    assert ahead.status == 422
    assert "beyond the newest event" in (ahead.error or {})["message"]
    # From the current end it is fine.
    fine = await read_stream(
        gateway, Reader(), params={"after": str(seqs[-1])}, until=lambda r: True
    )
    assert fine.status == 200


async def test_a_slow_reader_is_cut_off_with_overflow_while_a_fast_one_keeps_up(
    gateway: LiveGateway,
) -> None:
    """max_lag_events is 100; 8 KiB events fill the slow client's socket buffers quickly."""
    events = [pushed("default", "big", f"v{i}", pad=8192) for i in range(1500)]
    hub = gateway.app.state.subscriptions.hub
    fast = Reader()
    fast_task = asyncio.create_task(
        read_stream(gateway, fast, until=lambda r: len(r.events) >= len(events))
    )
    # The slow client reads its first event, then stops reading until the burst is over.
    resume_slow = asyncio.Event()
    slow = Reader()

    def slow_until(reader: Reader) -> bool:
        return reader.ended

    async def slow_read() -> None:
        headers = {"X-YATAI-API-TOKEN": gateway.admin_token}
        async with gateway.http.stream("GET", "/api/ekiben/v1/events", headers=headers) as response:
            from services.tail import _Parser  # noqa: PLC0415

            parser = _Parser()
            lines = response.aiter_lines()
            async for line in lines:
                found = parser.line(line)
                if found is not None:
                    slow.events.append(found)
                    if len(slow.events) == 1:
                        await resume_slow.wait()
        slow.ended = True

    slow_task = asyncio.create_task(slow_read())
    await eventually(lambda: hub.readers == 2)
    seqs = await publish(gateway.nats_url, events)
    await asyncio.wait_for(fast_task, 60)
    assert fast.ids() == seqs
    assert fast.events[-1].event == "bento.pushed"
    resume_slow.set()
    await asyncio.wait_for(slow_task, 60)
    notice = slow.events[-1]
    assert notice.event == "overflow"
    delivered = [int(e.id) for e in slow.events[:-1] if e.id is not None]
    assert delivered == seqs[: len(delivered)]
    assert len(delivered) < len(events)
    assert json.loads(notice.data)["last_event_id"] == delivered[-1]
    # It resumes where it was cut off, and gets the rest exactly once.
    rest = await read_stream(
        gateway,
        Reader(),
        last_event_id=delivered[-1],
        until=lambda r: len(r.events) >= len(events) - len(delivered),
    )
    assert delivered + rest.ids() == seqs


async def test_the_asyncapi_contract_is_served(gateway: LiveGateway) -> None:
    from shared.events.asyncapi import asyncapi_document  # noqa: PLC0415

    response = await gateway.http.get("/api/ekiben/v1/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == asyncapi_document()
    openapi = (await gateway.http.get("/openapi.json")).json()
    stream = openapi["paths"]["/api/ekiben/v1/events"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {"401", "410", "422"} <= set(stream["responses"])


async def test_ekiben_events_tail_follows_the_stream_through_the_gateway(
    gateway: LiveGateway,
) -> None:
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    root = Path(__file__).parents[2]
    wanted = [pushed("default", "iris", f"v{i}") for i in range(3)]
    await publish(gateway.nats_url, [wanted[0], status_changed("default", "web"), *wanted[1:]])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "events",
        "tail",
        "--endpoint",
        gateway.url,
        "--token",
        gateway.admin_token,
        "--type",
        "bento.*",
        "--replay",
        "1h",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
    )
    try:
        assert process.stdout is not None
        lines = [json.loads(await asyncio.wait_for(process.stdout.readline(), 30)) for _ in wanted]
        assert [line["id"] for line in lines] == [e.id for e in wanted]
        later = pushed("default", "iris", "v9")
        await publish(gateway.nats_url, [later])
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert line["id"] == later.id
    finally:
        process.terminate()
        await process.wait()
    # A refusal is a message and a nonzero exit, not a retry loop.
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "events", "tail", "--endpoint", gateway.url,
        "--token", "ekb_" + "x" * 43, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)}, cwd=root,
    )  # fmt: skip
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 1
    assert b"HTTP 401" in err
