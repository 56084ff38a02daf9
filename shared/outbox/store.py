"""The SQL side of the outbox: write an event, record a processed one."""

from __future__ import annotations

from shared.db import Connection
from shared.events import Event
from shared.telemetry import current_trace_headers


async def write_event(conn: Connection, event: Event) -> None:
    """Queue `event` for publication; call inside the transaction of the state change."""
    if not conn.is_in_transaction():
        raise RuntimeError("write_event must run inside the transaction of the state change")
    await conn.execute(
        """INSERT INTO outbox (event_id, event_type, subject, payload, headers)
           VALUES ($1, $2, $3, $4, $5)""",
        event.id,
        event.type,
        event.nats_subject,
        event.model_dump(mode="json"),
        current_trace_headers(),
    )


async def processed_once(conn: Connection, consumer: str, event_id: str) -> bool:
    """True the first time `consumer` sees `event_id`; False for a redelivery.

    Call inside the transaction that applies the event's effect, so the record and the
    effect commit (or vanish) together.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("processed_once must run inside the transaction of the effect")
    inserted = await conn.fetchval(
        """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING true""",
        consumer,
        event_id,
    )
    return bool(inserted)
