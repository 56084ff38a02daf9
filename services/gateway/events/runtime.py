"""The moving parts of event subscriptions in one gateway process, started with it.

- the `EventHub` (one ordered consumer of the event stream, the ring of recent events),
  which the SSE route reads;
- the `DeliveryWorker`, which sends due webhook deliveries;
- the `DeliveryQueue`, which turns events into deliveries (the durable consumer
  `gateway-webhooks`);
- the box that seals and opens signing secrets.
"""

from __future__ import annotations

from services.gateway.events import service
from services.gateway.events.delivery import DeliveryWorker
from services.gateway.events.enqueue import DeliveryQueue
from services.gateway.events.signing import SecretBox
from services.gateway.events.stream import EventHub
from services.gateway.settings import GatewaySettings
from shared.errors import Unavailable
from shared.service import BackendRuntime, hooks


class Subscriptions:
    def __init__(self, runtime: BackendRuntime, settings: GatewaySettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.hub = EventHub(settings.events)
        self._box: SecretBox | None = None
        self._worker: DeliveryWorker | None = None
        self._queue: DeliveryQueue | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            raise Unavailable("webhooks are not started")
        return self._box

    @property
    def worker(self) -> DeliveryWorker:
        if self._worker is None:
            raise Unavailable("webhooks are not started")
        return self._worker

    def register(self) -> None:
        """Start with the runtime (after its pool and NATS), stop before they close."""
        self.runtime.resource(hooks(start=self._start_hub, stop=self.hub.stop))
        self.runtime.resource(hooks(start=self._start_worker, stop=self._stop_worker))
        self.runtime.resource(hooks(start=self._start_queue, stop=self._stop_queue))

    async def _start_hub(self) -> None:
        await self.hub.start(self.runtime.broker.connection.jetstream())

    async def _start_worker(self) -> None:
        pool = self.runtime.pool
        self._box = await service.secret_box(pool, self.settings.webhooks)
        self._worker = DeliveryWorker(
            pool, self._box, self.settings.webhooks, schema=self.settings.schema_name
        )
        await self._worker.start()

    async def _start_queue(self) -> None:
        self._queue = DeliveryQueue(
            self.runtime.pool, self.runtime.broker.connection.jetstream(), self.settings
        )
        await self._queue.start()

    async def _stop_queue(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.stop()

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()
