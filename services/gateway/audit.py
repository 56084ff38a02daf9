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
from typing import Any

from fastapi import Request

from services.gateway import identity
from services.gateway.auth import Principal, db_pool
from shared.db import Connection
from shared.logging import get_logger

log = get_logger(__name__)


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
    record_id = await identity.record(
        conn if conn is not None else db_pool(request),
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
