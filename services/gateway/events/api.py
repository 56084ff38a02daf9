"""Event subscriptions over HTTP: the SSE stream, webhooks, and the AsyncAPI contract.

`GET /api/ekiben/v1/events` answers `text/event-stream` (see `stream` for how it reads and
bounds memory). Each SSE event is one CloudEvents JSON document with `id:` its stream
sequence and `event:` its type; `: keep-alive` comments keep idle streams open. A reader
resumes with `Last-Event-ID` (what browsers send on reconnect) or `?after=`, and gets
every later event exactly once; `?replay=1h` starts an hour back. A reader that falls too
far behind is sent `event: overflow` and closed; a position older than the stream keeps
is a 410. Readers authenticate with the `X-YATAI-API-TOKEN` header like every other call
(a browser's EventSource cannot set headers: the dashboard's session cookie, when it
exists, will be accepted here too; a token in the query string is not, since URLs end up
in logs).

Webhooks are managed by admins (see `service`); every change is audited.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Send

from services.gateway.audit.service import audit
from services.gateway.events import service
from services.gateway.events.filters import EventFilter
from services.gateway.events.models import DeliveryStatus
from services.gateway.events.runtime import Subscriptions
from services.gateway.events.schemas import (
    CreateWebhookBody,
    DeliverySchema,
    UpdateWebhookBody,
    WebhookSchema,
    WebhookWithSecretSchema,
    delivery_schema,
    webhook_schema,
    webhook_with_secret_schema,
)
from services.gateway.events.stream import StreamEvent
from services.gateway.guard import GatewayRoute
from services.gateway.identity.auth import AdminPrincipal, CurrentPrincipal, Database
from services.gateway.schemas import ListSchema, Page, list_schema, paging
from shared.errors import Conflict, InvalidInput, Unavailable
from shared.events.asyncapi import asyncapi_document
from shared.http import error_responses

router = APIRouter(route_class=GatewayRoute)
Paging = Annotated[Page, Depends(paging())]

EVENTS_PATH = "/api/ekiben/v1/events"
WEBHOOKS_PATH = "/api/ekiben/v1/webhooks"
RECONNECT_MILLISECONDS = 2000


def subscriptions(request: Request) -> Subscriptions:
    found: Subscriptions = request.app.state.subscriptions
    return found


Feature = Annotated[Subscriptions, Depends(subscriptions)]

# --- the stream ------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> timedelta:
    """`90s`, `15m`, `1h`, `2d`, or sums such as `1h30m`."""
    text = raw.strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise InvalidInput(f"replay: expected a duration such as 90s, 15m, 1h or 2d, got {raw!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def _position(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(
            f"{name}: expected a stream position (an integer), got {raw[:40]!r}"
        ) from None
    if value < 0:
        raise InvalidInput(f"{name}: must not be negative")
    return value


async def start_position(
    feature: Subscriptions, *, last_event_id: str, after: str, replay: str
) -> int:
    """The cursor a new reader starts after (see the module docstring)."""
    hub = feature.hub
    resume = last_event_id.strip() or after.strip()
    name = "Last-Event-ID" if last_event_id.strip() else "after"
    if resume and replay.strip():
        raise InvalidInput(f"give either {name} or replay, not both")
    if resume:
        cursor = _position(resume, name)
        first, last = await hub.bounds()
        if cursor > last:
            raise InvalidInput(f"{name}: {cursor} is beyond the newest event ({last})")
        if cursor < first - 1:
            raise service.Gone(
                f"{name}: the events after {cursor} are no longer kept (the oldest kept is"
                f" {first}); start again with ?replay= or without a position"
            )
        return cursor
    if replay.strip():
        back = parse_duration(replay)
        limit = feature.settings.events.max_replay_seconds
        if back.total_seconds() > limit:
            raise InvalidInput(f"replay: at most {timedelta(seconds=limit)} back")
        return await hub.position_at(datetime.now(UTC) - back)
    return hub.head


class EventStreamResponse(StreamingResponse):
    """A streaming response that closes its generator however the stream ends (a client
    gone mid-send included), so a reader's JetStream consumer is removed at once."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        super().__init__(
            events,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events

    async def stream_response(self, send: Send) -> None:
        async with contextlib.aclosing(self._events):
            await super().stream_response(send)


_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


@router.get(
    EVENTS_PATH,
    tags=["events"],
    status_code=200,
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "Server-sent events: `id:` the stream position, `event:` the type,"
            " `data:` one CloudEvents JSON document; `event: overflow` before closing a reader"
            " that fell behind",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        # Errors are JSON even on this route (the stream's media type is only for 200).
        **{
            status: {
                "description": entry["description"],
                "content": {"application/json": {"schema": _ERROR_REF}},
            }
            for status, entry in error_responses(401, 403, 410, 422, 503).items()
        },
    },
)
async def stream_events(
    principal: CurrentPrincipal,
    feature: Feature,
    types: Annotated[
        str, Query(description="Comma-separated event types; a trailing * matches a prefix")
    ] = "",
    subject: Annotated[
        str, Query(description="Only events about this resource (a trailing * matches a prefix)")
    ] = "",
    after: Annotated[str, Query(description="Resume after this stream position")] = "",
    replay: Annotated[str, Query(description="Start this far back: 90s, 15m, 1h, 2d")] = "",
    last_event_id: Annotated[str, Header(description="Resume after this position")] = "",
) -> EventStreamResponse:
    """Follow the organization's events as they happen (see the module docstring)."""
    hub = feature.hub
    if hub.closed:
        raise Unavailable("the gateway is stopping")
    if hub.readers >= feature.settings.events.max_readers:
        raise Unavailable("too many event readers on this gateway; retry later")
    wanted = EventFilter.for_principal(principal, types=types, subject=subject)
    cursor = await start_position(feature, last_event_id=last_event_id, after=after, replay=replay)

    def accept(event: StreamEvent) -> bool:
        return wanted.accepts(event.organization, event.type, event.subject)

    async def events() -> AsyncGenerator[bytes, None]:
        yield b"retry: %d\n: position %d\n\n" % (RECONNECT_MILLISECONDS, cursor)
        # Closed with this generator, not when the collector finds it.
        async with contextlib.aclosing(hub.read(cursor, accept)) as stream:
            async for chunk in stream:
                yield chunk

    return EventStreamResponse(events())


# --- the contract ----------------------------------------------------------------------------


@functools.cache
def _contract() -> dict[str, Any]:
    return asyncapi_document()


@router.get(
    "/api/ekiben/v1/asyncapi.json",
    tags=["events"],
    responses={
        200: {
            "description": "The AsyncAPI 3.0 document",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["asyncapi", "info", "channels"],
                        "properties": {"asyncapi": {"type": "string", "const": "3.0.0"}},
                    }
                }
            },
        },
        **error_responses(422),
    },
)
async def get_asyncapi() -> JSONResponse:
    """The AsyncAPI 3.0 document of every event (the same as docs/asyncapi.json)."""
    return JSONResponse(_contract())


# --- webhooks --------------------------------------------------------------------------------


@router.post(
    WEBHOOKS_PATH,
    tags=["webhooks"],
    status_code=201,
    responses=error_responses(401, 403, 422),
)
async def create_webhook(
    request: Request,
    principal: AdminPrincipal,
    db: Database,
    feature: Feature,
    body: CreateWebhookBody,
) -> WebhookWithSecretSchema:
    """A new webhook; the answer holds its signing secret, shown this once."""
    async with db.acquire() as conn, conn.transaction():
        endpoint, secret = await service.create_endpoint(
            conn,
            feature.box,
            organization_id=principal.org.id,
            url=body.url,
            types=body.types,
            description=body.description,
            created_by=principal.user_name,
            allowed=feature.settings.webhooks.allowed_networks,
        )
        await audit(
            request,
            principal,
            "webhook.created",
            "webhook",
            endpoint.uid,
            {"url": endpoint.url, "types": list(endpoint.types)},
            conn=conn,
        )
    return webhook_with_secret_schema(endpoint, secret)


@router.get(WEBHOOKS_PATH, tags=["webhooks"], responses=error_responses(401, 403, 422))
async def list_webhooks(
    principal: AdminPrincipal, db: Database, page: Paging
) -> ListSchema[WebhookSchema]:
    """The organization's webhooks, newest first."""
    total, found = await service.list_endpoints(
        db, principal.org.id, start=page.start, count=page.count
    )
    return list_schema(
        [webhook_schema(e) for e in found], start=page.start, count=page.count, total=total
    )


@router.get(f"{WEBHOOKS_PATH}/{{uid}}", tags=["webhooks"], responses=error_responses(401, 403, 404))
async def get_webhook(principal: AdminPrincipal, db: Database, uid: str) -> WebhookSchema:
    return webhook_schema(await service.get_endpoint(db, principal.org.id, uid))


@router.patch(
    f"{WEBHOOKS_PATH}/{{uid}}", tags=["webhooks"], responses=error_responses(401, 403, 404, 422)
)
async def update_webhook(
    request: Request,
    principal: AdminPrincipal,
    db: Database,
    feature: Feature,
    uid: str,
    body: UpdateWebhookBody,
) -> WebhookSchema:
    """Change a webhook; `{"enabled": true}` re-enables one that was disabled."""
    async with db.acquire() as conn, conn.transaction():
        endpoint = await service.get_endpoint(conn, principal.org.id, uid, for_update=True)
        updated = await service.update_endpoint(
            conn,
            endpoint,
            service.EndpointChange(
                url=body.url, types=body.types, description=body.description, enabled=body.enabled
            ),
            allowed=feature.settings.webhooks.allowed_networks,
        )
        await audit(
            request,
            principal,
            "webhook.updated",
            "webhook",
            uid,
            body.model_dump(exclude_none=True),
            conn=conn,
        )
    if updated.enabled and not endpoint.enabled:
        feature.worker.wake()  # what waited while it was disabled goes out now
    return webhook_schema(updated)


@router.delete(
    f"{WEBHOOKS_PATH}/{{uid}}", tags=["webhooks"], responses=error_responses(401, 403, 404)
)
async def delete_webhook(
    request: Request, principal: AdminPrincipal, db: Database, uid: str
) -> WebhookSchema:
    """Remove a webhook with its pending and past deliveries."""
    async with db.acquire() as conn, conn.transaction():
        endpoint = await service.get_endpoint(conn, principal.org.id, uid, for_update=True)
        await service.delete_endpoint(conn, endpoint)
        await audit(
            request, principal, "webhook.deleted", "webhook", uid, {"url": endpoint.url}, conn=conn
        )
    return webhook_schema(endpoint)


@router.post(
    f"{WEBHOOKS_PATH}/{{uid}}/test",
    tags=["webhooks"],
    responses=error_responses(401, 403, 404, 409),
)
async def test_webhook(
    request: Request, principal: AdminPrincipal, db: Database, feature: Feature, uid: str
) -> DeliverySchema:
    """Send a signed `ekiben.webhook.test` event now; the answer is its delivery, attempted."""
    async with db.acquire() as conn, conn.transaction():
        endpoint = await service.get_endpoint(conn, principal.org.id, uid)
        if not endpoint.enabled:
            raise Conflict(
                f"webhook {uid} is disabled ({endpoint.disabled_reason}); enable it first"
            )
        delivery_id, delivery_uid = await service.queue_test(
            conn,
            endpoint,
            principal.user_name,
            hold_seconds=feature.settings.webhooks.lease_seconds,
        )
        await audit(
            request,
            principal,
            "webhook.tested",
            "webhook",
            uid,
            {"delivery": delivery_uid},
            conn=conn,
        )
    await feature.worker.deliver_now(delivery_id)
    delivery, _ = await service.get_delivery(db, principal.org.id, delivery_uid)
    return delivery_schema(delivery)


@router.get(
    f"{WEBHOOKS_PATH}/{{uid}}/deliveries",
    tags=["webhooks"],
    responses=error_responses(401, 403, 404, 422),
)
async def list_webhook_deliveries(
    principal: AdminPrincipal,
    db: Database,
    page: Paging,
    uid: str,
    status: Annotated[
        DeliveryStatus | None, Query(description="Only deliveries in this state")
    ] = None,
) -> ListSchema[DeliverySchema]:
    """A webhook's deliveries, newest first, each with its attempts (status code, latency,
    error)."""
    endpoint = await service.get_endpoint(db, principal.org.id, uid)
    total, found = await service.list_deliveries(
        db, endpoint, start=page.start, count=page.count, status=status
    )
    return list_schema(
        [delivery_schema(d) for d in found], start=page.start, count=page.count, total=total
    )


@router.post(
    f"{WEBHOOKS_PATH}/deliveries/{{delivery_uid}}/redeliver",
    tags=["webhooks"],
    status_code=202,
    responses=error_responses(401, 403, 404, 409),
)
async def redeliver_webhook_delivery(
    request: Request,
    principal: AdminPrincipal,
    db: Database,
    feature: Feature,
    delivery_uid: str,
) -> DeliverySchema:
    """Send a delivery again: the same body and `webhook-id`, a fresh budget of attempts."""
    async with db.acquire() as conn, conn.transaction():
        delivery, endpoint = await service.get_delivery(
            conn, principal.org.id, delivery_uid, for_update=True
        )
        await service.redeliver(conn, delivery, endpoint, feature.settings.webhooks)
        await audit(
            request,
            principal,
            "webhook.redelivered",
            "webhook",
            endpoint.uid,
            {"delivery": delivery_uid, "event_id": delivery.event_id},
            conn=conn,
        )
    feature.worker.wake()
    requeued, _ = await service.get_delivery(db, principal.org.id, delivery_uid)
    return delivery_schema(requeued)
