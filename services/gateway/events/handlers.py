"""Event subscribers of the gateway: the event log.

(Webhook deliveries are queued by `enqueue.DeliveryQueue`, which writes events in batches
and in stream order, which this per-event machinery does not.)
"""

from __future__ import annotations

from services.gateway.events import repository
from shared.bus import Delivery
from shared.events import AnyEvent
from shared.logging import get_logger
from shared.service import BackendRuntime

log = get_logger(__name__)

EVENT_LOG_CONSUMER = "gateway-event-log"


def register(runtime: BackendRuntime) -> None:
    async def log_event(event: AnyEvent, delivery: Delivery) -> None:
        """Keep every lifecycle event in the gateway's event log (idempotent on event id)."""
        async with runtime.pool.acquire() as conn:
            stored = await repository.record_event(conn, event, delivery.stream_sequence)
        log.debug("gateway.event_log.recorded", event_id=event.id, new=stored)

    runtime.subscribe(consumer=EVENT_LOG_CONSUMER, handler=log_event)
