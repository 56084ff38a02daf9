"""What every feature's JSON answers share, as the bentoml client and Yatai define them.

Every object the client decodes builds on `ResourceSchema` (uid, name, resource_type,
timestamps, labels): each of those keys must be present, `null` only where a timestamp
may be absent, `labels` always a list. Datetimes leave as RFC 3339 strings with a
timezone (the client crashes on some naive ones); the `AwareDatetime` fields refuse a naive
value here rather than let one out. Lists travel in the envelope `{start, count, total,
items}`.

Paging has one parser, `paging(default_count)`: query parameters arrive as empty strings
when the client has no value (`count=`), so they are read as text, `""` is "not given",
and anything out of range (a negative start, a start beyond `MAX_START`, a count above
`MAX_PAGE_SIZE`) is a 422 that says so.

See ../shared/docs/bentoml-client-protocol.md §1-§2 and §10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, Field

from shared.errors import InvalidInput

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000
# Far beyond any real listing, and far below what a 64-bit OFFSET can hold.
MAX_START = 10**9


def rfc3339(value: datetime) -> str:
    """`2025-01-01T12:00:00.123456Z`: UTC, with the zone the client needs."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class LabelSchema(BaseModel):
    key: str
    value: str


class ResourceSchema(BaseModel):
    uid: str
    created_at: AwareDatetime
    updated_at: AwareDatetime | None
    deleted_at: AwareDatetime | None
    name: str
    resource_type: str
    labels: list[LabelSchema] = Field(default_factory=list)


class ListSchema(BaseModel, Generic[T]):
    start: int
    count: int
    total: int
    items: list[T]


def list_schema(items: list[T], *, start: int, count: int, total: int) -> ListSchema[T]:
    return ListSchema[T](start=start, count=count, total=total, items=items)


# --- paging -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    start: int
    count: int
    search: str | None


def _int_param(name: str, raw: str, default: int, low: int, high: int) -> int:
    raw = raw.strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low} and {high}, got {raw[:40]}")
    return value


def parse_page(start: str, count: str, search: str, *, default_count: int) -> Page:
    return Page(
        start=_int_param("start", start, 0, 0, MAX_START),
        count=_int_param("count", count, default_count, 1, MAX_PAGE_SIZE),
        search=search.strip() or None,
    )


def paging(default_count: int = DEFAULT_PAGE_SIZE) -> Callable[..., Page]:
    """A FastAPI dependency: `?start=&count=&search=` as the client sends them."""

    # Plain defaults, not `Annotated`: the annotations are strings (postponed evaluation)
    # and could not see `default_count`.
    def page_params(
        start: str = Query("", description="Offset of the first item; empty: 0."),
        count: str = Query("", description=f"Items per page; empty: {default_count}."),
        search: str = Query("", description="Only items whose name contains this."),
    ) -> Page:
        return parse_page(start, count, search, default_count=default_count)

    return page_params
