"""Sessions' SQL: passwords, sessions, failed sign-ins, setup codes."""

# ruff: noqa: S608 - the f-strings splice in this module's constant column lists only

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.gateway.identity.models import FULL_ACCESS_SCOPE, Organization, Role, User
from services.gateway.identity.repository import (
    ORGANIZATION_COLUMNS,
    USER_COLUMNS,
    organization_from_row,
    user_from_row,
)
from services.gateway.sessions.models import Session
from shared.db import Connection, Pool


@dataclass(frozen=True)
class Credentials:
    user: User
    password_hash: str | None


async def credentials(conn: Connection | Pool, username: str) -> Credentials | None:
    row = await conn.fetchrow(
        f"SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.name = $1", username
    )
    if row is None:
        return None
    return Credentials(user=user_from_row(row), password_hash=row["password_hash"])


async def user_by_id(conn: Connection | Pool, user_id: int) -> User:
    row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1", user_id)
    assert row is not None
    return user_from_row(row)


async def set_password_hash(conn: Connection | Pool, user_id: int, password_hash: str) -> None:
    await conn.execute(
        """UPDATE users SET password_hash = $2, password_set_at = now(), updated_at = now()
           WHERE id = $1""",
        user_id,
        password_hash,
    )


async def memberships(conn: Connection | Pool, user_id: int) -> list[tuple[Organization, Role]]:
    """The user's organizations with their role, oldest membership first."""
    rows = await conn.fetch(
        f"""SELECT m.role, {ORGANIZATION_COLUMNS} FROM members m
            JOIN organizations o ON o.id = m.organization_id
            WHERE m.user_id = $1 ORDER BY m.created_at, o.id""",
        user_id,
    )
    return [(organization_from_row(row), Role(row["role"])) for row in rows]


async def insert_session(
    conn: Connection | Pool,
    *,
    secret_hash: bytes,
    organization_id: int,
    user_id: int,
    token_id: int | None,
    method: str,
    user_agent: str,
    lifetime_seconds: float,
) -> int:
    session_id: int = await conn.fetchval(
        """INSERT INTO sessions (secret_hash, organization_id, user_id, token_id, method,
                                 user_agent, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) RETURNING id""",
        secret_hash,
        organization_id,
        user_id,
        token_id,
        method,
        user_agent[:512],
        lifetime_seconds,
    )
    return session_id


_SESSION = f"""s.id, s.uid, s.method, s.created_at, s.expires_at, s.last_seen_at, m.role,
               t.uid AS token_uid, t.name AS token_name, t.scopes AS token_scopes,
               {USER_COLUMNS}, {ORGANIZATION_COLUMNS}
               FROM sessions s
               JOIN users u ON u.id = s.user_id
               JOIN organizations o ON o.id = s.organization_id
               LEFT JOIN members m
                      ON m.organization_id = s.organization_id AND m.user_id = s.user_id
               LEFT JOIN api_tokens t ON t.id = s.token_id"""
# A live session: not signed out, not past its lifetime or idle limit, and its token (if
# it was signed in with one) neither revoked nor expired.
_LIVE = """s.revoked_at IS NULL AND s.expires_at > now()
           AND s.last_seen_at > now() - make_interval(secs => $2)
           AND (s.token_id IS NULL
                OR (t.revoked_at IS NULL AND (t.expired_at IS NULL OR t.expired_at > now())))"""


async def live_session_by_hash(
    conn: Connection | Pool, secret_hash: bytes, idle_seconds: float
) -> Session | None:
    row = await conn.fetchrow(
        f"SELECT {_SESSION} WHERE s.secret_hash = $1 AND {_LIVE}", secret_hash, idle_seconds
    )
    return _session(row) if row is not None else None


async def session_by_id(conn: Connection | Pool, session_id: int) -> Session | None:
    row = await conn.fetchrow(f"SELECT {_SESSION} WHERE s.id = $1", session_id)
    return _session(row) if row is not None else None


async def touch_session(conn: Connection | Pool, session_id: int, every_seconds: float) -> None:
    await conn.execute(
        """UPDATE sessions SET last_seen_at = now()
           WHERE id = $1 AND last_seen_at < now() - make_interval(secs => $2)""",
        session_id,
        every_seconds,
    )


async def revoke_session(conn: Connection | Pool, session_id: int) -> bool:
    return bool(
        await conn.fetchval(
            """UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
               RETURNING true""",
            session_id,
        )
    )


async def revoke_user_sessions(
    conn: Connection | Pool, user_id: int, keep_session_id: int | None
) -> int:
    """Sign a user out everywhere (but `keep_session_id`); how many sessions ended."""
    ended = await conn.fetch(
        """UPDATE sessions SET revoked_at = now()
           WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2 RETURNING id""",
        user_id,
        keep_session_id,
    )
    return len(ended)


async def record_failure(conn: Connection | Pool, username: str, keep_seconds: float) -> None:
    await conn.execute(
        """WITH old AS (DELETE FROM login_failures
                        WHERE username = $1 AND at < now() - make_interval(secs => $2))
           INSERT INTO login_failures (username) VALUES ($1)""",
        username,
        keep_seconds,
    )


async def throttled_until(
    conn: Connection | Pool, username: str, window_seconds: float, max_failures: int
) -> datetime | None:
    """When `username` may try again, if `max_failures` failed within the window; else None.

    The `max_failures`-th newest failure in the window is the one whose ageing out brings
    the count below the limit.
    """
    at: datetime | None = await conn.fetchval(
        """SELECT at + make_interval(secs => $2) FROM login_failures
           WHERE username = $1 AND at > now() - make_interval(secs => $2)
           ORDER BY at DESC OFFSET $3 - 1 LIMIT 1""",
        username,
        window_seconds,
        max_failures,
    )
    return at


async def clear_failures(conn: Connection | Pool, username: str) -> None:
    await conn.execute("DELETE FROM login_failures WHERE username = $1", username)


async def replace_setup_code(
    conn: Connection | Pool, user_id: int, secret_hash: bytes, lifetime_seconds: float
) -> None:
    await conn.execute(
        """INSERT INTO password_setups (user_id, secret_hash, expires_at)
           VALUES ($1, $2, now() + make_interval(secs => $3))
           ON CONFLICT (user_id) DO UPDATE
           SET secret_hash = EXCLUDED.secret_hash, created_at = now(),
               expires_at = EXCLUDED.expires_at""",
        user_id,
        secret_hash,
        lifetime_seconds,
    )


async def take_setup_code(conn: Connection, secret_hash: bytes) -> int | None:
    """The user id of a live setup code, which is used up; None when unknown or expired."""
    user_id: int | None = await conn.fetchval(
        """DELETE FROM password_setups WHERE secret_hash = $1 AND expires_at > now()
           RETURNING user_id""",
        secret_hash,
    )
    return user_id


async def delete_setup_code(conn: Connection | Pool, user_id: int) -> None:
    await conn.execute("DELETE FROM password_setups WHERE user_id = $1", user_id)


def _session(row: asyncpg.Record) -> Session:
    from_token = row["token_uid"] is not None
    return Session(
        id=row["id"],
        uid=row["uid"],
        method=row["method"],
        user=user_from_row(row),
        organization=organization_from_row(row),
        role=Role(row["role"]) if row["role"] else None,
        scopes=tuple(row["token_scopes"]) if from_token else (FULL_ACCESS_SCOPE,),
        token_uid=row["token_uid"],
        token_name=row["token_name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_seen_at=row["last_seen_at"],
    )
