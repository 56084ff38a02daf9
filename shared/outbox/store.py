"""The SQL side of the outbox: write an event, record a processed one."""

from __future__ import annotations

from collections.abc import Sequence

from shared.db import Connection
from shared.events import Event
from shared.telemetry import current_trace_headers

_INSERT = """INSERT INTO outbox (event_id, event_type, subject, payload, headers)
             VALUES ($1, $2, $3, $4, $5)"""


async def write_event(conn: Connection, event: Event) -> None:
    """Queue `event` for publication; call inside the transaction of the state change."""
    await write_events(conn, [event])


async def write_events(conn: Connection, events: Sequence[Event]) -> None:
    """Queue `events`, in order, in one round trip (a repository delete may emit thousands)."""
    if not conn.is_in_transaction():
        raise RuntimeError("write_event must run inside the transaction of the state change")
    headers = current_trace_headers()
    rows = [(e.id, e.type, e.nats_subject, e.model_dump(mode="json"), headers) for e in events]
    if len(rows) == 1:
        await conn.execute(_INSERT, *rows[0])
    elif rows:
        await conn.executemany(_INSERT, rows)


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


async def processed_first_time(
    conn: Connection, consumer: str, event_ids: Sequence[str]
) -> set[str]:
    """`processed_once` for many events in one round trip: the ids seen for the first time.

    Call inside the transaction that applies the events' effects.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("processed_first_time must run inside the transaction of the effect")
    rows = await conn.fetch(
        """INSERT INTO processed_events (consumer, event_id)
           SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING event_id""",
        consumer,
        list(event_ids),
    )
    return {row["event_id"] for row in rows}
