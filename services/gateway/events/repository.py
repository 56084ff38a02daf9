"""The event log's SQL: every lifecycle event the gateway has seen, in stream order."""

from __future__ import annotations

from typing import Any

from shared.db import Connection, Pool
from shared.events import AnyEvent


async def record_event(conn: Connection, event: AnyEvent, stream_seq: int) -> bool:
    """Store `event` once; False when it was already there (a redelivery)."""
    inserted = await conn.fetchval(
        """INSERT INTO event_log (event_id, event_type, source, subject, occurred_at,
                                  stream_seq, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (event_id) DO NOTHING RETURNING true""",
        event.id,
        event.type,
        event.source,
        event.subject,
        event.time,
        stream_seq,
        event.model_dump(mode="json"),
    )
    return bool(inserted)


async def recent_events(
    conn: Connection | Pool,
    *,
    limit: int = 50,
    event_type: str | None = None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT payload FROM event_log
           WHERE ($2::text IS NULL OR event_type = $2)
           ORDER BY stream_seq DESC LIMIT $1""",
        limit,
        event_type,
    )
    return [row["payload"] for row in rows]
