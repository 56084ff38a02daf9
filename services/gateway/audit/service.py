"""The audit log: one record for every change made through the API.

A record says who (the user, and the token they used), where (the organization), when,
under which request id (the `X-Request-Id` the caller sent or the one the gateway made,
also in the logs and the response headers), and what: an `action` such as
`api_token.created`, the resource's type and name, and free-form `details`.

Routes call `audit(...)` after the change succeeded. When the change is in the gateway's
own database, pass its connection (`conn=`) so the change and its record commit together;
a change made by another service over request/reply is recorded once that service has
answered. Admins read the log at `GET /api/ekiben/v1/audit`, newest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request

from services.gateway.audit import repository
from services.gateway.audit.repository import AuditRecord
from services.gateway.identity.models import Organization, User
from shared.db import Connection, Pool
from shared.logging import get_logger

if TYPE_CHECKING:
    # Only a type: identity's auth imports identity's logic, which records through here.
    from services.gateway.identity.auth import Principal

log = get_logger(__name__)


async def record(
    conn: Connection | Pool,
    *,
    organization: Organization | None,
    actor_name: str,
    action: str,
    resource_type: str,
    resource: str,
    details: Mapping[str, Any] | None = None,
    actor: User | None = None,
    token_uid: str | None = None,
    token_name: str | None = None,
    request_id: str | None = None,
) -> int:
    """Write one audit record; pass the connection of the change to commit both together."""
    return await repository.insert_audit(
        conn,
        organization_id=organization.id if organization else None,
        actor_user_id=actor.id if actor else None,
        actor_name=actor_name,
        token_uid=token_uid,
        token_name=token_name,
        request_id=request_id,
        action=action,
        resource_type=resource_type,
        resource=resource,
        details=details or {},
    )


async def audit_records(
    conn: Connection | Pool,
    organization: Organization,
    *,
    start: int,
    count: int,
    action: str | None = None,
    actor: str | None = None,
    resource_type: str | None = None,
) -> tuple[int, list[AuditRecord]]:
    return await repository.audit_records(
        conn,
        organization.id,
        start=start,
        count=count,
        action=action,
        actor=actor,
        resource_type=resource_type,
    )


async def audit(
    request: Request,
    principal: Principal,
    action: str,
    resource_type: str,
    resource: str,
    details: Mapping[str, Any] | None = None,
    *,
    conn: Connection | None = None,
) -> int:
    """Record that `principal` did `action` on `resource`; returns the record's id."""
    request_id = getattr(request.state, "request_id", None)
    record_id = await record(
        conn if conn is not None else request.app.state.runtime.pool,
        organization=principal.org,
        actor=principal.user,
        actor_name=principal.user.name,
        token_uid=principal.token_uid,
        token_name=principal.token_name,
        request_id=request_id,
        action=action,
        resource_type=resource_type,
        resource=resource,
        details=details,
    )
    log.info(
        "gateway.audit.recorded",
        action=action,
        resource_type=resource_type,
        resource=resource,
        actor=principal.user.name,
        organization=principal.org.name,
    )
    return record_id
