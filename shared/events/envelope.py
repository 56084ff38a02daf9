"""The CloudEvents 1.0 envelope and the mapping from event type to NATS subject."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

# One stream carries every lifecycle event; one more keeps the dead letters.
EVENT_STREAM = "EKIBEN_EVENTS"
EVENT_SUBJECT_PREFIX = "ekiben.events"
DLQ_STREAM = "EKIBEN_DLQ"
DLQ_SUBJECT_PREFIX = "ekiben.dlq"


def subject_for(event_type: str) -> str:
    """`bento.pushed` -> `ekiben.events.bento.pushed`."""
    return f"{EVENT_SUBJECT_PREFIX}.{event_type}"


def dlq_subject_for(consumer: str, event_type: str) -> str:
    """Where a consumer's poison messages go: `ekiben.dlq.<consumer>.<event type>`."""
    return f"{DLQ_SUBJECT_PREFIX}.{consumer}.{event_type}"


def new_event_id() -> str:
    """Time-ordered ids (UUIDv7) keep outbox rows and logs in a natural order."""
    return str(uuid.uuid7()) if hasattr(uuid, "uuid7") else _uuid7()


def _uuid7() -> str:
    # Python < 3.14 has no uuid.uuid7: 48 bits of milliseconds, version, 74 random bits.
    millis = int(datetime.now(UTC).timestamp() * 1000)
    rand = uuid.uuid4().int & ((1 << 76) - 1)
    value = (millis << 80) | (0x7 << 76) | rand
    value = (value & ~(0xC << 60)) | (0x8 << 60)  # RFC 4122 variant bits
    return str(uuid.UUID(int=value))


class Event(BaseModel):
    """Base of every event: the CloudEvents attributes. Subclasses fix `type` and `data`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_event_id, min_length=1, max_length=128)
    source: str = Field(
        min_length=1, description="URI-reference of the producer: /ekiben/<service>"
    )
    type: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = Field(
        default=None, description="The resource the event is about, e.g. bentos/default/iris:v1"
    )
    datacontenttype: Literal["application/json"] = "application/json"
    data: Any

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("type")
        if field is not None and isinstance(field.default, str):
            cls.event_type = field.default

    @property
    def nats_subject(self) -> str:
        return subject_for(self.type)
