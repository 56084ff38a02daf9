"""The JSON of webhooks and their deliveries (secrets appear only in the creation answer)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.gateway.events.models import Attempt, Delivery, DeliveryStatus, Endpoint


class CreateWebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Where to POST events: http(s), a public address")
    types: list[str] = Field(
        default_factory=list,
        description="Event types or prefixes ending in '*' (e.g. deployment.*); empty: all",
    )
    description: str = ""


class UpdateWebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled webhook and clears its reason"
    )


class WebhookSchema(BaseModel):
    uid: str
    url: str
    types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: AwareDatetime | None
    failure_streak: int = Field(
        description="Deliveries in a row that failed every attempt (a success resets it)"
    )
    created_by: str
    created_at: AwareDatetime
    updated_at: AwareDatetime | None


class WebhookWithSecretSchema(WebhookSchema):
    secret: str = Field(description="The Standard Webhooks signing secret, shown this once")


class AttemptSchema(BaseModel):
    attempt: int
    at: AwareDatetime
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None = Field(description="The start of the receiver's answer")


class DeliverySchema(BaseModel):
    uid: str
    webhook_uid: str
    event_id: str
    event_type: str
    subject: str
    webhook_id: str = Field(description="The webhook-id header: the same on every retry")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: AwareDatetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: AwareDatetime
    finished_at: AwareDatetime | None
    history: list[AttemptSchema]


def webhook_schema(endpoint: Endpoint) -> WebhookSchema:
    return WebhookSchema(
        uid=endpoint.uid,
        url=endpoint.url,
        types=list(endpoint.types),
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        failure_streak=endpoint.failure_streak,
        created_by=endpoint.created_by,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def webhook_with_secret_schema(endpoint: Endpoint, secret: str) -> WebhookWithSecretSchema:
    return WebhookWithSecretSchema(**webhook_schema(endpoint).model_dump(), secret=secret)


def _attempt(attempt: Attempt) -> AttemptSchema:
    return AttemptSchema(
        attempt=attempt.attempt,
        at=attempt.at,
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
        response_body=attempt.response_body,
    )


def delivery_schema(delivery: Delivery) -> DeliverySchema:
    return DeliverySchema(
        uid=delivery.uid,
        webhook_uid=delivery.endpoint_uid,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        subject=delivery.subject,
        webhook_id=delivery.webhook_id,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        history=[_attempt(a) for a in delivery.history],
    )
