"""Identity routes: the current user and organization, API tokens, members, users, audit.

The Yatai-compatible part is what `bentoml cloud login` and `bentoml api-token` call
(../shared/docs/bentoml-client-protocol.md §3 and §10); the rest follows Yatai's API
(yatai-reference.md §1). Who may do what:

- any member reads: the current user and organization, their own tokens, members, users;
- developers and admins create tokens for themselves (guests are read-only), and anyone
  may revoke their own token, since giving up access never needs a permission;
- admins add members, create users, issue tokens for other members, see and revoke any
  token of the organization, and read the audit log.

A token can only issue tokens whose scopes it holds itself (unless it has `api`), so a
narrow token never mints a broad one. Every change commits with its audit record.
"""

from __future__ import annotations

from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import ConfigDict, Field

from services.gateway.audit.service import audit
from services.gateway.guard import GatewayRoute
from services.gateway.identity import service as identity
from services.gateway.identity.auth import (
    AdminPrincipal,
    CurrentPrincipal,
    Database,
    DeveloperPrincipal,
    Principal,
    has_role,
    token_cache,
)
from services.gateway.identity.models import (
    FULL_ACCESS_SCOPE,
    NAME_PATTERN,
    ApiToken,
    IssuedToken,
    Role,
    User,
)
from services.gateway.identity.schemas import (
    ApiTokenSchema,
    ApiTokenWithSecretSchema,
    MemberSchema,
    OrganizationSchema,
    UserSchema,
    VersionSchema,
    api_token_schema,
    issued_token_schema,
    member_schema,
    organization_schema,
    user_schema,
)
from services.gateway.schemas import ListSchema, Page, list_schema, paging
from shared.db import Connection, Pool
from shared.errors import Forbidden, NotFound
from shared.http import error_responses
from shared.text import StorableText

router = APIRouter(route_class=GatewayRoute)
Paging = Annotated[Page, Depends(paging())]


class _Body(StorableText):
    # The client may send fields we do not use; they are not an error. Text anywhere in a
    # body must be text PostgreSQL can store (`shared.text`).
    model_config = ConfigDict(extra="ignore")


class CreateApiTokenBody(_Body):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=4096)
    scopes: list[str] | None = None
    # The bentoml client sends a naive local time ("YYYY-MM-DD HH:MM:SS.ffffff"): read as UTC.
    expired_at: datetime | None = None


class AddMembersBody(_Body):
    usernames: list[str] = Field(min_length=1)
    role: Role


class CreateUserBody(_Body):
    # Checked by identity, with a message saying what a name may hold.
    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN.pattern, "maxLength": 63})
    email: str = Field(default="", max_length=320)
    first_name: str = Field(default="", max_length=255)
    last_name: str = Field(default="", max_length=255)
    role: Role = Role.DEVELOPER


# --- public ----------------------------------------------------------------------------------


@router.get("/api/v1/version", tags=["meta"])
async def get_version() -> VersionSchema:
    try:
        version = package_version("ekiben")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "0.0.0"
    return VersionSchema(version=version, git_commit="", build_date="")


# --- the caller ------------------------------------------------------------------------------


@router.get("/api/v1/auth/current", tags=["identity"])
async def get_current_user(principal: CurrentPrincipal) -> UserSchema:
    return user_schema(principal.user)


@router.get("/api/v1/current_org", tags=["identity"])
async def get_current_organization(principal: CurrentPrincipal) -> OrganizationSchema:
    return organization_schema(principal.org)


# --- API tokens ------------------------------------------------------------------------------


@router.get("/api/v1/api_tokens", tags=["api tokens"])
async def list_api_tokens(
    principal: CurrentPrincipal, db: Database, page: Paging
) -> ListSchema[ApiTokenSchema]:
    """The caller's own live tokens, newest first."""
    total, tokens = await identity.list_tokens(
        db, principal.org, principal.user, start=page.start, count=page.count, search=page.search
    )
    return list_schema(
        [api_token_schema(t) for t in tokens], start=page.start, count=page.count, total=total
    )


@router.post("/api/v1/api_tokens", tags=["api tokens"], responses=error_responses(409))
async def create_api_token(
    request: Request, principal: DeveloperPrincipal, db: Database, body: CreateApiTokenBody
) -> ApiTokenWithSecretSchema:
    """A new token for the caller; the answer holds the secret, shown this once."""
    async with db.acquire() as conn, conn.transaction():
        issued = await _issue(request, principal, conn, principal.user, body)
    return issued_token_schema(issued.token, issued.secret)


@router.get("/api/v1/api_tokens/{uid}", tags=["api tokens"])
async def get_api_token(principal: CurrentPrincipal, db: Database, uid: str) -> ApiTokenSchema:
    return api_token_schema(await _visible_token(db, principal, uid))


@router.delete("/api/v1/api_tokens/{uid}", tags=["api tokens"], responses=error_responses(409))
async def delete_api_token(
    request: Request, principal: CurrentPrincipal, db: Database, uid: str
) -> ApiTokenSchema:
    """Revoke a token: the caller's own, or any in the organization for an admin."""
    async with db.acquire() as conn, conn.transaction():
        token = await _visible_token(conn, principal, uid)
        revoked = await identity.revoke_token(conn, token)
        await audit(
            request,
            principal,
            "api_token.revoked",
            "api_token",
            revoked.name,
            {"uid": revoked.uid, "user": revoked.user.name},
            conn=conn,
        )
    token_cache(request).forget(revoked.uid)  # revoked here: refused at once, not in seconds
    return api_token_schema(revoked)


async def _visible_token(db: Connection | Pool, principal: Principal, uid: str) -> ApiToken:
    token = await identity.get_token(db, principal.org, uid)
    # Another member's token is as absent as a missing one to whoever may not manage it.
    if token.user.id != principal.user.id and not has_role(principal, Role.ADMIN):
        raise NotFound(f"API token with UID {uid} not found")
    return token


async def _issue(
    request: Request,
    principal: Principal,
    conn: Connection,
    user: User,
    body: CreateApiTokenBody,
) -> IssuedToken:
    scopes = identity.check_scopes(body.scopes)
    if FULL_ACCESS_SCOPE not in principal.scopes and not set(scopes) <= principal.scopes:
        raise Forbidden(
            f"API token {principal.token_name!r} can only issue tokens with its own scopes"
            f" ({', '.join(sorted(principal.scopes))}), not {', '.join(scopes)}"
        )
    issued = await identity.issue_token(
        conn,
        organization=principal.org,
        user=user,
        name=body.name,
        description=body.description or "",
        scopes=scopes,
        expired_at=body.expired_at,
    )
    token = issued.token
    await audit(
        request,
        principal,
        "api_token.created",
        "api_token",
        token.name,
        {
            "uid": token.uid,
            "user": user.name,
            "scopes": list(token.scopes),
            "expired_at": token.expired_at.isoformat() if token.expired_at else None,
        },
        conn=conn,
    )
    return issued


# --- members and users -----------------------------------------------------------------------


@router.get("/api/v1/members", tags=["members"])
async def list_members(principal: CurrentPrincipal, db: Database) -> list[MemberSchema]:
    _, members = await identity.list_members(db, principal.org)
    return [member_schema(m) for m in members]


@router.post("/api/v1/members", tags=["members"], responses=error_responses(409))
async def add_members(
    request: Request, principal: AdminPrincipal, db: Database, body: AddMembersBody
) -> list[MemberSchema]:
    """Add existing users to the organization with a role, or change their role."""
    async with db.acquire() as conn, conn.transaction():
        members = await identity.add_members(conn, principal.org, body.usernames, body.role)
        await audit(
            request,
            principal,
            "member.added",
            "organization",
            principal.org.name,
            {"usernames": [m.user.name for m in members], "role": body.role.value},
            conn=conn,
        )
    return [member_schema(m) for m in members]


@router.get("/api/v1/users", tags=["users"])
async def list_users(
    principal: CurrentPrincipal, db: Database, page: Paging
) -> ListSchema[UserSchema]:
    """The organization's members as users, oldest first."""
    total, members = await identity.list_members(
        db, principal.org, start=page.start, count=page.count, search=page.search
    )
    return list_schema(
        [user_schema(m.user) for m in members], start=page.start, count=page.count, total=total
    )


@router.post("/api/v1/users", tags=["users"], responses=error_responses(409))
async def create_user(
    request: Request, principal: AdminPrincipal, db: Database, body: CreateUserBody
) -> UserSchema:
    """A new user, member of the caller's organization with the given role."""
    async with db.acquire() as conn, conn.transaction():
        member = await identity.create_user(
            conn,
            principal.org,
            name=body.name,
            email=body.email,
            first_name=body.first_name,
            last_name=body.last_name,
            role=body.role,
        )
        await audit(
            request,
            principal,
            "user.created",
            "user",
            member.user.name,
            {"email": member.user.email, "role": member.role.value},
            conn=conn,
        )
    return user_schema(member.user)


@router.post(
    "/api/ekiben/v1/users/{name}/api_tokens", tags=["api tokens"], responses=error_responses(409)
)
async def create_api_token_for_user(
    request: Request,
    principal: AdminPrincipal,
    db: Database,
    name: str,
    body: CreateApiTokenBody,
) -> ApiTokenWithSecretSchema:
    """An admin issues a token to another member (how a new user gets a first token)."""
    async with db.acquire() as conn, conn.transaction():
        member = await identity.member(conn, principal.org, name)
        issued = await _issue(request, principal, conn, member.user, body)
    return issued_token_schema(issued.token, issued.secret)
