"""Identity's SQL: organizations, users, members and API tokens, and the rows' mappers.

Queries return identity's values (`models`), never driver records. Rows come back with
prefixed column names (`user_name`, `org_uid`, ...) so one mapper reads a user or an
organization out of any query that joins them. A duplicate insert answers None instead of
raising the driver's error, so the logic above decides what it means.
"""

# The f-strings below only splice in this module's constant column lists and WHERE
# fragments; every value travels as a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.gateway.identity.models import ApiToken, Member, Organization, Role, User
from shared.db import Connection, Pool

Row = asyncpg.Record

# --- identity --------------------------------------------------------------------------------
# Rows come back with prefixed column names (`user_name`, `org_uid`, ...) so one mapper in
# `identity` reads a user or an organization out of any query that joins them.

_USER = """u.id AS user_id, u.uid AS user_uid, u.name AS user_name, u.email AS user_email,
           u.first_name AS user_first_name, u.last_name AS user_last_name,
           u.created_at AS user_created_at, u.updated_at AS user_updated_at"""
_ORG = """o.id AS org_id, o.uid AS org_uid, o.name AS org_name, o.description AS org_description,
          o.created_at AS org_created_at, o.updated_at AS org_updated_at"""
_TOKEN = f"""t.id, t.uid, t.name, t.description, t.token_prefix, t.scopes, t.created_at,
             t.updated_at, t.expired_at, t.last_used_at, t.revoked_at,
             (t.expired_at IS NOT NULL AND t.expired_at <= now()) AS is_expired,
             m.role, {_USER}, {_ORG}
             FROM api_tokens t
             JOIN users u ON u.id = t.user_id
             JOIN organizations o ON o.id = t.organization_id
             LEFT JOIN members m
                    ON m.organization_id = t.organization_id AND m.user_id = t.user_id"""
_MEMBER = f"""m.role, m.created_at, m.updated_at, {_USER}, {_ORG}
              FROM members m
              JOIN users u ON u.id = m.user_id
              JOIN organizations o ON o.id = m.organization_id"""


async def lock_identity(conn: Connection) -> None:
    """Serialise bootstrap-like changes across replicas until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ekiben.gateway.identity'))")


async def has_users(conn: Connection | Pool) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"))


async def insert_organization(conn: Connection, name: str, description: str) -> Organization:
    row: Row | None = await conn.fetchrow(
        f"INSERT INTO organizations AS o (name, description) VALUES ($1, $2) RETURNING {_ORG}",
        name,
        description,
    )
    assert row is not None
    return _organization(row)


async def organizations(conn: Connection | Pool) -> list[Organization]:
    rows = await conn.fetch(f"SELECT {_ORG} FROM organizations o ORDER BY o.id")
    return [_organization(row) for row in rows]


async def insert_user(
    conn: Connection, name: str, email: str, first_name: str, last_name: str
) -> User | None:
    """The new user, or None when the name or the email is taken (see `taken_by`)."""
    try:
        # A savepoint, so a duplicate leaves the caller's transaction usable.
        async with conn.transaction():
            row: Row | None = await conn.fetchrow(
                f"""INSERT INTO users AS u (name, email, first_name, last_name)
                    VALUES ($1, $2, $3, $4) RETURNING {_USER}""",
                name,
                email,
                first_name,
                last_name,
            )
    except asyncpg.UniqueViolationError:
        return None
    assert row is not None
    return _user(row)


async def email_taken(conn: Connection | Pool, email: str) -> bool:
    return bool(
        email
        and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE email <> '' AND lower(email) = lower($1))",
            email,
        )
    )


async def users_by_name(conn: Connection | Pool, names: Sequence[str]) -> list[User]:
    rows = await conn.fetch(f"SELECT {_USER} FROM users u WHERE u.name = ANY($1::text[])", names)
    return [_user(row) for row in rows]


async def upsert_member(conn: Connection, organization_id: int, user_id: int, role: str) -> None:
    await conn.execute(
        """INSERT INTO members (organization_id, user_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (organization_id, user_id)
           DO UPDATE SET role = EXCLUDED.role, updated_at = now()
           WHERE members.role <> EXCLUDED.role""",
        organization_id,
        user_id,
        role,
    )


async def count_admins(conn: Connection, organization_id: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM members WHERE organization_id = $1 AND role = 'admin'",
        organization_id,
    )
    return count


async def admins_with_live_tokens(
    conn: Connection, organization_id: int, scopes: Sequence[str]
) -> int:
    """Admins of the organization holding an unrevoked, unexpired token with one of `scopes`."""
    count: int = await conn.fetchval(
        """SELECT count(DISTINCT m.user_id) FROM members m
           JOIN api_tokens t ON t.organization_id = m.organization_id AND t.user_id = m.user_id
           WHERE m.organization_id = $1 AND m.role = 'admin' AND t.revoked_at IS NULL
             AND (t.expired_at IS NULL OR t.expired_at > now()) AND t.scopes && $2::text[]""",
        organization_id,
        list(scopes),
    )
    return count


async def members(
    conn: Connection | Pool,
    organization_id: int,
    *,
    start: int = 0,
    count: int | None = None,
    search: str | None = None,
    names: Sequence[str] | None = None,
) -> tuple[int, list[Member]]:
    """The organization's members (oldest first) and how many match in all."""
    where = """m.organization_id = $1
               AND ($2::text IS NULL OR strpos(u.name, $2) > 0 OR strpos(lower(u.email), $2) > 0)
               AND ($3::text[] IS NULL OR u.name = ANY($3::text[]))"""
    search = search.lower() if search else None
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM members m JOIN users u ON u.id = m.user_id WHERE {where}",
        organization_id,
        search,
        names,
    )
    rows = await conn.fetch(
        f"SELECT {_MEMBER} WHERE {where} ORDER BY m.created_at, u.id OFFSET $4 LIMIT $5",
        organization_id,
        search,
        names,
        start,
        count,
    )
    return total, [_member(row) for row in rows]


async def first_admin(conn: Connection | Pool, organization_id: int) -> Member | None:
    row = await conn.fetchrow(
        f"""SELECT {_MEMBER} WHERE m.organization_id = $1 AND m.role = 'admin'
            ORDER BY u.id LIMIT 1""",
        organization_id,
    )
    return _member(row) if row is not None else None


async def insert_token(
    conn: Connection,
    *,
    organization_id: int,
    user_id: int,
    name: str,
    description: str,
    token_hash: bytes,
    token_prefix: str,
    scopes: Sequence[str],
    expired_at: datetime | None,
) -> int | None:
    """The new token's id, or None when the user has a live token of that name."""
    try:
        # A savepoint, so a duplicate name leaves the caller's transaction usable.
        async with conn.transaction():
            token_id: int = await conn.fetchval(
                """INSERT INTO api_tokens (organization_id, user_id, name, description,
                                           token_hash, token_prefix, scopes, expired_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
                organization_id,
                user_id,
                name,
                description,
                token_hash,
                token_prefix,
                list(scopes),
                expired_at,
            )
    except asyncpg.UniqueViolationError:
        return None
    return token_id


def _token_or_none(row: Row | None) -> ApiToken | None:
    return _token(row) if row is not None else None


async def token_by_id(conn: Connection | Pool, token_id: int) -> ApiToken | None:
    return _token_or_none(await conn.fetchrow(f"SELECT {_TOKEN} WHERE t.id = $1", token_id))


async def token_by_hash(conn: Connection | Pool, token_hash: bytes) -> ApiToken | None:
    row = await conn.fetchrow(f"SELECT {_TOKEN} WHERE t.token_hash = $1", token_hash)
    return _token_or_none(row)


async def live_token_by_uid(
    conn: Connection | Pool, organization_id: int, uid: str
) -> ApiToken | None:
    row = await conn.fetchrow(
        f"SELECT {_TOKEN} WHERE t.organization_id = $1 AND t.uid = $2 AND t.revoked_at IS NULL",
        organization_id,
        uid,
    )
    return _token_or_none(row)


async def live_tokens(
    conn: Connection | Pool,
    organization_id: int,
    user_id: int,
    *,
    start: int,
    count: int,
    search: str | None,
) -> tuple[int, list[ApiToken]]:
    """A user's unrevoked tokens in an organization, newest first, and how many match."""
    where = """t.organization_id = $1 AND t.user_id = $2 AND t.revoked_at IS NULL
               AND ($3::text IS NULL OR strpos(lower(t.name), $3) > 0)"""
    search = search.lower() if search else None
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM api_tokens t WHERE {where}",
        organization_id,
        user_id,
        search,
    )
    rows = await conn.fetch(
        f"SELECT {_TOKEN} WHERE {where} ORDER BY t.id DESC OFFSET $4 LIMIT $5",
        organization_id,
        user_id,
        search,
        start,
        count,
    )
    return total, [_token(row) for row in rows]


async def revoke_token(conn: Connection, token_id: int) -> bool:
    """Stamp `revoked_at` once; False when it was already revoked."""
    revoked = await conn.fetchval(
        """UPDATE api_tokens SET revoked_at = now(), updated_at = now()
           WHERE id = $1 AND revoked_at IS NULL RETURNING true""",
        token_id,
    )
    return bool(revoked)


async def touch_token(conn: Connection | Pool, token_id: int, min_interval_seconds: float) -> bool:
    """Record a use, unless one was recorded less than `min_interval_seconds` ago.

    The guard in the WHERE clause keeps replicas that race on the same token to one write.
    """
    touched = await conn.fetchval(
        """UPDATE api_tokens SET last_used_at = now()
           WHERE id = $1 AND (last_used_at IS NULL
                              OR last_used_at < now() - make_interval(secs => $2))
           RETURNING true""",
        token_id,
        min_interval_seconds,
    )
    return bool(touched)


def _organization(row: Row) -> Organization:
    return Organization(
        id=row["org_id"],
        uid=row["org_uid"],
        name=row["org_name"],
        description=row["org_description"],
        created_at=row["org_created_at"],
        updated_at=row["org_updated_at"],
    )


def _user(row: Row) -> User:
    return User(
        id=row["user_id"],
        uid=row["user_uid"],
        name=row["user_name"],
        email=row["user_email"],
        first_name=row["user_first_name"],
        last_name=row["user_last_name"],
        created_at=row["user_created_at"],
        updated_at=row["user_updated_at"],
    )


def _member(row: Row) -> Member:
    return Member(
        user=_user(row),
        organization=_organization(row),
        role=Role(row["role"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _token(row: Row) -> ApiToken:
    return ApiToken(
        id=row["id"],
        uid=row["uid"],
        name=row["name"],
        description=row["description"],
        prefix=row["token_prefix"],
        scopes=tuple(row["scopes"]),
        user=_user(row),
        organization=_organization(row),
        role=Role(row["role"]) if row["role"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expired_at=row["expired_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        is_expired=row["is_expired"],
    )


# Public names for the column lists and mappers, for the sessions feature's queries that
# join users and organizations the same way.
USER_COLUMNS = _USER
ORGANIZATION_COLUMNS = _ORG
user_from_row = _user
organization_from_row = _organization
