"""Identity's logic: bootstrap, members and users, API tokens (see `models` for the concepts).

SQL lives in `repository`; changes are recorded in the audit log in the same transaction
(`services.gateway.audit.service.record`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from services.gateway.audit import service as audit
from services.gateway.identity import repository
from services.gateway.identity.models import (
    ADMIN_SCOPES,
    BOOTSTRAP_EMAIL,
    BOOTSTRAP_TOKEN,
    BOOTSTRAP_USER,
    DEFAULT_ORGANIZATION,
    DISPLAY_PREFIX_LENGTH,
    EMAIL_PATTERN,
    FULL_ACCESS_SCOPE,
    NAME_PATTERN,
    SCOPES,
    SYSTEM_BOOTSTRAP,
    TOKEN_LENGTH,
    TOKEN_PREFIX,
    ApiToken,
    IssuedToken,
    Member,
    Organization,
    Role,
    User,
)
from shared.db import Connection, Pool
from shared.errors import Conflict, InvalidInput, NotFound
from shared.logging import get_logger

log = get_logger(__name__)


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def looks_like_token(secret: str) -> bool:
    """A cheap shape check, so garbage never reaches the database."""
    return len(secret) == TOKEN_LENGTH and secret.startswith(TOKEN_PREFIX)


# --- validation ---------------------------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.match(name):
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
    org = await repository.insert_organization(conn, DEFAULT_ORGANIZATION, "The first organization")
    user = await repository.insert_user(conn, BOOTSTRAP_USER, BOOTSTRAP_EMAIL, "", "")
    assert user is not None  # there were no users at all
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
        await audit.record(
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
    orgs = await repository.organizations(conn)
    chosen = [o for o in orgs if o.name == DEFAULT_ORGANIZATION] or (orgs if len(orgs) == 1 else [])
    if not chosen:
        names = ", ".join(o.name for o in orgs) or "none"
        raise NotFound(f"no organization named {DEFAULT_ORGANIZATION!r} (organizations: {names})")
    admin = await repository.first_admin(conn, chosen[0].id)
    if admin is None:
        raise NotFound(f"organization {chosen[0].name!r} has no admin")
    return admin


async def list_members(
    conn: Connection | Pool,
    organization: Organization,
    *,
    start: int = 0,
    count: int | None = None,
    search: str | None = None,
) -> tuple[int, list[Member]]:
    return await repository.members(conn, organization.id, start=start, count=count, search=search)


async def add_members(
    conn: Connection, organization: Organization, usernames: Sequence[str], role: Role
) -> list[Member]:
    """Add users to the organization with `role` (or change their role); all or nothing.

    Call inside a transaction: an unknown name, or a change that would take the
    organization's last way in (`keeping_a_way_in`), raises and nothing is kept.
    """
    names = list(dict.fromkeys(usernames))
    if not names:
        raise InvalidInput("usernames: give at least one user name")
    found = {user.name: user for user in await repository.users_by_name(conn, names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise InvalidInput(f"unknown user(s): {', '.join(missing)}")

    async def change() -> None:
        for name in names:
            await repository.upsert_member(conn, organization.id, found[name].id, role.value)

    await keeping_a_way_in(conn, organization, f"making {', '.join(names)} {role.value}", change)
    _, members = await repository.members(conn, organization.id, names=names)
    return members


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
    if email and not EMAIL_PATTERN.match(email):
        raise InvalidInput(f"invalid email {email!r}")
    user = await repository.insert_user(conn, name, email, first_name, last_name)
    if user is None:
        taken = await repository.email_taken(conn, email)
        what = f"email {email!r}" if taken else f"name {name!r}"
        raise Conflict(
            f"a user with {what} already exists; add an existing user with POST /api/v1/members"
        )
    await repository.upsert_member(conn, organization.id, user.id, role.value)
    _, members = await repository.members(conn, organization.id, names=[name])
    return members[0]


async def users_by_name(conn: Connection | Pool, names: Sequence[str]) -> dict[str, User]:
    """Users by name, e.g. to show who created a resource; unknown names are left out."""
    return {user.name: user for user in await repository.users_by_name(conn, names)}


async def member(conn: Connection | Pool, organization: Organization, name: str) -> Member:
    _, members = await repository.members(conn, organization.id, names=[name])
    if not members:
        raise NotFound(f"user {name!r} is not a member of organization {organization.name!r}")
    return members[0]


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
    if token_id is None:
        raise Conflict(
            f"user {user.name!r} already has an API token named {name!r}"
            f" in organization {organization.name!r}"
        )
    token = await repository.token_by_id(conn, token_id)
    assert token is not None
    return IssuedToken(token=token, secret=secret)


async def find_token(conn: Connection | Pool, secret: str) -> ApiToken | None:
    """The stored token whose hash matches `secret`, revoked or expired ones included."""
    if not looks_like_token(secret):
        return None
    return await repository.token_by_hash(conn, hash_secret(secret))


async def get_token(conn: Connection | Pool, organization: Organization, uid: str) -> ApiToken:
    token = await repository.live_token_by_uid(conn, organization.id, uid)
    if token is None:
        raise NotFound(f"API token with UID {uid} not found")
    return token


async def list_tokens(
    conn: Connection | Pool,
    organization: Organization,
    user: User,
    *,
    start: int,
    count: int,
    search: str | None = None,
) -> tuple[int, list[ApiToken]]:
    return await repository.live_tokens(
        conn, organization.id, user.id, start=start, count=count, search=search
    )


async def revoke_token(conn: Connection, token: ApiToken) -> ApiToken:
    """Revoke `token` (it keeps its row, so its holder learns it was revoked).

    Call inside a transaction: revoking the organization's last way in is refused.
    """

    async def change() -> None:
        if not await repository.revoke_token(conn, token.id):
            raise NotFound(f"API token with UID {token.uid} not found")

    await keeping_a_way_in(conn, token.organization, f"revoking API token {token.name!r}", change)
    revoked = await repository.token_by_id(conn, token.id)
    assert revoked is not None
    return revoked


async def keeping_a_way_in(
    conn: Connection,
    organization: Organization,
    what: str,
    change: Callable[[], Awaitable[None]],
) -> None:
    """Make `change` in the caller's transaction, refused if it leaves the organization
    without an admin, or takes its last way in: an admin holding a live (unrevoked,
    unexpired) token able to administer it.

    Without one, nobody could issue tokens or change roles through the API again: the
    organization would be locked out. The one rule for revoking tokens and changing
    roles. Changes that take the way in are serialised (`repository.lock_identity`), so two
    made at once cannot each count on the way in the other removes.
    """
    await repository.lock_identity(conn)
    scopes = sorted(ADMIN_SCOPES)
    before = await repository.admins_with_live_tokens(conn, organization.id, scopes)
    await change()
    if await repository.count_admins(conn, organization.id) == 0:
        raise Conflict(f"{what}: organization {organization.name!r} must keep at least one admin")
    if before == 0 or await repository.admins_with_live_tokens(conn, organization.id, scopes):
        return
    raise Conflict(
        f"{what} would leave organization {organization.name!r} with no way in: it must"
        " keep at least one admin who holds a live (unrevoked, unexpired) API token with the"
        f" {' or '.join(scopes)} scope. Issue another admin such a token first"
        " (or use `ekiben token create`)"
    )


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
