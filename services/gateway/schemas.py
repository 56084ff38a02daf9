"""The shapes of the gateway's JSON answers, as the bentoml client and Yatai define them.

Every object the client decodes builds on `ResourceSchema` (uid, name, resource_type,
timestamps, labels): each of those keys must be present, `null` only where a timestamp
may be absent, `labels` always a list. Datetimes leave as RFC 3339 strings with a
timezone (the client crashes on some naive ones); the `AwareDatetime` fields refuse a naive
value here rather than let one out. Lists travel in the envelope `{start, count, total,
items}`. Query parameters arrive as empty strings when the client has no value (`count=`),
so `page_params` reads them as text and treats `""` as "not given".

See ../shared/docs/bentoml-client-protocol.md §1-§2 and §10.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, Field

from services.gateway.identity import ApiToken, AuditRecord, Member, Organization, User
from shared.errors import InvalidInput

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000


def rfc3339(value: datetime) -> str:
    """`2025-01-01T12:00:00.123456Z`: UTC, with the zone the client needs."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class LabelSchema(BaseModel):
    key: str
    value: str


class ResourceSchema(BaseModel):
    uid: str
    created_at: AwareDatetime
    updated_at: AwareDatetime | None
    deleted_at: AwareDatetime | None
    name: str
    resource_type: str
    labels: list[LabelSchema] = Field(default_factory=list)


class UserSchema(ResourceSchema):
    """The client needs name, email, first_name and last_name; the rest helps the dashboard."""

    resource_type: str = "user"
    email: str
    first_name: str
    last_name: str


class OrganizationSchema(ResourceSchema):
    resource_type: str = "organization"
    description: str


class MemberSchema(BaseModel):
    role: str
    user: UserSchema
    organization: OrganizationSchema
    created_at: AwareDatetime
    updated_at: AwareDatetime | None


class ApiTokenSchema(ResourceSchema):
    """A token as lists and lookups show it: never the secret (the class has no field for it)."""

    resource_type: str = "api_token"
    description: str
    scopes: list[str]
    user: UserSchema
    organization: OrganizationSchema
    expired_at: AwareDatetime | None
    last_used_at: AwareDatetime | None
    is_expired: bool
    is_api_token: bool = True
    is_organization_token: bool = False
    is_global_access: bool = False
    # The first characters of the secret, enough to tell tokens apart, useless to an attacker.
    token_prefix: str


class ApiTokenWithSecretSchema(ApiTokenSchema):
    """The answer to a token creation: the only response that carries the secret."""

    token: str


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


class ListSchema(BaseModel, Generic[T]):
    start: int
    count: int
    total: int
    items: list[T]


class VersionSchema(BaseModel):
    version: str
    git_commit: str
    build_date: str


# --- builders ---------------------------------------------------------------------------------


def user_schema(user: User) -> UserSchema:
    return UserSchema(
        uid=user.uid,
        created_at=user.created_at,
        updated_at=user.updated_at,
        deleted_at=None,
        name=user.name,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
    )


def organization_schema(organization: Organization) -> OrganizationSchema:
    return OrganizationSchema(
        uid=organization.uid,
        created_at=organization.created_at,
        updated_at=organization.updated_at,
        deleted_at=None,
        name=organization.name,
        description=organization.description,
    )


def member_schema(member: Member) -> MemberSchema:
    return MemberSchema(
        role=member.role.value,
        user=user_schema(member.user),
        organization=organization_schema(member.organization),
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


def api_token_schema(token: ApiToken) -> ApiTokenSchema:
    return ApiTokenSchema(
        uid=token.uid,
        created_at=token.created_at,
        updated_at=token.updated_at,
        deleted_at=token.revoked_at,
        name=token.name,
        description=token.description,
        scopes=list(token.scopes),
        user=user_schema(token.user),
        organization=organization_schema(token.organization),
        expired_at=token.expired_at,
        last_used_at=token.last_used_at,
        is_expired=token.is_expired,
        token_prefix=token.prefix,
    )


def issued_token_schema(token: ApiToken, secret: str) -> ApiTokenWithSecretSchema:
    return ApiTokenWithSecretSchema.model_validate(
        {**api_token_schema(token).model_dump(), "token": secret}
    )


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


def list_schema(items: list[T], *, start: int, count: int, total: int) -> ListSchema[T]:
    return ListSchema[T](start=start, count=count, total=total, items=items)


# --- list parameters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    start: int
    count: int
    search: str | None


def _int_param(name: str, raw: str, default: int, low: int, high: int) -> int:
    raw = raw.strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low} and {high}, got {value}")
    return value


def page_params(
    start: Annotated[str, Query(description="Offset of the first item; empty: 0.")] = "",
    count: Annotated[str, Query(description=f"Items per page; empty: {DEFAULT_PAGE_SIZE}.")] = "",
    search: Annotated[str, Query(description="Only items whose name contains this.")] = "",
) -> Page:
    """`?start=&count=&search=` as the client sends them (a FastAPI dependency)."""
    return Page(
        start=_int_param("start", start, 0, 0, 10**9),
        count=_int_param("count", count, DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        search=search.strip() or None,
    )
