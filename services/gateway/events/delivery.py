"""The webhook delivery worker: claims due deliveries and POSTs them, signed.

One worker per gateway process. It sleeps until a delivery is due: a NOTIFY from the
insert trigger (or a redelivery) wakes it at once, otherwise it waits for the earliest
retry, at most `safety_poll_seconds`. Each pass claims up to its free slots
(`repository.claim`: `FOR UPDATE SKIP LOCKED`, then a lease, so replicas share the work
and a delivery whose worker died is claimed again when its lease ends) and sends each in
its own task:

- the URL is checked again (`urls.check_url`: what a name resolves to can change), and
  the connection itself only goes to addresses that pass the same rule (`SafeResolver`),
  so a name that changes its answer between the check and the connect gains nothing;
- the body is the event in CloudEvents structured mode (`application/cloudevents+json`),
  signed the Standard Webhooks way (`signing`), with a timeout for the whole exchange;
- redirects are not followed (a 3xx is a failure that names the target), and at most
  `max_response_bytes` of the answer are read and kept;
- a 2xx is a success; anything else is retried with exponential backoff and jitter until
  the delivery's attempts run out, and counts towards the endpoint's failure streak.

Outcomes are stored by a recorder task, group-commit style: every outcome that arrived
while the previous write ran goes into the next one statement, so under load hundreds of
attempts share one commit and at rest each is stored at once. The lease stays on until
then, and the next delivery of a subject becomes claimable only once its predecessor's
outcome is stored.

Delivery is at least once: a worker that dies after the receiver answered and before the
attempt is recorded sends it again; the `webhook-id` lets the receiver drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from asyncpg.pool import PoolConnectionProxy

from services.gateway.events import repository, service, signing
from services.gateway.events.metrics import (
    WEBHOOK_ATTEMPT_SECONDS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DISABLED,
)
from services.gateway.events.models import AttemptOutcome, ClaimedDelivery
from services.gateway.events.signing import SecretBox
from services.gateway.events.urls import Network, RefusedUrl, check_url, refusal
from services.gateway.settings import WebhookSettings
from shared.db import Connection, Pool
from shared.logging import get_logger
from shared.tasks import stop_tasks

log = get_logger(__name__)

USER_AGENT = "Ekiben-Webhooks/1.0"


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> str:
    """At most `limit` bytes of the body, as text; the rest is never read (the connection
    is then closed rather than reused)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


class SafeResolver(AbstractResolver):
    """Name resolution for deliveries that refuses any address `urls` would refuse."""

    def __init__(self, allowed: list[Network]) -> None:
        self._allowed = allowed
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for result in found:
            reason = refusal(ipaddress.ip_address(result["host"]), self._allowed)
            if reason is not None:
                raise OSError(f"{host} now resolves to {result['host']}, {reason}")
        return found

    async def close(self) -> None:
        await self._inner.close()


class DeliveryWorker:
    def __init__(self, pool: Pool, box: SecretBox, settings: WebhookSettings, *, schema: str):
        self._pool = pool
        self._box = box
        self._settings = settings
        self._channel = f"{schema}_webhooks"
        self._client: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._outcomes: list[tuple[AttemptOutcome, bool]] = []
        self._secrets: dict[bytes, str] = {}
        self._record_wake = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None
        self._recorder_stopping = False
        self._listener: Connection | None = None
        self._last_prune = float("-inf")

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self._settings
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.concurrency,
                resolver=SafeResolver(list(settings.allowed_networks)),
                use_dns_cache=False,  # every connection resolves (and is checked) anew
            ),
            timeout=aiohttp.ClientTimeout(total=settings.timeout_seconds),
            headers={"user-agent": USER_AGENT},
            trust_env=False,
        )
        self._stopping = False
        self._recorder_stopping = False
        self._recorder = asyncio.create_task(self._record_loop(), name="webhook-recorder")
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let attempts in flight finish (at most `grace`), then close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            await stop_tasks([self._task], grace=5.0)
            self._task = None
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)
            await stop_tasks(self._inflight, grace=5.0)
        if self._recorder is not None:  # store what was sent before closing
            self._recorder_stopping = True
            self._record_wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._recorder), 10.0)
            await stop_tasks([self._recorder], grace=5.0)
            self._recorder = None
        await self._close_listener()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def wake(self) -> None:
        self._wake.set()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            listener = await self._pool.acquire()
            await listener.add_listener(self._channel, self._notified)
            self._listener = listener

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if isinstance(listener, PoolConnectionProxy):
            try:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(self._channel, self._notified)
            finally:
                with contextlib.suppress(Exception):
                    await self._pool.release(listener)

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self._settings
        while not self._stopping:
            try:
                await self._listen()
                self._wake.clear()
                free = settings.concurrency - len(self._inflight)
                # Claim in batches: a claim per freed slot would cost a round trip per
                # delivery. With nothing in flight, any due delivery is claimed at once.
                if self._inflight and free < max(1, settings.concurrency // 4):
                    await self._wake.wait()
                    continue
                claimed = await self._claim(free)
                for delivery in claimed:
                    self._spawn(delivery)
                if len(claimed) == free:
                    continue  # more may be due: claim again once slots free up
                wait = settings.safety_poll_seconds
                if free > len(claimed):
                    due = await service.seconds_until_due(self._pool)
                    if due is not None:
                        wait = min(wait, max(due, 0.005))
                await self._maybe_prune()
                if not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker outlives database outages
                log.warning("gateway.webhooks.worker_error", error=repr(exc))
                await self._close_listener()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _claim(self, limit: int, delivery_id: int | None = None) -> list[ClaimedDelivery]:
        return await repository.claim(
            self._pool,
            limit=limit,
            lease_seconds=self._settings.lease_seconds,
            delivery_id=delivery_id,
        )

    def _spawn(self, delivery: ClaimedDelivery) -> None:
        task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free, and the next delivery of that subject may be due

    async def _maybe_prune(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_prune < 3600:
            return
        self._last_prune = loop.time()
        removed = await service.prune(self._pool, self._settings)
        if removed:
            log.info("gateway.webhooks.pruned", deliveries=removed)

    async def deliver_now(self, delivery_id: int) -> bool:
        """Claim and send one delivery at once (a test request); False if another worker
        holds it or it is not due."""
        claimed = await self._claim(1, delivery_id)
        if not claimed:
            return False
        await self._record([await self._send(claimed[0])])
        return True

    # --- one attempt -----------------------------------------------------------------------

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        """Send, then hand the outcome to the recorder (the slot is free once sent)."""
        try:
            outcome, gone = await self._send(delivery)
        except Exception:  # e.g. a secret that no longer decrypts
            log.exception("gateway.webhooks.send_failed", delivery=delivery.id)
            return  # its lease brings it back
        kind = "ok" if outcome.ok else "http_error" if outcome.status_code else "error"
        WEBHOOK_ATTEMPTS.labels(kind).inc()
        WEBHOOK_ATTEMPT_SECONDS.observe(outcome.latency_ms / 1000)
        self._outcomes.append((outcome, gone))
        self._record_wake.set()

    async def _record_loop(self) -> None:
        """Store outcomes as they come: all that arrived during one write go in the next,
        so under load many attempts share a commit, and at rest each is stored at once."""
        while True:
            if not self._outcomes:
                if self._recorder_stopping:
                    return
                await self._record_wake.wait()
            self._record_wake.clear()
            batch, self._outcomes = self._outcomes, []
            if batch:
                await self._record(batch)
                self._wake.set()  # the next delivery of those subjects may be due now

    async def _record(self, batch: list[tuple[AttemptOutcome, bool]]) -> None:
        try:
            recorded = await service.record_attempts(self._pool, batch, self._settings)
        except Exception as exc:  # noqa: BLE001 - their leases bring them back
            log.warning("gateway.webhooks.record_failed", attempts=len(batch), error=repr(exc))
            return
        for item in recorded:
            outcome = item.outcome
            if item.status is None or outcome.ok:
                continue  # deleted with its endpoint meanwhile, or done (see the metrics)
            bound = log.bind(
                delivery=outcome.delivery_id, attempt=outcome.attempt, status=item.status.value
            )
            bound.info("gateway.webhooks.attempt_failed", error=outcome.error)
            if item.disabled is not None:
                WEBHOOK_DISABLED.inc()
                bound.warning("gateway.webhooks.endpoint_disabled", reason=item.disabled)

    def _secret(self, sealed: bytes) -> str:
        """The signing secret, decrypted once per sealed value (a few endpoints' worth)."""
        secret = self._secrets.get(sealed)
        if secret is None:
            if len(self._secrets) >= 1024:
                self._secrets.clear()
            secret = self._secrets[sealed] = self._box.open(sealed)
        return secret

    async def _send(self, delivery: ClaimedDelivery) -> tuple[AttemptOutcome, bool]:
        assert self._client is not None
        settings = self._settings
        status_code: int | None = None
        error: str | None = None
        answer: str | None = None
        start = time.perf_counter()
        try:
            await check_url(delivery.url, settings.allowed_networks)
            body = delivery.body.encode()
            headers = {
                **signing.headers(
                    self._secret(delivery.secret_sealed),
                    delivery.webhook_id,
                    int(time.time()),
                    body,
                ),
                "content-type": "application/cloudevents+json; charset=utf-8",
            }
            async with (
                asyncio.timeout(settings.timeout_seconds),
                self._client.post(
                    delivery.url, data=body, headers=headers, allow_redirects=False
                ) as response,
            ):
                status_code = response.status
                answer = await read_limited(response, settings.max_response_bytes)
            if 300 <= status_code < 400:
                target = response.headers.get("location", "?")[:300]
                error = f"HTTP {status_code}: redirect to {target} not followed"
            elif not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except RefusedUrl as exc:
            error = exc.message
        except TimeoutError:
            error = f"no answer within {settings.timeout_seconds:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
        latency_ms = (time.perf_counter() - start) * 1000.0
        outcome = AttemptOutcome(
            delivery_id=delivery.id,
            endpoint_id=delivery.endpoint_id,
            attempt=delivery.attempt,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            response_body=answer,
        )
        return outcome, status_code == 410
