"""The audit log's JSON answers."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel

from services.gateway.audit.repository import AuditRecord


class AuditRecordSchema(BaseModel):
    id: int
    at: AwareDatetime
    organization: str | None
    actor: str
    token_uid: str | None
    token_name: str | None
    request_id: str | None
    action: str
    resource_type: str
    resource: str
    details: dict[str, Any]


def audit_record_schema(record: AuditRecord) -> AuditRecordSchema:
    return AuditRecordSchema(
        id=record.id,
        at=record.at,
        organization=record.organization,
        actor=record.actor,
        token_uid=record.token_uid,
        token_name=record.token_name,
        request_id=record.request_id,
        action=record.action,
        resource_type=record.resource_type,
        resource=record.resource,
        details=record.details,
    )
