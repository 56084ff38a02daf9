"""Identity's values: organizations, users, their roles, and the API tokens that stand for them.

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

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

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

# The scopes that let a token administer its organization (tokens, members): what an
# organization must keep at least one live token of, held by an admin (`identity.service`).
ADMIN_SCOPES = frozenset({FULL_ACCESS_SCOPE, "operate_organization"})

NAME_PATTERN = re.compile(r"^[a-z0-9]([-._a-z0-9]{0,61}[a-z0-9])?$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")


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
