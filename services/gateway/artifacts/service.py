"""The artifacts feature's logic: Yatai's listing mini-language, read into registry filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.gateway.schemas import parse_page
from shared.contracts import registry as reg
from shared.errors import InvalidInput

_SORTS: dict[str, reg.SortKey] = {
    "created_at": "created_at",
    "build_at": "build_at",
    "size": "size",
    "name": "name",
    "version": "version",
}


def parse_listing(q: str | None, search: str | None, sort: str | None) -> dict[str, Any]:
    """Yatai's `q` mini-language: `label:k=v`, `creator:name`, `sort:<key>-<asc|desc>`,
    `status:<upload status>`, and bare words (matched against names and versions); also
    `model:<name>:<version>`, the bentos that use a model version."""
    words: list[str] = [search] if search else []
    labels: list[reg.Label] = []
    options: dict[str, Any] = {}
    for term in (q or "").split():
        key, sep, value = term.partition(":")
        if not sep:
            words.append(term)
        elif key == "label":
            label_key, _, label_value = value.partition("=")
            labels.append(reg.Label(key=label_key, value=label_value))
        elif key == "creator":
            options["creator"] = value
        elif key == "status":
            options["upload_status"] = value
        elif key == "model":
            if value.count(":") != 1 or value.startswith(":") or value.endswith(":"):
                raise InvalidInput(f"model:{value}: expected model:<name>:<version>")
            options["uses_model"] = value
        elif key == "sort":
            sort = value
        else:
            raise InvalidInput(f"unknown filter {key!r} in q")
    if sort:
        field, _, direction = sort.partition("-")
        if field not in _SORTS or direction not in ("", "asc", "desc"):
            raise InvalidInput(f"unknown sort {sort!r}: one of {', '.join(_SORTS)} with -asc/-desc")
        options["sort"] = _SORTS[field]
        options["descending"] = direction != "asc"
    if words:
        options["search"] = " ".join(words)
    options["labels"] = labels
    return options


@dataclass(frozen=True)
class Listing:
    """The listing query parameters every list route takes (a FastAPI dependency)."""

    start: str | None = None
    count: str | None = None
    search: str | None = None
    q: str | None = None
    sort: str | None = None

    def command_fields(self, default_count: int) -> dict[str, Any]:
        """start, count and the filters, ready for a registry list command."""
        page = parse_page(self.start or "", self.count or "", "", default_count=default_count)
        filters = parse_listing(_blank(self.q), _blank(self.search), _blank(self.sort))
        return {"start": page.start, "count": page.count, **filters}


def _blank(value: str | None) -> str | None:
    """The client sends `?x=` for "not given"."""
    return value.strip() or None if value else None
