"""The audit log's SQL: one record per change, newest first when read."""

# ruff: noqa: S608 - the f-strings splice in a constant WHERE fragment only

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Connection, Pool


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    organization: str | None
    actor: str
    token_uid: str | None
    token_name: str | None
    request_id: str | None
    action: str
    resource_type: str
    resource: str
    details: dict[str, Any]


async def insert_audit(
    conn: Connection | Pool,
    *,
    organization_id: int | None,
    actor_user_id: int | None,
    actor_name: str,
    token_uid: str | None,
    token_name: str | None,
    request_id: str | None,
    action: str,
    resource_type: str,
    resource: str,
    details: Mapping[str, Any],
) -> int:
    audit_id: int = await conn.fetchval(
        """INSERT INTO audit_log (organization_id, actor_user_id, actor_name, token_uid,
                                  token_name, request_id, action, resource_type, resource, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
        organization_id,
        actor_user_id,
        actor_name,
        token_uid,
        token_name,
        request_id,
        action,
        resource_type,
        resource,
        dict(details),
    )
    return audit_id


async def audit_records(
    conn: Connection | Pool,
    organization_id: int,
    *,
    start: int,
    count: int,
    action: str | None,
    actor: str | None = None,
    resource_type: str | None = None,
) -> tuple[int, list[AuditRecord]]:
    """An organization's audit records, newest first, and how many match in all."""
    where = """a.organization_id = $1 AND ($2::text IS NULL OR a.action = $2)
               AND ($3::text IS NULL OR a.actor_name = $3)
               AND ($4::text IS NULL OR a.resource_type = $4)"""
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM audit_log a WHERE {where}",
        organization_id,
        action,
        actor,
        resource_type,
    )
    rows = await conn.fetch(
        f"""SELECT a.id, a.at, a.actor_name, a.token_uid, a.token_name, a.request_id, a.action,
                   a.resource_type, a.resource, a.details, o.name AS org_name
            FROM audit_log a LEFT JOIN organizations o ON o.id = a.organization_id
            WHERE {where} ORDER BY a.id DESC OFFSET $5 LIMIT $6""",
        organization_id,
        action,
        actor,
        resource_type,
        start,
        count,
    )
    return total, [_audit(row) for row in rows]


def _audit(row: asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        at=row["at"],
        organization=row["org_name"],
        actor=row["actor_name"],
        token_uid=row["token_uid"],
        token_name=row["token_name"],
        request_id=row["request_id"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource=row["resource"],
        details=row["details"],
    )
