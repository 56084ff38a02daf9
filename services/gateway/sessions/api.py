"""Signing in over HTTP (what the dashboard calls; any client may).

- `POST /api/ekiben/v1/sessions` with `username` and `password`, or with `api_token`:
  a session (its secret shown this once). Wrong credentials are a 401; too many failed
  password attempts for one name a 429 with `Retry-After`.
- `GET /api/ekiben/v1/sessions/current`, `DELETE` it to sign out.
- `PUT /api/ekiben/v1/users/{name}/password`: your own (with your current password, if you
  have one) or, for an admin, any member's. The user's other sessions end.
- `POST /api/ekiben/v1/setup`: the first admin sets a password with the one-time code of
  the setup URL.

Every change is audited; sign-ins and failures are logged (`gateway.session.*`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field, model_validator

from services.gateway.audit import service as audit_records
from services.gateway.audit.service import audit
from services.gateway.guard import GatewayRoute
from services.gateway.identity import service as identity
from services.gateway.identity.auth import CurrentPrincipal, Database, has_role
from services.gateway.identity.models import FULL_ACCESS_SCOPE, Role
from services.gateway.identity.schemas import UserSchema, user_schema
from services.gateway.sessions import service as sessions
from services.gateway.sessions.models import MAX_PASSWORD_LENGTH
from services.gateway.sessions.schemas import (
    SessionSchema,
    SessionWithSecretSchema,
    session_schema,
    session_with_secret_schema,
)
from services.gateway.settings import SessionSettings
from shared.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from shared.http import error_responses
from shared.text import StorableText

router = APIRouter(route_class=GatewayRoute, tags=["sessions"])
SESSIONS_PATH = "/api/ekiben/v1/sessions"


class _Body(StorableText):
    model_config = ConfigDict(extra="forbid")


class SignInBody(_Body):
    username: str | None = Field(default=None, max_length=63)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD_LENGTH)
    api_token: str | None = Field(default=None, max_length=128)
    organization: str | None = Field(default=None, max_length=63)

    @model_validator(mode="after")
    def one_way(self) -> SignInBody:
        if self.api_token and (self.username or self.password):
            raise ValueError("give a username and password, or an API token, not both")
        if not self.api_token and not (self.username and self.password):
            raise ValueError("give a username and a password, or an API token")
        return self


class SetPasswordBody(_Body):
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    current_password: str | None = Field(default=None, max_length=MAX_PASSWORD_LENGTH)


class SetupBody(_Body):
    code: str = Field(min_length=1, max_length=128)
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)


def _settings(request: Request) -> SessionSettings:
    settings: SessionSettings = request.app.state.runtime.settings.sessions
    return settings


@router.post(SESSIONS_PATH, status_code=201, responses=error_responses(401, 403, 422, 429))
async def sign_in(request: Request, db: Database, body: SignInBody) -> SessionWithSecretSchema:
    """Sign in; the answer holds the session's secret, shown this once."""
    agent = request.headers.get("user-agent", "")
    if body.api_token:
        issued = await sessions.sign_in_with_token(
            db, _settings(request), secret=body.api_token, organization=body.organization,
            user_agent=agent,
        )  # fmt: skip
    else:
        assert body.username is not None
        assert body.password is not None
        issued = await sessions.sign_in_with_password(
            db, _settings(request), username=body.username, password=body.password,
            organization=body.organization, user_agent=agent,
        )  # fmt: skip
    session = issued.session
    await audit_records.record(
        db,
        organization=session.organization,
        actor=session.user,
        actor_name=session.user.name,
        token_uid=session.token_uid,
        token_name=session.token_name,
        request_id=getattr(request.state, "request_id", None),
        action="session.created",
        resource_type="session",
        resource=session.uid,
        details={"method": session.method},
    )
    return session_with_secret_schema(session, issued.secret)


def _session_id(principal: CurrentPrincipal) -> int:
    if principal.session_id is None:
        raise NotFound("this request has no session: it was made with an API token")
    return principal.session_id


@router.get(f"{SESSIONS_PATH}/current", responses=error_responses(404))
async def get_current_session(principal: CurrentPrincipal, db: Database) -> SessionSchema:
    session = await sessions.get_session(db, _session_id(principal))
    assert session is not None
    return session_schema(session)


@router.delete(f"{SESSIONS_PATH}/current", responses=error_responses(404))
async def sign_out(request: Request, principal: CurrentPrincipal, db: Database) -> SessionSchema:
    """End the session this request came with."""
    session_id = _session_id(principal)
    assert principal.session_uid is not None
    await sessions.sign_out(db, principal.session_uid, session_id)
    await audit(request, principal, "session.ended", "session", principal.session_uid, {})
    session = await sessions.get_session(db, session_id)
    assert session is not None
    return session_schema(session)


@router.put("/api/ekiben/v1/users/{name}/password")
async def set_password(
    request: Request, principal: CurrentPrincipal, db: Database, name: str, body: SetPasswordBody
) -> UserSchema:
    """Set a password: your own (give `current_password` if you have one), or as an admin
    any member's. Every other session of that user ends."""
    own = name == principal.user.name
    if FULL_ACCESS_SCOPE not in principal.scopes:
        # A password signs in with full access: a narrower token must not mint one.
        raise Forbidden(
            f"API token {principal.token_name!r} may not set passwords: that needs the"
            f" {FULL_ACCESS_SCOPE} scope (a password session has it)"
        )
    if own:
        if await sessions.has_password(
            db, principal.user
        ) and not await sessions.verify_current_password(
            db, principal.user, body.current_password or ""
        ):
            raise Unauthorized("current_password: wrong password")
    elif not has_role(principal, Role.ADMIN):
        raise Forbidden("only an admin may set another member's password")
    member = await identity.member(db, principal.org, name)
    async with db.acquire() as conn, conn.transaction():
        ended = await sessions.set_password(
            conn, member.user, body.password, keep_session_id=principal.session_id
        )
        await audit(
            request, principal, "user.password_set", "user", name, {"sessions_ended": ended},
            conn=conn,
        )  # fmt: skip
    return user_schema(member.user)


@router.post("/api/ekiben/v1/setup", responses=error_responses(401, 422))
async def set_up(request: Request, db: Database, body: SetupBody) -> UserSchema:
    """The first admin sets a password with the code of the one-time setup URL."""
    if not body.code.strip():
        raise InvalidInput("code: empty")
    user = await sessions.redeem_setup_code(db, _settings(request), body.code, body.password)
    admin = await identity.default_admin(db)
    await audit_records.record(
        db,
        organization=admin.organization,
        actor=user,
        actor_name=user.name,
        request_id=getattr(request.state, "request_id", None),
        action="user.password_set",
        resource_type="user",
        resource=user.name,
        details={"via": "setup"},
    )
    return user_schema(user)
