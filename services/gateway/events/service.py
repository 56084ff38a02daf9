"""Event subscriptions: the logic of webhooks (endpoints, deliveries) and of stream positions.

A **webhook endpoint** belongs to one organization: a URL, the event types it wants (type
patterns, see `filters`; none means all) and a signing secret shown once. Admins manage
endpoints: they send the organization's events out of the platform, an act of the same
weight as issuing tokens. Every change commits with its audit record.

A **delivery** is one event for one endpoint. The gateway's durable consumer
`gateway-webhooks` (`enqueue`) writes the deliveries an event calls for in the same
transaction as its `processed_once` record, so an event is queued for each endpoint
exactly once even when the gateway dies mid-way and JetStream redelivers it.
`delivery.DeliveryWorker` then sends them (see there) and records every attempt. Events
that happen while an endpoint is disabled are not queued for it; what was pending when it
was disabled goes out, in order, once it is re-enabled.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.gateway.audit import repository as audit_repository
from services.gateway.events import repository
from services.gateway.events.filters import matches, parse_types
from services.gateway.events.models import (
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    Endpoint,
    NewDelivery,
)
from services.gateway.events.signing import SecretBox, new_key_material, new_secret
from services.gateway.events.urls import Network, check_url
from services.gateway.settings import WebhookSettings
from shared.db import Connection, Pool
from shared.errors import Conflict, EkibenError, InvalidInput, NotFound
from shared.events import AnyEvent, organization_of
from shared.events.envelope import new_event_id
from shared.logging import get_logger

log = get_logger(__name__)

WEBHOOK_CONSUMER = "gateway-webhooks"
TEST_EVENT_TYPE = "ekiben.webhook.test"
MAX_DESCRIPTION = 1000
# The actor of changes the delivery worker makes (disabling an endpoint).
SYSTEM_ACTOR = "system:webhooks"


class Gone(EkibenError):
    """What was asked for existed once and is no longer kept."""

    status = 410
    code = "gone"


def webhook_id_for(endpoint_uid: str, event_id: str) -> str:
    """The `webhook-id` of an event sent to an endpoint: the same on every retry and
    redelivery, different for each endpoint."""
    digest = hashlib.sha256(f"{endpoint_uid}:{event_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def retry_delay(
    attempt: int, settings: WebhookSettings, rand: random.Random | None = None
) -> float:
    """Seconds before the attempt after `attempt` (1-based): exponential, capped, with
    "equal jitter" (half fixed, half random) so that receivers coming back are not hit by
    every retry at once."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2.0 ** (attempt - 1))
    jitter: float = (rand or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


async def secret_box(pool: Pool, settings: WebhookSettings) -> SecretBox:
    """The box that seals secrets: from the setting, else from the database's own key."""
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key.get_secret_value().encode())
    log.warning(
        "gateway.webhooks.key_in_database",
        hint="set EKIBEN_GATEWAY_WEBHOOKS__SECRET_KEY to keep the sealing key out of the database",
    )
    return SecretBox(await repository.stored_key(pool, new_key_material()))


# --- endpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointChange:
    """A PATCH: fields left None stay as they are."""

    url: str | None = None
    types: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


def _description(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"description: at most {MAX_DESCRIPTION} characters")
    return text


async def create_endpoint(
    conn: Connection,
    box: SecretBox,
    *,
    organization_id: int,
    url: str,
    types: Sequence[str],
    description: str,
    created_by: str,
    allowed: Sequence[Network],
) -> tuple[Endpoint, str]:
    """A new endpoint and its signing secret (the only time the secret is seen)."""
    url = url.strip()
    await check_url(url, allowed)
    secret = new_secret()
    endpoint = await repository.insert_endpoint(
        conn,
        organization_id=organization_id,
        url=url,
        types=parse_types(types),
        description=_description(description),
        secret_sealed=box.seal(secret),
        created_by=created_by,
    )
    return endpoint, secret


async def list_endpoints(
    conn: Connection | Pool, organization_id: int, *, start: int, count: int
) -> tuple[int, list[Endpoint]]:
    return await repository.endpoints(conn, organization_id, start=start, count=count)


async def get_endpoint(
    conn: Connection | Pool, organization_id: int, uid: str, *, for_update: bool = False
) -> Endpoint:
    found = await repository.endpoint(conn, organization_id, uid, for_update=for_update)
    if found is None:
        raise NotFound(f"webhook {uid} not found")
    return found


async def update_endpoint(
    conn: Connection,
    endpoint: Endpoint,
    change: EndpointChange,
    *,
    allowed: Sequence[Network],
) -> Endpoint:
    url = endpoint.url if change.url is None else change.url.strip()
    if change.url is not None:
        await check_url(url, allowed)
    enabled = endpoint.enabled if change.enabled is None else change.enabled
    return await repository.update_endpoint(
        conn,
        endpoint.id,
        url=url,
        types=endpoint.types if change.types is None else parse_types(change.types),
        description=(
            endpoint.description if change.description is None else _description(change.description)
        ),
        enabled=enabled,
        disabled_reason=None if enabled else "disabled by an update",
    )


async def delete_endpoint(conn: Connection, endpoint: Endpoint) -> None:
    await repository.delete_endpoint(conn, endpoint.id)


# --- deliveries ------------------------------------------------------------------------------


async def queue_deliveries(
    conn: Connection,
    events: Sequence[tuple[AnyEvent, int]],
    settings: WebhookSettings,
) -> int:
    """Queue each (event, stream sequence) for every enabled endpoint of its organization
    that wants its type, in one insert; returns how many deliveries were queued.

    Call in the transaction that records the events as processed.
    """
    endpoints: dict[str, list[Endpoint]] = {}
    new = []
    for event, stream_seq in events:
        organization = organization_of(event)
        if organization not in endpoints:
            endpoints[organization] = await repository.enabled_endpoints(conn, organization)
        wanted = [e for e in endpoints[organization] if matches(e.types, event.type)]
        if not wanted:
            continue
        body = event.model_dump_json()
        new += [
            NewDelivery(
                endpoint_id=e.id,
                event_id=event.id,
                event_type=event.type,
                subject=event.subject or "",
                stream_seq=stream_seq,
                webhook_id=webhook_id_for(e.uid, event.id),
                body=body,
            )
            for e in wanted
        ]
    return len(await repository.insert_deliveries(conn, new, attempts=settings.max_attempts))


async def queue_test(
    conn: Connection, endpoint: Endpoint, actor: str, *, hold_seconds: float
) -> tuple[int, str]:
    """A test delivery of a `ekiben.webhook.test` CloudEvent; returns its id and uid.

    The caller sends it at once; it is due for the worker only after `hold_seconds`, in
    case the caller dies first.
    """
    event_id = new_event_id()
    body = json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/ekiben/gateway",
            "type": TEST_EVENT_TYPE,
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "subject": f"webhooks/{endpoint.uid}",
            "datacontenttype": "application/json",
            "data": {"webhook": endpoint.uid, "requested_by": actor},
        },
        separators=(",", ":"),
    )
    [queued] = await repository.insert_deliveries(
        conn,
        [
            NewDelivery(
                endpoint_id=endpoint.id,
                event_id=event_id,
                event_type=TEST_EVENT_TYPE,
                # Its own subject: a test never waits behind, nor holds up, real deliveries.
                subject=f"test:{event_id}",
                stream_seq=0,
                webhook_id=webhook_id_for(endpoint.uid, event_id),
                body=body,
            )
        ],
        attempts=1,
        not_before_seconds=hold_seconds,
    )
    return queued


async def list_deliveries(
    conn: Connection | Pool,
    endpoint: Endpoint,
    *,
    start: int,
    count: int,
    status: DeliveryStatus | None = None,
) -> tuple[int, list[Delivery]]:
    return await repository.deliveries(conn, endpoint.id, start=start, count=count, status=status)


async def get_delivery(
    conn: Connection | Pool, organization_id: int, uid: str, *, for_update: bool = False
) -> tuple[Delivery, Endpoint]:
    found = await repository.delivery(conn, organization_id, uid, for_update=for_update)
    if found is None:
        raise NotFound(f"webhook delivery {uid} not found")
    return found


async def redeliver(
    conn: Connection, delivery: Delivery, endpoint: Endpoint, settings: WebhookSettings
) -> None:
    """Send a delivery again (same body, same webhook-id) with a fresh budget of attempts."""
    if not endpoint.enabled:
        raise Conflict(
            f"webhook {endpoint.uid} is disabled ({endpoint.disabled_reason}); enable it with"
            ' PATCH {"enabled": true} first'
        )
    attempts = 1 if delivery.event_type == TEST_EVENT_TYPE else settings.max_attempts
    await repository.requeue(conn, delivery.id, attempts=attempts)


@dataclass(frozen=True)
class Recorded:
    """What became of one attempt once stored."""

    outcome: AttemptOutcome
    status: DeliveryStatus | None  # None: deleted with its endpoint while it was sent
    disabled: str | None  # the reason, when this attempt disabled the endpoint


async def record_attempts(
    pool: Pool, attempts: Sequence[tuple[AttemptOutcome, bool]], settings: WebhookSettings
) -> list[Recorded]:
    """Store attempts (each with whether the receiver answered 410 Gone), schedule their
    retries, keep the endpoints' failure streaks.

    The streak counts deliveries in a row that used up every attempt: a receiver that is
    down for less than the retry schedule loses nothing and is not disabled, however many
    deliveries were waiting; one that fails the whole schedule `disable_after_failures`
    times in a row is. A receiver answering 410 Gone says it wants nothing more: it is
    disabled at once. A disabling is recorded in the audit log in the same transaction.
    """
    async with pool.acquire() as conn, conn.transaction():
        # One transaction: a delivery that failed for good and the endpoint it disables are
        # seen together, so no later delivery is claimed in between.
        statuses = await repository.record_attempts(
            conn,
            [
                (outcome, None if outcome.ok else retry_delay(outcome.attempt, settings))
                for outcome, _ in attempts
            ],
        )
        recorded = []
        for outcome, gone in attempts:
            status = statuses.get(outcome.delivery_id)
            disabled = None
            if status is not None and (gone or status is DeliveryStatus.FAILED):
                disabled = await _count_failure(conn, outcome, settings, gone=gone)
            recorded.append(Recorded(outcome, status, disabled))
    return recorded


async def _count_failure(
    conn: Connection, outcome: AttemptOutcome, settings: WebhookSettings, *, gone: bool
) -> str | None:
    if gone:
        reason, limit = "the receiver answered 410 Gone", 0
    else:
        limit = settings.disable_after_failures
        reason = (
            f"disabled after {limit} deliveries in a row failed every attempt;"
            f" the last: {outcome.error}"
        )
    disabled, _ = await repository.count_failure(
        conn, outcome.endpoint_id, disable_after=limit, reason=reason
    )
    if not disabled:
        return None
    await audit_repository.insert_audit(
        conn,
        organization_id=await repository.organization_id_of(conn, outcome.endpoint_id),
        actor_user_id=None,
        actor_name=SYSTEM_ACTOR,
        token_uid=None,
        token_name=None,
        request_id=None,
        action="webhook.disabled",
        resource_type="webhook",
        resource=await repository.endpoint_uid_of(conn, outcome.endpoint_id),
        details={"reason": reason},
    )
    return reason


async def seconds_until_due(pool: Pool) -> float | None:
    return await repository.seconds_until_due(pool)


async def prune(pool: Pool, settings: WebhookSettings) -> int:
    return await repository.prune(pool, older_than_seconds=settings.retention_days * 86400)
