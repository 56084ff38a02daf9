"""Event subscribers of the gateway: the event log, and the queue of webhook deliveries."""

from __future__ import annotations

from services.gateway.events import repository, service
from services.gateway.settings import GatewaySettings
from shared.bus import Delivery
from shared.events import AnyEvent
from shared.logging import get_logger
from shared.outbox import processed_once
from shared.service import BackendRuntime

log = get_logger(__name__)

EVENT_LOG_CONSUMER = "gateway-event-log"


def register(runtime: BackendRuntime, settings: GatewaySettings | None = None) -> None:
    async def log_event(event: AnyEvent, delivery: Delivery) -> None:
        """Keep every lifecycle event in the gateway's event log (idempotent on event id)."""
        async with runtime.pool.acquire() as conn:
            stored = await repository.record_event(conn, event, delivery.stream_sequence)
        log.debug("gateway.event_log.recorded", event_id=event.id, new=stored)

    runtime.subscribe(consumer=EVENT_LOG_CONSUMER, handler=log_event)
    if settings is None:
        return
    webhooks = settings.webhooks

    async def queue_webhooks(event: AnyEvent, delivery: Delivery) -> None:
        """Queue the event for the webhooks of its organization that want it, exactly once:
        the deliveries commit with the processed-event record, or neither does."""
        async with runtime.pool.acquire() as conn, conn.transaction():
            if not await processed_once(conn, service.WEBHOOK_CONSUMER, event.id):
                return
            queued = await service.queue_deliveries(conn, event, delivery.stream_sequence, webhooks)
        if queued:
            log.debug("gateway.webhooks.queued", event_id=event.id, deliveries=queued)

    # One message per fetch: a delivery must not wait for a batch of events to fill up.
    runtime.subscribe(consumer=service.WEBHOOK_CONSUMER, handler=queue_webhooks, batch_size=1)
