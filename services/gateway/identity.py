"""Identity: organizations, users, their roles, and the API tokens that stand for them.

An **organization** is the tenancy boundary: repositories, deployments, tokens and audit
records belong to one. A **user** is global and joins organizations as a **member** with a
role: `guest` reads, `developer` also changes things, `admin` also manages people and
tokens. An **API token** belongs to one user in one organization, so a request carrying it
acts as that user, in that organization, with at most that user's role.

A token is `ekb_` followed by 43 URL-safe characters (256 random bits). It is shown once,
when issued; the database keeps its SHA-256 and a short prefix for display. Verifying a
token hashes it and looks the hash up, so no stored secret is ever compared byte by byte
with what a caller sent. A fast hash is the right tool here: the secret is random and long,
so there is nothing to brute-force that a slow password hash would protect.

Scopes narrow what a token may do below its user's role (Yatai's vocabulary): `api` is
everything the role allows; `read_*`, `write_*`, `operate_*` on `organization` or
`cluster` grant reading, changing, and administering.

The first start of a gateway creates organization `default`, user `admin` (role admin) and
a token `bootstrap`, under an advisory lock so replicas starting together make one of each.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg

from services.gateway import repository
from shared.db import Connection, Pool
from shared.errors import Conflict, InvalidInput, NotFound
from shared.logging import get_logger

log = get_logger(__name__)

TOKEN_PREFIX = "ekb_"  # noqa: S105 - a marker, not a secret
# token_urlsafe(32) yields 43 characters for 32 random bytes.
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
# What lists show of a token: the marker and 6 random characters (36 of its 256 bits).
DISPLAY_PREFIX_LENGTH = len(TOKEN_PREFIX) + 6

DEFAULT_ORGANIZATION = "default"
BOOTSTRAP_USER = "admin"
BOOTSTRAP_EMAIL = "admin@localhost"
BOOTSTRAP_TOKEN = "bootstrap"  # noqa: S105 - the name of a token
# Actor names of changes that no user made through the API.
SYSTEM_BOOTSTRAP = "system:bootstrap"
SYSTEM_CLI = "system:cli"

FULL_ACCESS_SCOPE = "api"
SCOPES = frozenset(
    {
        FULL_ACCESS_SCOPE,
        *(
            f"{op}_{res}"
            for op in ("read", "write", "operate")
            for res in ("organization", "cluster")
        ),
    }
)

_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class Role(StrEnum):
    GUEST = "guest"
    DEVELOPER = "developer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: Role) -> bool:
        """Roles nest: an admin may do what a developer may, who may do what a guest may."""
        return self.rank >= required.rank


_RANK = {Role.GUEST: 0, Role.DEVELOPER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Organization:
    id: int  # internal key: never leaves the gateway
    uid: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True)
class User:
    id: int  # internal key: never leaves the gateway
    uid: str
    name: str
    email: str
    first_name: str
    last_name: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True)
class Member:
    user: User
    organization: Organization
    role: Role
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True)
class ApiToken:
    """A token as stored: everything but the secret, which only `IssuedToken` carries."""

    id: int
    uid: str
    name: str
    description: str
    prefix: str
    scopes: tuple[str, ...]
    user: User
    organization: Organization
    # The user's role in the token's organization now; None once they are no longer a member.
    role: Role | None
    created_at: datetime
    updated_at: datetime | None
    expired_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    is_expired: bool


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    organization: str | None
    actor: str
    token_uid: str | None
    token_name: str | None
    request_id: str | None
    action: str
    resource_type: str
    resource: str
    details: dict[str, Any]


# --- rows to values ---------------------------------------------------------------------------


def _organization(row: asyncpg.Record) -> Organization:
    return Organization(
        id=row["org_id"],
        uid=row["org_uid"],
        name=row["org_name"],
        description=row["org_description"],
        created_at=row["org_created_at"],
        updated_at=row["org_updated_at"],
    )


def _user(row: asyncpg.Record) -> User:
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


def _member(row: asyncpg.Record) -> Member:
    return Member(
        user=_user(row),
        organization=_organization(row),
        role=Role(row["role"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _token(row: asyncpg.Record) -> ApiToken:
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


def _audit(row: asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        at=row["at"],
        organization=row["org_name"],
        actor=row["actor_name"],
        token_uid=row["token_uid"],
        token_name=row["token_name"],
        request_id=row["request_id"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource=row["resource"],
        details=row["details"],
    )


# --- token secrets ----------------------------------------------------------------------------


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def looks_like_token(secret: str) -> bool:
    """A cheap shape check, so garbage never reaches the database."""
    return len(secret) == TOKEN_LENGTH and secret.startswith(TOKEN_PREFIX)


# --- validation ---------------------------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: lowercase letters, digits, '-', '.', '_',"
            " starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def check_scopes(scopes: Iterable[str] | None) -> tuple[str, ...]:
    """Known scopes, deduplicated in order; none given means full access (`api`)."""
    chosen = tuple(dict.fromkeys(s.strip() for s in scopes or () if s.strip()))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise InvalidInput(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}"
        )
    return chosen or (FULL_ACCESS_SCOPE,)


def check_expiry(expired_at: datetime | None, *, now: datetime | None = None) -> datetime | None:
    """An expiry in the future, timezone-aware. A naive value is UTC: the bentoml client
    sends a bare local time, and the server cannot know the client's zone."""
    if expired_at is None:
        return None
    if expired_at.tzinfo is None:
        expired_at = expired_at.replace(tzinfo=UTC)
    if expired_at <= (now or datetime.now(UTC)):
        raise InvalidInput(f"expired_at {expired_at.isoformat()} is in the past")
    return expired_at


# --- organizations, users, members --------------------------------------------------------------


async def ensure_admin(conn: Connection) -> tuple[Organization, User] | None:
    """Create organization `default` and its admin when there is no user at all.

    Runs inside the caller's transaction, after `repository.lock_identity`; returns what
    it created, or None when users existed already.
    """
    if await repository.has_users(conn):
        return None
    org = _organization(
        await repository.insert_organization(conn, DEFAULT_ORGANIZATION, "The first organization")
    )
    user = _user(await repository.insert_user(conn, BOOTSTRAP_USER, BOOTSTRAP_EMAIL, "", ""))
    await repository.upsert_member(conn, org.id, user.id, Role.ADMIN.value)
    return org, user


async def bootstrap(pool: Pool, token_file: Path | None) -> bool:
    """First start: an admin and a token, written to `token_file` (mode 0600); see the module.

    The file is written before the transaction commits, so a committed bootstrap always
    left its token somewhere; a failed write rolls everything back and the start fails.
    Returns whether this call did the bootstrap.
    """
    async with pool.acquire() as conn, conn.transaction():
        await repository.lock_identity(conn)
        created = await ensure_admin(conn)
        if created is None:
            return False
        org, user = created
        issued = await issue_token(
            conn, organization=org, user=user, name=BOOTSTRAP_TOKEN, description="first start"
        )
        await record(
            conn,
            organization=org,
            actor_name=SYSTEM_BOOTSTRAP,
            action="organization.bootstrapped",
            resource_type="organization",
            resource=org.name,
            details={"admin": user.name, "token_uid": issued.token.uid},
        )
        if token_file is not None:
            write_secret_file(token_file, issued.secret)
    log.info(
        "gateway.identity.bootstrapped",
        organization=org.name,
        admin=user.name,
        token_file=str(token_file) if token_file else None,
        hint=None if token_file else "no token file set: use `ekiben token create`",
    )
    return True


def write_secret_file(path: Path, secret: str) -> None:
    """Replace `path` atomically with `secret`, readable by this account only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


async def default_admin(conn: Connection | Pool) -> Member:
    """The first admin of `default`, or of the only organization (what the CLI acts as)."""
    orgs = [_organization(row) for row in await repository.organizations(conn)]
    chosen = [o for o in orgs if o.name == DEFAULT_ORGANIZATION] or (orgs if len(orgs) == 1 else [])
    if not chosen:
        names = ", ".join(o.name for o in orgs) or "none"
        raise NotFound(f"no organization named {DEFAULT_ORGANIZATION!r} (organizations: {names})")
    row = await repository.first_admin(conn, chosen[0].id)
    if row is None:
        raise NotFound(f"organization {chosen[0].name!r} has no admin")
    return _member(row)


async def list_members(
    conn: Connection | Pool,
    organization: Organization,
    *,
    start: int = 0,
    count: int | None = None,
    search: str | None = None,
) -> tuple[int, list[Member]]:
    total, rows = await repository.members(
        conn, organization.id, start=start, count=count, search=search
    )
    return total, [_member(row) for row in rows]


async def add_members(
    conn: Connection, organization: Organization, usernames: Sequence[str], role: Role
) -> list[Member]:
    """Add users to the organization with `role` (or change their role); all or nothing.

    Call inside a transaction: an unknown name, or a change that would leave the
    organization without an admin, raises and nothing is kept.
    """
    names = list(dict.fromkeys(usernames))
    if not names:
        raise InvalidInput("usernames: give at least one user name")
    found = {row["user_name"]: _user(row) for row in await repository.users_by_name(conn, names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise InvalidInput(f"unknown user(s): {', '.join(missing)}")
    for name in names:
        await repository.upsert_member(conn, organization.id, found[name].id, role.value)
    if await repository.count_admins(conn, organization.id) == 0:
        raise Conflict(f"organization {organization.name!r} must keep at least one admin")
    _, rows = await repository.members(conn, organization.id, names=names)
    return [_member(row) for row in rows]


async def create_user(
    conn: Connection,
    organization: Organization,
    *,
    name: str,
    email: str,
    first_name: str,
    last_name: str,
    role: Role,
) -> Member:
    """A new user, member of `organization` with `role`. Call inside a transaction."""
    check_name("user", name)
    email = email.strip()
    if email and not _EMAIL.match(email):
        raise InvalidInput(f"invalid email {email!r}")
    try:
        # A savepoint, so a duplicate leaves the caller's transaction usable.
        async with conn.transaction():
            user = _user(await repository.insert_user(conn, name, email, first_name, last_name))
    except asyncpg.UniqueViolationError as exc:
        what = f"email {email!r}" if "email" in (exc.constraint_name or "") else f"name {name!r}"
        raise Conflict(
            f"a user with {what} already exists; add an existing user with POST /api/v1/members"
        ) from exc
    await repository.upsert_member(conn, organization.id, user.id, role.value)
    _, rows = await repository.members(conn, organization.id, names=[name])
    return _member(rows[0])


async def users_by_name(conn: Connection | Pool, names: Sequence[str]) -> dict[str, User]:
    """Users by name, e.g. to show who created a resource; unknown names are left out."""
    return {row["user_name"]: _user(row) for row in await repository.users_by_name(conn, names)}


async def member(conn: Connection | Pool, organization: Organization, name: str) -> Member:
    _, rows = await repository.members(conn, organization.id, names=[name])
    if not rows:
        raise NotFound(f"user {name!r} is not a member of organization {organization.name!r}")
    return _member(rows[0])


# --- tokens -------------------------------------------------------------------------------------


async def issue_token(
    conn: Connection,
    *,
    organization: Organization,
    user: User,
    name: str,
    description: str = "",
    scopes: Iterable[str] | None = None,
    expired_at: datetime | None = None,
) -> IssuedToken:
    """A new token for `user` in `organization`; the only moment its secret exists."""
    name = name.strip()
    if not name or len(name) > 128:
        raise InvalidInput("name: a token name has 1 to 128 characters")
    secret = new_secret()
    try:
        # A savepoint, so a duplicate name leaves the caller's transaction usable.
        async with conn.transaction():
            token_id = await repository.insert_token(
                conn,
                organization_id=organization.id,
                user_id=user.id,
                name=name,
                description=description,
                token_hash=hash_secret(secret),
                token_prefix=secret[:DISPLAY_PREFIX_LENGTH],
                scopes=check_scopes(scopes),
                expired_at=check_expiry(expired_at),
            )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            f"user {user.name!r} already has an API token named {name!r}"
            f" in organization {organization.name!r}"
        ) from exc
    row = await repository.token_by_id(conn, token_id)
    assert row is not None
    return IssuedToken(token=_token(row), secret=secret)


async def find_token(conn: Connection | Pool, secret: str) -> ApiToken | None:
    """The stored token whose hash matches `secret`, revoked or expired ones included."""
    if not looks_like_token(secret):
        return None
    row = await repository.token_by_hash(conn, hash_secret(secret))
    return _token(row) if row is not None else None


async def get_token(conn: Connection | Pool, organization: Organization, uid: str) -> ApiToken:
    row = await repository.live_token_by_uid(conn, organization.id, uid)
    if row is None:
        raise NotFound(f"API token with UID {uid} not found")
    return _token(row)


async def list_tokens(
    conn: Connection | Pool,
    organization: Organization,
    user: User,
    *,
    start: int,
    count: int,
    search: str | None = None,
) -> tuple[int, list[ApiToken]]:
    total, rows = await repository.live_tokens(
        conn, organization.id, user.id, start=start, count=count, search=search
    )
    return total, [_token(row) for row in rows]


async def revoke_token(conn: Connection, token: ApiToken) -> ApiToken:
    """Revoke `token` (it keeps its row, so its holder learns it was revoked)."""
    if not await repository.revoke_token(conn, token.id):
        raise NotFound(f"API token with UID {token.uid} not found")
    row = await repository.token_by_id(conn, token.id)
    assert row is not None
    return _token(row)


async def touch_token(conn: Connection | Pool, token: ApiToken, *, every_seconds: float) -> None:
    """Record that `token` was used, at most once per `every_seconds`.

    The caller has just read `last_used_at`, so a recent one costs no query at all.
    """
    now = datetime.now(UTC)
    if token.last_used_at is not None and (now - token.last_used_at).total_seconds() < (
        every_seconds
    ):
        return
    await repository.touch_token(conn, token.id, every_seconds)


# --- audit ---------------------------------------------------------------------------------------


async def record(
    conn: Connection | Pool,
    *,
    organization: Organization | None,
    actor_name: str,
    action: str,
    resource_type: str,
    resource: str,
    details: Mapping[str, Any] | None = None,
    actor: User | None = None,
    token_uid: str | None = None,
    token_name: str | None = None,
    request_id: str | None = None,
) -> int:
    """Write one audit record; pass the connection of the change to commit both together."""
    return await repository.insert_audit(
        conn,
        organization_id=organization.id if organization else None,
        actor_user_id=actor.id if actor else None,
        actor_name=actor_name,
        token_uid=token_uid,
        token_name=token_name,
        request_id=request_id,
        action=action,
        resource_type=resource_type,
        resource=resource,
        details=details or {},
    )


async def audit_records(
    conn: Connection | Pool,
    organization: Organization,
    *,
    start: int,
    count: int,
    action: str | None = None,
) -> tuple[int, list[AuditRecord]]:
    total, rows = await repository.audit_records(
        conn, organization.id, start=start, count=count, action=action
    )
    return total, [_audit(row) for row in rows]
