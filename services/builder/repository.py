"""The builder's SQL: builds and their log lines.

Every function takes a connection (or the pool) from the caller, who owns the transaction.
Rows leave as the contract's `Build`. State changes are compare-and-set on `status`
(`pending -> building`, `building -> succeeded|failed`): a change that finds the row in
another state does nothing and returns None, so a replayed step cannot finish a build twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.contracts.builder import Build, LogLine
from shared.contracts.vocabulary import BuildStatus
from shared.db import Connection, Pool

Db = Connection | Pool

_COLUMNS = """b.id, b.organization, b.bento_name, b.bento_version, b.status, b.trigger,
    b.reason, b.message, b.image_repository, b.image_tag, b.digest, b.attempts, b.force,
    b.backend, b.namespace, b.requested_by, b.log_tail, b.created_at, b.started_at,
    b.finished_at, b.updated_at, b.content_digest, b.generation, b.rebuild_token,
    (SELECT coalesce(max(seq), 0) FROM build_logs l WHERE l.build_id = b.id) AS log_lines"""

_ACTIVE = ("pending", "building")


class BuildRow(Build):
    """A build as stored: the contract's fields and what only the builder needs."""

    content_digest: str
    generation: int | None = None
    rebuild_token: str | None = None

    def contract(self) -> Build:
        return Build.model_validate(
            self.model_dump(exclude={"content_digest", "generation", "rebuild_token"})
        )


def _row(record: asyncpg.Record | None) -> BuildRow | None:
    if record is None:
        return None
    data: dict[str, Any] = dict(record)
    if data.get("digest"):
        data["image"] = f"{data['image_repository']}@{data['digest']}"
    return BuildRow.model_validate(data)


async def insert_build(
    db: Db,
    *,
    id: str,
    organization: str,
    bento_name: str,
    bento_version: str,
    trigger: str,
    image_repository: str,
    image_tag: str,
    content_digest: str,
    force: bool,
    backend: str,
    namespace: str,
    requested_by: str | None,
    generation: int | None = None,
    rebuild_token: str | None = None,
) -> BuildRow | None:
    """A new pending build; None when one for the same tag is pending or building already."""
    return await _transition(
        db,
        """INSERT INTO builds (id, organization, bento_name, bento_version, trigger,
               image_repository, image_tag, content_digest, force, backend, namespace,
               requested_by, generation, rebuild_token)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT DO NOTHING RETURNING id""",
        id, organization, bento_name, bento_version, trigger, image_repository, image_tag,
        content_digest, force, backend, namespace, requested_by, generation, rebuild_token,
    )  # fmt: skip


async def get_build(db: Db, build_id: str, *, organization: str | None = None) -> BuildRow | None:
    record = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM builds b WHERE b.id = $1 AND ($2::text IS NULL OR b.organization = $2)",  # noqa: E501, S608
        build_id,
        organization,
    )
    return _row(record)


async def latest_build(
    db: Db, *, organization: str, bento_name: str, bento_version: str, image_tag: str,
    namespace: str,
) -> BuildRow | None:  # fmt: skip
    """The newest build of this bento under this tag in `namespace`."""
    record = await db.fetchrow(
        f"""SELECT {_COLUMNS} FROM builds b
            WHERE b.organization = $1 AND b.bento_name = $2 AND b.bento_version = $3
              AND b.image_tag = $4 AND b.namespace = $5
            ORDER BY b.created_at DESC, b.id DESC LIMIT 1""",  # noqa: S608
        organization, bento_name, bento_version, image_tag, namespace,
    )  # fmt: skip
    return _row(record)


async def list_builds(
    db: Db,
    *,
    organization: str,
    bento_name: str | None,
    bento_version: str | None,
    status: BuildStatus | None,
    start: int,
    count: int,
) -> tuple[int, list[BuildRow]]:
    where = """b.organization = $1 AND ($2::text IS NULL OR b.bento_name = $2)
        AND ($3::text IS NULL OR b.bento_version = $3) AND ($4::text IS NULL OR b.status = $4)"""
    args = (organization, bento_name, bento_version, status.value if status else None)
    total = await db.fetchval(f"SELECT count(*) FROM builds b WHERE {where}", *args)  # noqa: S608
    records = await db.fetch(
        f"""SELECT {_COLUMNS} FROM builds b WHERE {where}
            ORDER BY b.created_at DESC, b.id DESC OFFSET $5 LIMIT $6""",  # noqa: S608
        *args,
        start,
        count,
    )
    return int(total), [row for r in records if (row := _row(r)) is not None]


async def unfinished_builds(db: Db, *, limit: int = 100) -> list[BuildRow]:
    records = await db.fetch(
        f"""SELECT {_COLUMNS} FROM builds b WHERE b.status IN ('pending', 'building')
            ORDER BY b.created_at LIMIT $1""",  # noqa: S608
        limit,
    )
    return [row for r in records if (row := _row(r)) is not None]


async def set_generation(db: Db, build_id: str, generation: int) -> None:
    await db.execute(
        "UPDATE builds SET generation = $2, updated_at = clock_timestamp() WHERE id = $1",
        build_id,
        generation,
    )


async def _transition(db: Db, sql: str, *args: Any) -> BuildRow | None:
    build_id = await db.fetchval(sql, *args)
    if build_id is None:
        return None
    return await get_build(db, build_id)


async def mark_building(db: Db, build_id: str, *, restart: bool = False) -> BuildRow | None:
    """`pending -> building` (or, with `restart`, another attempt of a `building` build)."""
    source = "building" if restart else "pending"
    return await _transition(
        db,
        """UPDATE builds SET status = 'building', attempts = attempts + 1,
               started_at = clock_timestamp(), updated_at = clock_timestamp(),
               reason = NULL, message = NULL
           WHERE id = $1 AND status = $2 RETURNING id""",
        build_id,
        source,
    )


async def mark_succeeded(
    db: Db, build_id: str, *, digest: str, reason: str, message: str = ""
) -> BuildRow | None:
    return await _transition(
        db,
        """UPDATE builds SET status = 'succeeded', digest = $2, reason = $3, message = $4,
               finished_at = clock_timestamp(), updated_at = clock_timestamp()
           WHERE id = $1 AND status IN ('pending', 'building') RETURNING id""",
        build_id,
        digest,
        reason,
        message,
    )


async def mark_failed(
    db: Db, build_id: str, *, reason: str, message: str, tail: Sequence[str]
) -> BuildRow | None:
    return await _transition(
        db,
        """UPDATE builds SET status = 'failed', reason = $2, message = $3, log_tail = $4,
               finished_at = clock_timestamp(), updated_at = clock_timestamp()
           WHERE id = $1 AND status IN ('pending', 'building') RETURNING id""",
        build_id,
        reason,
        message,
        list(tail),
    )


# --- logs ------------------------------------------------------------------------------------


async def append_logs(db: Db, build_id: str, first_seq: int, lines: Sequence[str]) -> None:
    """Store `lines` as sequence numbers `first_seq`, `first_seq + 1`, ... (replays ignored)."""
    if not lines:
        return
    await db.execute(
        """INSERT INTO build_logs (build_id, seq, line)
           SELECT $1, $2 + n - 1, line FROM unnest($3::text[]) WITH ORDINALITY AS t(line, n)
           ON CONFLICT DO NOTHING""",
        build_id,
        first_seq,
        [line.replace("\x00", "") for line in lines],
    )


async def last_log_seq(db: Db, build_id: str) -> int:
    value = await db.fetchval(
        "SELECT coalesce(max(seq), 0) FROM build_logs WHERE build_id = $1", build_id
    )
    return int(value)


async def trim_logs(db: Db, build_id: str, *, keep: int) -> None:
    """Keep the last `keep` lines of a build (the failing step is at the end)."""
    await db.execute(
        """DELETE FROM build_logs WHERE build_id = $1
           AND seq <= (SELECT max(seq) FROM build_logs WHERE build_id = $1) - $2""",
        build_id,
        keep,
    )


async def read_logs(db: Db, build_id: str, *, after: int, limit: int) -> list[LogLine]:
    records = await db.fetch(
        """SELECT seq, line FROM build_logs WHERE build_id = $1 AND seq > $2
           ORDER BY seq LIMIT $3""",
        build_id,
        after,
        limit,
    )
    return [LogLine(seq=r["seq"], line=r["line"]) for r in records]
