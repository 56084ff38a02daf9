"""Webhook subscriptions as the logic sees them (the repository maps rows to these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first attempt, a retry, or its turn
    SUCCEEDED = "succeeded"  # a 2xx answer
    FAILED = "failed"  # no attempt left (a redelivery makes it pending again)


@dataclass(frozen=True)
class Endpoint:
    id: int  # internal key: never leaves the gateway
    uid: str
    organization_id: int
    url: str
    types: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failure_streak: int
    created_by: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True)
class Attempt:
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None


@dataclass(frozen=True)
class Delivery:
    id: int
    uid: str
    endpoint_uid: str
    event_id: str
    event_type: str
    subject: str
    webhook_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    history: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker holds the lease of, with what it needs to send it."""

    id: int
    webhook_id: str
    body: str
    attempt: int
    attempts_left: int
    endpoint_id: int
    organization_id: int
    url: str
    secret_sealed: bytes


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: int
    event_id: str
    event_type: str
    subject: str
    stream_seq: int
    webhook_id: str
    body: str


@dataclass(frozen=True)
class AttemptOutcome:
    delivery_id: int
    endpoint_id: int
    attempt: int
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None

    @property
    def ok(self) -> bool:
        return self.error is None
