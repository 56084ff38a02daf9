"""The audit log over HTTP: admins read their organization's records, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.gateway.audit import service as audit
from services.gateway.audit.schemas import AuditRecordSchema, audit_record_schema
from services.gateway.guard import GatewayRoute
from services.gateway.identity.auth import AdminPrincipal, Database
from services.gateway.schemas import ListSchema, Page, list_schema, paging

router = APIRouter(route_class=GatewayRoute)
Paging = Annotated[Page, Depends(paging())]


@router.get("/api/ekiben/v1/audit", tags=["audit"])
async def list_audit_records(
    principal: AdminPrincipal,
    db: Database,
    page: Paging,
    action: Annotated[str, Query(description="Only records of this action.")] = "",
    actor: Annotated[str, Query(description="Only records of this actor (a user name).")] = "",
    resource_type: Annotated[
        str, Query(description="Only records about this kind of resource (bento, api_token).")
    ] = "",
) -> ListSchema[AuditRecordSchema]:
    """The organization's audit records, newest first."""
    total, records = await audit.audit_records(
        db,
        principal.org,
        start=page.start,
        count=page.count,
        action=action.strip() or None,
        actor=actor.strip() or None,
        resource_type=resource_type.strip() or None,
    )
    return list_schema(
        [audit_record_schema(r) for r in records], start=page.start, count=page.count, total=total
    )
