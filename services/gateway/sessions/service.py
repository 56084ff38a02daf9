"""Signing in: passwords, sessions, throttled failures, the first admin's setup code.

- `sign_in_with_password` checks a user name and password (Argon2id, `passwords`). Failed
  attempts are counted per user name in the database, so every replica sees them: after
  `max_failures` within the window, further attempts get a 429 saying when to retry, even
  with the right password, until the oldest failure leaves the window. An unknown name
  fails (and is throttled) exactly like a wrong password.
- `sign_in_with_token` trades an API token for a session with the token's scopes; the
  session ends when the token is revoked or expires.
- `find_session` is how `identity.auth` authenticates a session secret.
- `ensure_first_admin_password`: on every start, until the first admin has a password,
  either sets it from the settings or issues a fresh one-time setup URL (logged, and
  written to `setup_url_file`); `redeem_setup_code` sets the password from that URL.
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from pathlib import Path

from services.gateway.identity import repository as identity_repository
from services.gateway.identity import service as identity
from services.gateway.identity.models import Organization, Role, User
from services.gateway.sessions import passwords, repository
from services.gateway.sessions.models import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    SESSION_LENGTH,
    SESSION_PREFIX,
    IssuedSession,
    Method,
    Session,
)
from services.gateway.settings import SessionSettings
from shared.db import Connection, Pool
from shared.errors import Forbidden, InvalidInput, NotFound, TooManyRequests, Unauthorized
from shared.logging import get_logger

log = get_logger(__name__)

# `last_seen_at` drives the idle limit; one write a minute per session is plenty.
TOUCH_EVERY_SECONDS = 60.0


def new_secret() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def looks_like_session(secret: str) -> bool:
    return len(secret) == SESSION_LENGTH and secret.startswith(SESSION_PREFIX)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password: at most {MAX_PASSWORD_LENGTH} characters")
    return password


async def _choose_organization(
    conn: Connection | Pool, user: User, wanted: str | None
) -> tuple[Organization, Role]:
    found = await repository.memberships(conn, user.id)
    if wanted:
        for org, role in found:
            if org.name == wanted:
                return org, role
        raise Forbidden(f"user {user.name!r} is not a member of organization {wanted!r}")
    if not found:
        raise Forbidden(f"user {user.name!r} is not a member of any organization")
    return found[0]


async def _start(
    conn: Connection | Pool,
    settings: SessionSettings,
    *,
    user: User,
    organization: Organization,
    token_id: int | None,
    method: Method,
    user_agent: str,
) -> IssuedSession:
    secret = new_secret()
    session_id = await repository.insert_session(
        conn,
        secret_hash=identity.hash_secret(secret),
        organization_id=organization.id,
        user_id=user.id,
        token_id=token_id,
        method=method,
        user_agent=user_agent,
        lifetime_seconds=settings.lifetime_hours * 3600,
    )
    session = await repository.session_by_id(conn, session_id)
    assert session is not None
    log.info(
        "gateway.session.started", user=user.name, organization=organization.name, method=method
    )
    return IssuedSession(session=session, secret=secret)


async def sign_in_with_password(
    pool: Pool,
    settings: SessionSettings,
    *,
    username: str,
    password: str,
    organization: str | None,
    user_agent: str = "",
) -> IssuedSession:
    username = username.strip()
    if not username or not password:
        raise InvalidInput("give a username and a password, or an API token")
    until = await repository.throttled_until(
        pool, username, settings.failure_window_seconds, settings.max_failures
    )
    if until is not None:
        wait = max(1, math.ceil((until - datetime.now(UTC)).total_seconds()))
        log.warning("gateway.session.throttled", user=username, retry_after=wait)
        raise TooManyRequests(
            f"too many failed sign-ins for {username!r}: try again in {wait} s",
            retry_after=wait,
        )
    found = await repository.credentials(pool, username)
    if not await passwords.verify_password(found.password_hash if found else None, password):
        await repository.record_failure(pool, username, settings.failure_window_seconds)
        log.warning("gateway.session.refused", user=username)
        raise Unauthorized("wrong username or password")
    assert found is not None
    await repository.clear_failures(pool, username)
    org, _ = await _choose_organization(pool, found.user, organization)
    return await _start(
        pool,
        settings,
        user=found.user,
        organization=org,
        token_id=None,
        method="password",
        user_agent=user_agent,
    )


async def sign_in_with_token(
    pool: Pool,
    settings: SessionSettings,
    *,
    secret: str,
    organization: str | None,
    user_agent: str = "",
) -> IssuedSession:
    token = await identity.find_token(pool, secret.strip())
    if token is None:
        raise Unauthorized("invalid API token")
    if token.revoked_at is not None:
        raise Unauthorized(f"API token {token.name!r} was revoked")
    if token.is_expired:
        raise Unauthorized(f"API token {token.name!r} has expired")
    if token.role is None:
        raise Forbidden(
            f"user {token.user.name!r} is no longer a member of {token.organization.name!r}"
        )
    if organization and organization != token.organization.name:
        raise Forbidden(
            f"API token belongs to organization {token.organization.name!r}, not {organization!r}"
        )
    return await _start(
        pool,
        settings,
        user=token.user,
        organization=token.organization,
        token_id=token.id,
        method="api_token",
        user_agent=user_agent,
    )


async def find_session(pool: Pool, settings: SessionSettings, secret: str) -> Session | None:
    """The live session behind `secret`, or None (unknown, signed out, expired)."""
    if not looks_like_session(secret):
        return None
    session = await repository.live_session_by_hash(
        pool, identity.hash_secret(secret), settings.idle_minutes * 60
    )
    if session is not None:
        age = (datetime.now(UTC) - session.last_seen_at).total_seconds()
        if age >= TOUCH_EVERY_SECONDS:
            await repository.touch_session(pool, session.id, TOUCH_EVERY_SECONDS)
    return session


async def sign_out(pool: Pool, session_uid: str, session_id: int) -> None:
    await repository.revoke_session(pool, session_id)
    log.info("gateway.session.ended", session=session_uid)


async def set_password(
    conn: Connection, user: User, password: str, *, keep_session_id: int | None = None
) -> int:
    """Set `user`'s password; their other sessions end. How many ended."""
    encoded = await passwords.hash_password(check_password(password))
    await repository.set_password_hash(conn, user.id, encoded)
    await repository.delete_setup_code(conn, user.id)
    await repository.clear_failures(conn, user.name)
    return await repository.revoke_user_sessions(conn, user.id, keep_session_id)


async def verify_current_password(pool: Pool | Connection, user: User, password: str) -> bool:
    found = await repository.credentials(pool, user.name)
    return await passwords.verify_password(found.password_hash if found else None, password)


async def has_password(pool: Pool | Connection, user: User) -> bool:
    found = await repository.credentials(pool, user.name)
    return found is not None and found.password_hash is not None


async def get_session(pool: Pool | Connection, session_id: int) -> Session | None:
    return await repository.session_by_id(pool, session_id)


async def user_by_name(conn: Connection | Pool, name: str) -> User:
    found = await repository.credentials(conn, name)
    if found is None:
        raise NotFound(f"no user named {name!r}")
    return found.user


# --- the first admin ---------------------------------------------------------------------


async def ensure_first_admin_password(pool: Pool, settings: SessionSettings) -> str | None:
    """Until the first admin has a password: set it from settings, or issue a setup URL.

    Returns the setup URL issued (None when nothing was needed or the password was set).
    """
    async with pool.acquire() as conn, conn.transaction():
        await identity_repository.lock_identity(conn)
        try:
            admin = await identity.default_admin(conn)
        except NotFound:
            return None
        found = await repository.credentials(conn, admin.user.name)
        if found is None or found.password_hash is not None:
            return None
        if settings.initial_admin_password is not None:
            await set_password(conn, admin.user, settings.initial_admin_password.get_secret_value())
            log.info("gateway.session.admin_password_set", user=admin.user.name)
            return None
        code = secrets.token_urlsafe(32)
        await repository.replace_setup_code(
            conn, admin.user.id, identity.hash_secret(code), settings.setup_code_hours * 3600
        )
        url = f"{settings.dashboard_url.rstrip('/')}/setup?code={code}"
        if settings.setup_url_file is not None:
            identity.write_secret_file(Path(settings.setup_url_file), url)
    log.warning(
        "gateway.session.admin_setup",
        user=admin.user.name,
        hint="the first admin has no password: open the setup URL once to set one",
        setup_url=url,
        setup_url_file=str(settings.setup_url_file) if settings.setup_url_file else None,
    )
    return url


async def redeem_setup_code(
    pool: Pool, settings: SessionSettings, code: str, password: str
) -> User:
    check_password(password)
    async with pool.acquire() as conn, conn.transaction():
        user_id = await repository.take_setup_code(conn, identity.hash_secret(code.strip()))
        if user_id is None:
            raise Unauthorized("this setup link is unknown, used or expired")
        user = await repository.user_by_id(conn, user_id)
        await set_password(conn, user, password)
    if settings.setup_url_file is not None:
        Path(settings.setup_url_file).unlink(missing_ok=True)  # noqa: ASYNC240 - one small file
    return user
