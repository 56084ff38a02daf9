"""Who is calling, and may they: the principal behind a request, as FastAPI dependencies.

A request authenticates with its API token in the `X-YATAI-API-TOKEN` header (the only
credential the bentoml client sends), or with a session in `X-Ekiben-Session` (what
signing in makes, `services.gateway.sessions`; the dashboard sends it). A session acts as
its user in its organization, with its token's scopes when it was made from a token.
The token decides everything else: the user, the one organization the request acts in,
the user's role there, and the token's scopes. A request that names an organization
(`X-Yatai-Organization` header or `?organization_name=`, as Yatai clients may) must name
the token's own; any other is a 403, whether or not that organization exists.

Failures are JSON errors from the shared taxonomy: 401 when there is no usable token
(missing, unknown, revoked, expired; the bentoml client reports 401 as "bad
credentials"), 403 when the token is good but the call is not allowed (another
organization, a role or scope too low).

Verified tokens are remembered for a few seconds per process (`TokenCache`), so a burst of
calls costs one database read, not one each. A revocation made through this gateway takes
effect at once; one made elsewhere (another replica, `ekiben token`) within
`TOKEN_CACHE_SECONDS`. Expiry is checked on every call.

Routes declare what they need:

    async def read(principal: Annotated[Principal, Depends(current_principal)]): ...
    async def write(principal: Annotated[Principal, Depends(require_role(Role.DEVELOPER))]): ...

or with the aliases `CurrentPrincipal`, `DeveloperPrincipal`, `AdminPrincipal`.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from services.gateway.identity import service as identity
from services.gateway.identity.models import (
    ADMIN_SCOPES,
    FULL_ACCESS_SCOPE,
    ApiToken,
    Organization,
    Role,
    User,
)
from services.gateway.schemas import rfc3339
from services.gateway.sessions import service as sessions
from services.gateway.sessions.models import PASSWORD_SESSION_NAME, SESSION_HEADER
from shared.db import Pool
from shared.errors import Forbidden, Unauthorized

__all__ = [
    "AdminPrincipal",
    "CurrentPrincipal",
    "Database",
    "DeveloperPrincipal",
    "Principal",
    "Role",
    "authenticate",
    "check_role",
    "current_principal",
    "db_pool",
    "has_role",
    "require_role",
]

TOKEN_HEADER = "X-YATAI-API-TOKEN"  # noqa: S105 - a header name
ORGANIZATION_HEADER = "X-Yatai-Organization"
ORGANIZATION_QUERY = "organization_name"
# `last_used_at` is a hint for people, not an access log: one write a minute per token
# keeps a busy client from turning every read into a write.
LAST_USED_EVERY_SECONDS = 60.0
TOKEN_CACHE_SECONDS = 5.0


class TokenCache:
    """Recently verified tokens by secret hash, each kept `ttl` seconds (bounded, LRU)."""

    def __init__(self, ttl: float = TOKEN_CACHE_SECONDS, size: int = 4096) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, ApiToken]] = OrderedDict()

    def get(self, key: bytes) -> ApiToken | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: bytes, token: ApiToken) -> None:
        self._entries[key] = (time.monotonic() + self._ttl, token)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, token_uid: str) -> None:
        for key in [k for k, (_, t) in self._entries.items() if t.uid == token_uid]:
            del self._entries[key]


def token_cache(request: Request) -> TokenCache:
    cache: TokenCache | None = getattr(request.app.state, "token_cache", None)
    if cache is None:
        cache = request.app.state.token_cache = TokenCache()
    return cache


async def _verified_token(request: Request, pool: Pool, secret: str) -> ApiToken | None:
    """The token behind `secret`, from the cache when it was read moments ago."""
    if not identity.looks_like_token(secret):
        return None
    cache, key = token_cache(request), identity.hash_secret(secret)
    token = cache.get(key)
    if token is None:
        token = await identity.find_token(pool, secret)
        if token is not None and token.revoked_at is None:
            cache.put(key, token)
    elif token.expired_at is not None and token.expired_at <= datetime.now(UTC):
        token = dataclasses.replace(token, is_expired=True)
    if token is not None and token.revoked_at is None:
        before = token.last_used_at
        await identity.touch_token(pool, token, every_seconds=LAST_USED_EVERY_SECONDS)
        if before is None or (datetime.now(UTC) - before).total_seconds() >= (
            LAST_USED_EVERY_SECONDS
        ):
            # Touched just now: remember that, or every cached call would touch again.
            cache.put(key, dataclasses.replace(token, last_used_at=datetime.now(UTC)))
    return token


# Scopes that let a token change things, and administer things, within its user's role.
WRITE_SCOPES = frozenset({FULL_ACCESS_SCOPE, "write_organization", "operate_organization"})
OPERATE_SCOPES = ADMIN_SCOPES
_SCOPES_FOR = {Role.GUEST: None, Role.DEVELOPER: WRITE_SCOPES, Role.ADMIN: OPERATE_SCOPES}


@dataclass(frozen=True)
class Principal:
    """The user a request acts as, in the organization of its token."""

    user: User
    org: Organization
    role: Role
    token_uid: str
    token_name: str
    scopes: frozenset[str]
    # Set when the request came with a session (`X-Ekiben-Session`) rather than a token.
    session_id: int | None = None
    session_uid: str | None = None

    @property
    def organization(self) -> str:
        """The organization's name, what commands to other services carry."""
        return self.org.name

    @property
    def user_name(self) -> str:
        return self.user.name


_token_header = APIKeyHeader(
    name=TOKEN_HEADER,
    auto_error=False,
    description="An API token (`ekiben token create`, or POST /api/v1/api_tokens).",
)
_session_header = APIKeyHeader(
    name=SESSION_HEADER,
    auto_error=False,
    description="A session (POST /api/ekiben/v1/sessions), what the dashboard sends.",
)


def db_pool(request: Request) -> Pool:
    """The gateway's database pool (a FastAPI dependency)."""
    pool: Pool = request.app.state.runtime.pool
    return pool


Database = Annotated[Pool, Depends(db_pool)]


async def authenticate(request: Request) -> Principal:
    """The caller, from its API token; 401 or 403 with a message saying why not.

    Verified once per request: the gateway's route class calls this before the body is
    read (`services.gateway.guard`), and `current_principal` then finds the answer here.
    """
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    secret = request.headers.get(TOKEN_HEADER)
    session_secret = request.headers.get(SESSION_HEADER, "").strip()
    if (not secret or not secret.strip()) and session_secret:
        principal = await _session_principal(request, session_secret)
        request.state.principal = principal
        return principal
    if not secret or not secret.strip():
        raise Unauthorized(f"missing API token: send it in the {TOKEN_HEADER} header")
    pool = db_pool(request)
    token = await _verified_token(request, pool, secret.strip())
    if token is None:
        raise Unauthorized("invalid API token")
    if token.revoked_at is not None:
        raise Unauthorized(f"API token {token.name!r} was revoked on {rfc3339(token.revoked_at)}")
    if token.is_expired:
        assert token.expired_at is not None
        raise Unauthorized(f"API token {token.name!r} expired on {rfc3339(token.expired_at)}")
    org = token.organization
    if token.role is None:
        raise Forbidden(
            f"user {token.user.name!r} is no longer a member of organization {org.name!r}"
        )
    asked = _named_organization(request)
    if asked is not None and asked != org.name:
        raise Forbidden(f"API token belongs to organization {org.name!r}, not {asked!r}")
    principal = Principal(
        user=token.user,
        org=org,
        role=token.role,
        token_uid=token.uid,
        token_name=token.name,
        scopes=frozenset(token.scopes),
    )
    request.state.principal = principal
    return principal


async def _session_principal(request: Request, secret: str) -> Principal:
    settings = request.app.state.runtime.settings.sessions
    session = await sessions.find_session(db_pool(request), settings, secret)
    if session is None:
        raise Unauthorized("the session has ended (signed out or expired): sign in again")
    if session.role is None:
        raise Forbidden(
            f"user {session.user.name!r} is no longer a member of organization"
            f" {session.organization.name!r}"
        )
    asked = _named_organization(request)
    if asked is not None and asked != session.organization.name:
        raise Forbidden(
            f"the session is in organization {session.organization.name!r}, not {asked!r}"
        )
    return Principal(
        user=session.user,
        org=session.organization,
        role=session.role,
        token_uid=session.token_uid or session.uid,
        token_name=session.token_name or PASSWORD_SESSION_NAME,
        scopes=frozenset(session.scopes),
        session_id=session.id,
        session_uid=session.uid,
    )


async def current_principal(
    request: Request,
    _secret: Annotated[str | None, Security(_token_header)],
    _session: Annotated[str | None, Security(_session_header)],
) -> Principal:
    """A dependency: the caller (see `authenticate`). The `Security` parameters declare
    the token and session headers in the OpenAPI document; `authenticate` reads them."""
    return await authenticate(request)


def _named_organization(request: Request) -> str | None:
    # Clients send empty parameters for "none" (see the protocol notes), hence `or None`.
    header = request.headers.get(ORGANIZATION_HEADER, "").strip()
    query = request.query_params.get(ORGANIZATION_QUERY, "").strip()
    return header or query or None


def check_role(principal: Principal, role: Role) -> None:
    """403 unless the user's role and the token's scopes both allow `role`'s calls."""
    if not principal.role.allows(role):
        raise Forbidden(
            f"this call needs the {role.value} role in organization {principal.organization!r};"
            f" user {principal.user_name!r} is a {principal.role.value}"
            + (" (read-only)" if principal.role is Role.GUEST else "")
        )
    needed = _SCOPES_FOR[role]
    if needed is not None and not principal.scopes & needed:
        raise Forbidden(
            f"API token {principal.token_name!r} (scopes: {', '.join(sorted(principal.scopes))})"
            f" may not make this call: it needs one of the scopes {', '.join(sorted(needed))}"
        )


def has_role(principal: Principal, role: Role) -> bool:
    try:
        check_role(principal, role)
    except Forbidden:
        return False
    return True


def require_role(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, if their role (and token scopes) allow `role`'s calls."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        check_role(principal, role)
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
DeveloperPrincipal = Annotated[Principal, Depends(require_role(Role.DEVELOPER))]
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.ADMIN))]
