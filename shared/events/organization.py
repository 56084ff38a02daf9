"""The organization an event belongs to: the tenancy boundary of every subscription.

Every event names the resource it is about in its data, and that resource names its
organization: `data.artifact` (bento and model events), `data.deployment` (deployment
events, which also carry the bento they run) or `data.bento` (build events). The first of
these fields, in that order, decides. `ORGANIZATION_FIELD` is read off the models at
import; an event type whose data has none of them is left out of it, fails the unit test
over `EVENT_TYPES`, and is never sent to any subscriber (`organization_of` raises).
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.events.envelope import Event
from shared.events.types import EVENT_TYPES

# Where to look, in order: the resource the event is about comes first.
_CANDIDATES = ("artifact", "deployment", "bento")


class NoOrganizationError(TypeError):
    """An event type whose data names no organization: it cannot be sent to anyone."""


def _organization_field(model: type[Event]) -> str:
    data = model.model_fields["data"].annotation
    if isinstance(data, type) and issubclass(data, BaseModel):
        for name in _CANDIDATES:
            field = data.model_fields.get(name)
            ref = field.annotation if field is not None else None
            if (
                isinstance(ref, type)
                and issubclass(ref, BaseModel)
                and "organization" in ref.model_fields
            ):
                return name
    raise NoOrganizationError(
        f"event type {model.event_type!r}: its data must carry an organization in one of"
        f" {', '.join(_CANDIDATES)} (a reference with an `organization` field)"
    )


def _fields() -> dict[str, str]:
    found = {}
    for event_type, model in EVENT_TYPES.items():
        try:
            found[event_type] = _organization_field(model)
        except NoOrganizationError:
            continue  # the unit test names it; organization_of refuses it
    return found


# Event type -> the data field whose `organization` the event belongs to.
ORGANIZATION_FIELD: dict[str, str] = _fields()


def organization_of(event: Event) -> str:
    """The organization's name of `event` (raises `NoOrganizationError` for an unknown type)."""
    field = ORGANIZATION_FIELD.get(event.type)
    if field is None:
        model = EVENT_TYPES.get(event.type)
        if model is not None:
            _organization_field(model)  # raises with the reason
        raise NoOrganizationError(f"unknown event type {event.type!r}")
    organization: str = getattr(getattr(event.data, field), "organization")  # noqa: B009
    return organization
