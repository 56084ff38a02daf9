"""`ekiben events tail`: follow the event stream from a terminal.

Two ways in, one output (one CloudEvents JSON document per line):

- `--endpoint URL --token TOKEN`: the gateway's server-sent events
  (`GET /api/ekiben/v1/events`), for people with an API token and no NATS access. A
  dropped connection, or an `overflow` notice from a gateway that found this reader too
  slow, is followed by a reconnect with `Last-Event-ID`, so nothing is missed or repeated.
- otherwise NATS directly (`--nats-url`), with an ordered consumer as before.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

import httpx
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.events import EVENT_STREAM, EVENT_SUBJECT_PREFIX, subject_for

TOKEN_HEADER = "X-YATAI-API-TOKEN"  # noqa: S105 - a header name
EVENTS_PATH = "/api/ekiben/v1/events"


class TailError(Exception):
    """The gateway refused the stream; the message says why (for the terminal)."""


async def tail(nats_url: str, *, event_type: str | None, replay: str | None) -> None:
    """Follow events on NATS: all, or those since `replay` (`all` or a duration)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = subject_for(event_type) if event_type else f"{EVENT_SUBJECT_PREFIX}.>"
        config: ConsumerConfig | None = None
        policy = DeliverPolicy.NEW
        if replay == "all":
            policy = DeliverPolicy.ALL
        elif replay:
            policy = DeliverPolicy.BY_START_TIME
            config = ConsumerConfig(opt_start_time=datetime.now(UTC) - _duration(replay))
        # An ordered consumer: ephemeral, flow-controlled, never acks, gone when we exit.
        sub = await js.subscribe(
            subject,
            stream=EVENT_STREAM,
            ordered_consumer=True,
            deliver_policy=policy,
            config=config,
        )
        async for msg in sub.messages:
            sys.stdout.write(msg.data.decode() + "\n")
            sys.stdout.flush()
    except asyncio.CancelledError:
        pass
    finally:
        await nc.close()


def _duration(raw: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(raw[:-1]) * units[raw[-1]])
    except (KeyError, ValueError, IndexError):
        raise TailError(
            f"--replay: expected 'all' or a duration such as 15m, 1h, 2d; got {raw!r}"
        ) from None


# --- server-sent events ------------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class _Parser:
    """The SSE wire format (WHATWG HTML, "event stream interpretation"), line by line."""

    last_id: str | None = None
    retry_ms: int | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data and not self._event:
                self._id = None
                return None
            found = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            if self._id is not None:
                self.last_id = self._id
            self._event, self._data, self._id = "", [], None
            return found
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


async def sse_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    token: str,
    params: dict[str, str],
    last_event_id: str | None = None,
) -> AsyncIterator[tuple[SseEvent, _Parser]]:
    """One connection's events (raises `TailError` for a refusal)."""
    headers = {TOKEN_HEADER: token, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    parser = _Parser(last_id=last_event_id)
    async with client.stream("GET", url, headers=headers, params=params) as response:
        if response.status_code >= 500:
            await response.aread()
            response.raise_for_status()  # a gateway stopping or busy: reconnect later
        if response.status_code != 200:
            await response.aread()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise TailError(f"HTTP {response.status_code}: {message}")
        async for line in response.aiter_lines():
            found = parser.line(line)
            if found is not None:
                yield found, parser


async def tail_http(
    endpoint: str,
    token: str,
    *,
    types: str | None,
    subject: str | None,
    replay: str | None,
    out: TextIO | None = None,
    max_reconnects: int | None = None,
) -> None:
    """Follow the gateway's SSE stream, reconnecting with Last-Event-ID."""
    out = out or sys.stdout
    url = endpoint.rstrip("/") + EVENTS_PATH
    params = {k: v for k, v in (("types", types), ("subject", subject)) if v}
    if replay:
        params["replay"] = replay
    last_id: str | None = None
    delay = 1.0
    reconnects = 0
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client:
        while True:
            try:
                async for event, parser in sse_events(
                    client, url, token=token, params=params, last_event_id=last_id
                ):
                    delay = (parser.retry_ms or 1000) / 1000
                    if event.event == "overflow":
                        print(f"ekiben: {json.loads(event.data)['message']}", file=sys.stderr)
                        continue
                    if event.id is not None:
                        last_id = event.id
                        # Resuming is by position: a replay is where it started, not again.
                        params.pop("replay", None)
                    out.write(event.data + "\n")
                    out.flush()
            except httpx.HTTPError as exc:
                print(
                    f"ekiben: stream interrupted ({type(exc).__name__}); reconnecting",
                    file=sys.stderr,
                )
            reconnects += 1
            if max_reconnects is not None and reconnects > max_reconnects:
                return
            await asyncio.sleep(delay)
