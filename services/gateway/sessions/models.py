"""Sessions' values.

A **session** is what signing in makes: a bearer secret (`eks_` and 43 URL-safe
characters, 256 random bits) that stands for a user in one organization until it expires,
is signed out, or (signed in with an API token) its token is revoked or expires. It is
sent in the `X-Ekiben-Session` header. Like an API token, only its SHA-256 is stored.

A session is never accepted from a cookie by the gateway, so no other site can make a
browser use one: the dashboard keeps it in its own HttpOnly cookie and sends it as a
header, behind its own CSRF check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.gateway.identity.models import TOKEN_LENGTH, Organization, Role, User

SESSION_HEADER = "X-Ekiben-Session"
SESSION_PREFIX = "eks_"
SESSION_LENGTH = TOKEN_LENGTH
# The name audit records and token checks see for a session signed in with a password.
PASSWORD_SESSION_NAME = "dashboard session"  # noqa: S105 - a name
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

Method = Literal["password", "api_token"]


@dataclass(frozen=True)
class Session:
    id: int
    uid: str
    method: Method
    user: User
    organization: Organization
    role: Role | None  # None once the user is no longer a member
    scopes: tuple[str, ...]
    token_uid: str | None
    token_name: str | None
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class IssuedSession:
    session: Session
    secret: str
