"""The events feature's SQL: the event log, webhook endpoints, deliveries and attempts.

Deliveries are claimed with `FOR UPDATE SKIP LOCKED` and then held by a lease
(`leased_until`), so replicas share the work without holding a transaction open across
an HTTP request, and a delivery whose worker died is claimed again when its lease ends.
Only the oldest pending delivery of an endpoint and subject can be claimed: the others
wait behind it, which keeps a receiver's view of each resource in stream order.
"""

# ruff: noqa: S608 - the f-strings splice in this module's constant column lists only

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.events.models import (
    Attempt,
    AttemptOutcome,
    ClaimedDelivery,
    Delivery,
    DeliveryStatus,
    Endpoint,
    NewDelivery,
)
from shared.db import Connection, Pool
from shared.events import AnyEvent

Row = asyncpg.Record

# --- the event log ---------------------------------------------------------------------------


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


# --- the key that seals signing secrets --------------------------------------------------------


async def stored_key(conn: Connection | Pool, candidate: bytes) -> bytes:
    """The database's sealing key, made from `candidate` by the first caller."""
    await conn.execute(
        "INSERT INTO webhook_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", candidate
    )
    key: bytes = await conn.fetchval("SELECT key FROM webhook_keys WHERE id = 1")
    return key


# --- endpoints -------------------------------------------------------------------------------

_ENDPOINT = """e.id, e.uid, e.organization_id, e.url, e.types, e.description, e.enabled,
               e.disabled_reason, e.disabled_at, e.failure_streak, e.created_by, e.created_at,
               e.updated_at"""


def _endpoint(row: Row) -> Endpoint:
    return Endpoint(
        id=row["id"],
        uid=row["uid"],
        organization_id=row["organization_id"],
        url=row["url"],
        types=tuple(row["types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        failure_streak=row["failure_streak"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert_endpoint(
    conn: Connection,
    *,
    organization_id: int,
    url: str,
    types: Sequence[str],
    description: str,
    secret_sealed: bytes,
    created_by: str,
) -> Endpoint:
    row = await conn.fetchrow(
        f"""INSERT INTO webhook_endpoints AS e
                (organization_id, url, types, description, secret_encrypted, created_by)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT}""",
        organization_id,
        url,
        list(types),
        description,
        secret_sealed,
        created_by,
    )
    assert row is not None
    return _endpoint(row)


async def endpoints(
    conn: Connection | Pool, organization_id: int, *, start: int, count: int
) -> tuple[int, list[Endpoint]]:
    total: int = await conn.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1", organization_id
    )
    rows = await conn.fetch(
        f"""SELECT {_ENDPOINT} FROM webhook_endpoints e WHERE e.organization_id = $1
            ORDER BY e.id DESC OFFSET $2 LIMIT $3""",
        organization_id,
        start,
        count,
    )
    return total, [_endpoint(row) for row in rows]


async def endpoint(
    conn: Connection | Pool, organization_id: int, uid: str, *, for_update: bool = False
) -> Endpoint | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT} FROM webhook_endpoints e"
        f" WHERE e.organization_id = $1 AND e.uid = $2{lock}",
        organization_id,
        uid,
    )
    return _endpoint(row) if row is not None else None


async def update_endpoint(
    conn: Connection,
    endpoint_id: int,
    *,
    url: str,
    types: Sequence[str],
    description: str,
    enabled: bool,
    disabled_reason: str | None,
) -> Endpoint:
    """Write the endpoint's new state; enabling clears the reason and the failure streak."""
    row = await conn.fetchrow(
        f"""UPDATE webhook_endpoints e SET url = $2, types = $3, description = $4,
                   enabled = $5,
                   disabled_reason = CASE WHEN $5 THEN NULL
                                          ELSE coalesce(e.disabled_reason, $6) END,
                   disabled_at = CASE WHEN $5 THEN NULL ELSE coalesce(e.disabled_at, now()) END,
                   failure_streak = CASE WHEN $5 AND NOT e.enabled THEN 0 ELSE e.failure_streak END,
                   updated_at = now()
            WHERE e.id = $1 RETURNING {_ENDPOINT}""",
        endpoint_id,
        url,
        list(types),
        description,
        enabled,
        disabled_reason,
    )
    assert row is not None
    return _endpoint(row)


async def organization_id_of(conn: Connection | Pool, endpoint_id: int) -> int | None:
    value: int | None = await conn.fetchval(
        "SELECT organization_id FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    return value


async def endpoint_uid_of(conn: Connection | Pool, endpoint_id: int) -> str:
    value: str | None = await conn.fetchval(
        "SELECT uid FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    return value or "?"


async def delete_endpoint(conn: Connection, endpoint_id: int) -> None:
    await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)


async def enabled_endpoints(conn: Connection | Pool, organization: str) -> list[Endpoint]:
    """The enabled endpoints of the organization named `organization`."""
    rows = await conn.fetch(
        f"""SELECT {_ENDPOINT} FROM webhook_endpoints e
            JOIN organizations o ON o.id = e.organization_id
            WHERE o.name = $1 AND e.enabled ORDER BY e.id""",
        organization,
    )
    return [_endpoint(row) for row in rows]


# --- deliveries ------------------------------------------------------------------------------


async def insert_deliveries(
    conn: Connection,
    deliveries: Sequence[NewDelivery],
    *,
    attempts: int,
    not_before_seconds: float = 0.0,
) -> list[tuple[int, str]]:
    """Queue deliveries (a repeat of an endpoint x event is ignored), due after
    `not_before_seconds`; returns the new ones' (id, uid)."""
    if not deliveries:
        return []
    rows = await conn.fetch(
        """INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, subject,
                                           stream_seq, webhook_id, body, attempts_left,
                                           next_attempt_at)
           SELECT *, $8::integer, now() + make_interval(secs => $9)
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                       $6::text[], $7::text[])
           ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING id, uid""",
        [d.endpoint_id for d in deliveries],
        [d.event_id for d in deliveries],
        [d.event_type for d in deliveries],
        [d.subject for d in deliveries],
        [d.stream_seq for d in deliveries],
        [d.webhook_id for d in deliveries],
        [d.body for d in deliveries],
        attempts,
        not_before_seconds,
    )
    return [(row["id"], row["uid"]) for row in rows]


# A pending delivery that no older pending delivery of its endpoint and subject precedes,
# of an enabled endpoint. Written as scalar subqueries on purpose: PostgreSQL then walks
# the due deliveries in `next_attempt_at` order (an index) and checks each with one index
# probe, stopping at the LIMIT, where NOT EXISTS was planned as an anti-join over every
# pending row (10,000 pending made each claim cost tens of milliseconds).
_HEAD = """d.status = 'pending'
           AND (SELECT p.id FROM webhook_deliveries p
                WHERE p.endpoint_id = d.endpoint_id AND p.subject = d.subject
                  AND p.status = 'pending'
                ORDER BY p.stream_seq, p.id LIMIT 1) = d.id
           AND (SELECT e.enabled FROM webhook_endpoints e WHERE e.id = d.endpoint_id)"""


async def claim(
    conn: Connection | Pool,
    *,
    limit: int,
    lease_seconds: float,
    delivery_id: int | None = None,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, counting the attempt; or `delivery_id` alone,
    due or not. One statement: the rows are locked (SKIP LOCKED) and leased atomically."""
    which = (
        "d.next_attempt_at <= now() AND $2::bigint IS NULL" if delivery_id is None else "d.id = $2"
    )
    rows = await conn.fetch(
        f"""WITH due AS (
                SELECT d.id FROM webhook_deliveries d
                WHERE {_HEAD} AND {which}
                  AND (d.leased_until IS NULL OR d.leased_until < now())
                ORDER BY d.next_attempt_at, d.id
                LIMIT $1
                FOR UPDATE OF d SKIP LOCKED)
            UPDATE webhook_deliveries d
               SET leased_until = now() + make_interval(secs => $3), attempts = d.attempts + 1
              FROM due, webhook_endpoints e
             WHERE d.id = due.id AND e.id = d.endpoint_id
            RETURNING d.id, d.webhook_id, d.body, d.attempts, d.attempts_left, e.id AS endpoint_id,
                      e.organization_id, e.url, e.secret_encrypted""",
        limit,
        delivery_id,
        lease_seconds,
    )
    return [
        ClaimedDelivery(
            id=row["id"],
            webhook_id=row["webhook_id"],
            body=row["body"],
            attempt=row["attempts"],
            attempts_left=row["attempts_left"],
            endpoint_id=row["endpoint_id"],
            organization_id=row["organization_id"],
            url=row["url"],
            secret_sealed=row["secret_encrypted"],
        )
        for row in rows
    ]


async def seconds_until_due(conn: Connection | Pool) -> float | None:
    """How long until the next claimable delivery is due (None: none is waiting).

    Deliveries leased by a worker are left out: their worker's recording wakes it.
    """
    value = await conn.fetchval(
        f"""SELECT extract(epoch FROM d.next_attempt_at - now())
            FROM webhook_deliveries d
            WHERE {_HEAD} AND (d.leased_until IS NULL OR d.leased_until < now())
            ORDER BY d.next_attempt_at LIMIT 1"""
    )
    return None if value is None else float(value)


async def record_attempts(
    conn: Connection | Pool, outcomes: Sequence[tuple[AttemptOutcome, float | None]]
) -> dict[int, DeliveryStatus]:
    """Store attempts and move their deliveries on: done, retried later, or failed for good.

    Each outcome comes with when to try again after a failure (None after a success); a
    success also ends its endpoint's failure streak. One statement for the whole batch:
    under load many attempts share one commit. Returns each delivery's new status; one
    deleted with its endpoint meanwhile is left out.
    """
    if not outcomes:
        return {}
    rows = await conn.fetch(
        """WITH o AS (
               SELECT * FROM unnest($1::bigint[], $2::integer[], $3::integer[],
                                    $4::double precision[], $5::text[], $6::text[],
                                    $7::boolean[], $8::double precision[])
                   AS o(delivery_id, attempt, status_code, latency_ms, error, response_body,
                        ok, retry_in)),
           attempts AS (
               INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms,
                                             error, response_body)
               SELECT o.delivery_id, o.attempt, o.status_code, o.latency_ms, o.error,
                      o.response_body
               FROM o JOIN webhook_deliveries d ON d.id = o.delivery_id),
           -- A success ends its endpoint's failure streak (a write only where there is one).
           streaks AS (
               UPDATE webhook_endpoints e SET failure_streak = 0
               FROM o JOIN webhook_deliveries d ON d.id = o.delivery_id
               WHERE o.ok AND e.id = d.endpoint_id AND e.failure_streak > 0)
           UPDATE webhook_deliveries d SET
               attempts_left = greatest(d.attempts_left - 1, 0),
               status = CASE WHEN o.ok THEN 'succeeded'
                             WHEN d.attempts_left <= 1 THEN 'failed' ELSE 'pending' END,
               next_attempt_at = CASE WHEN o.ok THEN d.next_attempt_at
                                      ELSE now() + make_interval(secs => o.retry_in) END,
               finished_at = CASE WHEN o.ok OR d.attempts_left <= 1 THEN now() END,
               leased_until = NULL, last_status_code = o.status_code, last_error = o.error
           FROM o WHERE d.id = o.delivery_id
           RETURNING d.id, d.status""",
        [o.delivery_id for o, _ in outcomes],
        [o.attempt for o, _ in outcomes],
        [o.status_code for o, _ in outcomes],
        [o.latency_ms for o, _ in outcomes],
        [o.error for o, _ in outcomes],
        [o.response_body for o, _ in outcomes],
        [o.ok for o, _ in outcomes],
        [retry or 0.0 for _, retry in outcomes],
    )
    return {row["id"]: DeliveryStatus(row["status"]) for row in rows}


async def count_failure(
    conn: Connection, endpoint_id: int, *, disable_after: int, reason: str | None
) -> tuple[bool, int]:
    """Add a failed delivery to the endpoint's streak; disable it (with `reason`) at
    `disable_after` (0: at once). Returns (disabled now, streak)."""
    row = await conn.fetchrow(
        """UPDATE webhook_endpoints e SET
               failure_streak = e.failure_streak + 1,
               enabled = e.enabled AND e.failure_streak + 1 < $2,
               disabled_reason = CASE WHEN e.enabled AND e.failure_streak + 1 >= $2
                                      THEN $3 ELSE e.disabled_reason END,
               disabled_at = CASE WHEN e.enabled AND e.failure_streak + 1 >= $2
                                  THEN now() ELSE e.disabled_at END
           FROM webhook_endpoints old
           WHERE e.id = $1 AND old.id = e.id
           RETURNING old.enabled AND NOT e.enabled AS disabled_now, e.failure_streak""",
        endpoint_id,
        disable_after,
        reason,
    )
    if row is None:  # deleted meanwhile
        return False, 0
    return bool(row["disabled_now"]), int(row["failure_streak"])


_DELIVERY = """d.id, d.uid, e.uid AS endpoint_uid, d.event_id, d.event_type, d.subject,
               d.webhook_id, d.status, d.attempts, d.next_attempt_at, d.last_status_code,
               d.last_error, d.created_at, d.finished_at"""


def _delivery(row: Row, history: Sequence[Attempt] = ()) -> Delivery:
    status = DeliveryStatus(row["status"])
    return Delivery(
        id=row["id"],
        uid=row["uid"],
        endpoint_uid=row["endpoint_uid"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        subject=row["subject"],
        webhook_id=row["webhook_id"],
        status=status,
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if status is DeliveryStatus.PENDING else None,
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        history=tuple(history),
    )


async def _attempts(conn: Connection | Pool, delivery_ids: list[int]) -> dict[int, list[Attempt]]:
    rows = await conn.fetch(
        """SELECT delivery_id, attempt, at, status_code, latency_ms, error, response_body
           FROM webhook_attempts WHERE delivery_id = ANY($1::bigint[])
           ORDER BY delivery_id, id""",
        delivery_ids,
    )
    found: dict[int, list[Attempt]] = {}
    for row in rows:
        found.setdefault(row["delivery_id"], []).append(
            Attempt(
                attempt=row["attempt"],
                at=row["at"],
                status_code=row["status_code"],
                latency_ms=row["latency_ms"],
                error=row["error"],
                response_body=row["response_body"],
            )
        )
    return found


async def deliveries(
    conn: Connection | Pool,
    endpoint_id: int,
    *,
    start: int,
    count: int,
    status: DeliveryStatus | None,
) -> tuple[int, list[Delivery]]:
    """An endpoint's deliveries, newest first, each with its attempts."""
    where = "d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2)"
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM webhook_deliveries d WHERE {where}",
        endpoint_id,
        status,
    )
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY} FROM webhook_deliveries d
            JOIN webhook_endpoints e ON e.id = d.endpoint_id
            WHERE {where} ORDER BY d.id DESC OFFSET $3 LIMIT $4""",
        endpoint_id,
        status,
        start,
        count,
    )
    history = await _attempts(conn, [row["id"] for row in rows])
    return total, [_delivery(row, history.get(row["id"], ())) for row in rows]


async def delivery(
    conn: Connection | Pool, organization_id: int, uid: str, *, for_update: bool = False
) -> tuple[Delivery, Endpoint] | None:
    lock = " FOR UPDATE OF d" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT {_DELIVERY} FROM webhook_deliveries d
            JOIN webhook_endpoints e ON e.id = d.endpoint_id
            WHERE e.organization_id = $1 AND d.uid = $2{lock}""",
        organization_id,
        uid,
    )
    if row is None:
        return None
    history = await _attempts(conn, [row["id"]])
    endpoint_row = await conn.fetchrow(
        f"SELECT {_ENDPOINT} FROM webhook_endpoints e WHERE e.uid = $1", row["endpoint_uid"]
    )
    assert endpoint_row is not None
    return _delivery(row, history.get(row["id"], ())), _endpoint(endpoint_row)


async def requeue(conn: Connection, delivery_id: int, *, attempts: int) -> None:
    """Make a delivery pending again, due now, with a fresh budget of attempts."""
    await conn.execute(
        """UPDATE webhook_deliveries SET status = 'pending', attempts_left = $2,
                  next_attempt_at = now(), finished_at = NULL
           WHERE id = $1""",
        delivery_id,
        attempts,
    )
    await conn.execute("SELECT pg_notify(current_schema() || '_webhooks', '')")


async def prune(conn: Connection | Pool, *, older_than_seconds: float, batch: int = 5000) -> int:
    """Drop finished deliveries (and their attempts) older than the retention."""
    status = await conn.execute(
        """DELETE FROM webhook_deliveries WHERE id IN (
               SELECT id FROM webhook_deliveries
               WHERE finished_at < now() - make_interval(secs => $1) LIMIT $2)""",
        older_than_seconds,
        batch,
    )
    return int(status.rsplit(" ", 1)[-1])


async def now(conn: Connection | Pool) -> datetime:
    value: datetime = await conn.fetchval("SELECT now()")
    return value
