"""Which events a subscriber receives: its organization, its role, and its own filters.

One rule for the stream and for webhooks, decided on the server before anything is sent:

1. **organization**: an event goes only to subscribers of the organization it names
   (`shared.events.organization_of`); there is no way to ask for another's;
2. **role and scopes**: `may_read(principal, type)`. Every member reads lifecycle events,
   except `deployment.requested` and `deployment.updated`, which carry the deployment's
   spec (environment values included) and need the developer role. Scopes narrow a token
   as elsewhere: bento, model and build events are the organization's (`read_`, `write_`
   or `operate_organization`), deployment events the cluster's (`*_cluster`); `api` is all;
3. **the subscriber's own filters**: `types`, comma-separated, each an event type or a
   prefix ending in `*` (`deployment.*`, `build.c*`); `subject`, the resource, exact or a
   prefix ending in `*` (`bentos/default/iris:*`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.gateway.identity.auth import Principal
from services.gateway.identity.models import FULL_ACCESS_SCOPE, Role
from shared.errors import InvalidInput
from shared.events import EVENT_TYPES

MAX_PATTERNS = 50

# Types whose data a guest may not see (see the module docstring).
_READ_ROLE = {
    "deployment.requested": Role.DEVELOPER,
    "deployment.updated": Role.DEVELOPER,
}


def _scope_area(event_type: str) -> str:
    return "cluster" if event_type.startswith("deployment.") else "organization"


def may_read(principal: Principal, event_type: str) -> bool:
    """Whether the caller's role and token scopes let it read events of `event_type`."""
    if not principal.role.allows(_READ_ROLE.get(event_type, Role.GUEST)):
        return False
    if FULL_ACCESS_SCOPE in principal.scopes:
        return True
    area = _scope_area(event_type)
    return any(f"{op}_{area}" in principal.scopes for op in ("read", "write", "operate"))


def readable_types(principal: Principal) -> frozenset[str]:
    return frozenset(t for t in EVENT_TYPES if may_read(principal, t))


def parse_types(raw: str | Iterable[str] | None) -> tuple[str, ...]:
    """Type patterns, checked: each must name a known type or be a prefix ending in `*`."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    patterns = tuple(dict.fromkeys(p.strip() for p in items if p.strip()))
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInput(f"types: at most {MAX_PATTERNS} patterns")
    for pattern in patterns:
        if pattern.endswith("*"):
            if "*" in pattern[:-1]:
                raise InvalidInput(f"types: {pattern!r}: '*' may only end a pattern")
            if not any(t.startswith(pattern[:-1]) for t in EVENT_TYPES):
                raise InvalidInput(f"types: {pattern!r} matches no event type")
        elif pattern not in EVENT_TYPES:
            raise InvalidInput(
                f"types: unknown event type {pattern!r}; known: {', '.join(sorted(EVENT_TYPES))}"
            )
    return patterns


def matches(patterns: Iterable[str], value: str) -> bool:
    """True when `value` equals a pattern or starts with a `*` pattern's prefix; no
    patterns match everything."""
    any_pattern = False
    for pattern in patterns:
        any_pattern = True
        if pattern.endswith("*"):
            if value.startswith(pattern[:-1]):
                return True
        elif value == pattern:
            return True
    return not any_pattern


@dataclass(frozen=True)
class EventFilter:
    """What one subscriber receives (see the module docstring)."""

    organization: str
    readable: frozenset[str]
    types: tuple[str, ...] = ()
    subject: str | None = None

    @classmethod
    def for_principal(
        cls, principal: Principal, *, types: str = "", subject: str = ""
    ) -> EventFilter:
        subject = subject.strip()
        if len(subject) > 512:
            raise InvalidInput("subject: at most 512 characters")
        return cls(
            organization=principal.organization,
            readable=readable_types(principal),
            types=parse_types(types),
            subject=subject or None,
        )

    def accepts(self, organization: str, event_type: str, subject: str | None) -> bool:
        if organization != self.organization or event_type not in self.readable:
            return False
        if not matches(self.types, event_type):
            return False
        return self.subject is None or (subject is not None and matches((self.subject,), subject))
