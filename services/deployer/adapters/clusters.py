"""The cluster directory: deployers announce their cluster in a JetStream key-value bucket.

Each deployer puts its `Cluster` (name, default namespace, instance types, its identity,
first and last seen) under its cluster's name every heartbeat; any deployer replica reads
the bucket to answer `cluster.list` and to check a deployment's cluster. Nothing is
registered by hand and no kubeconfig is stored anywhere: a cluster exists because a deployer
running inside it (or with its own credentials for it) says so, and `last_seen_at` says how
recently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.contracts.deployer import CLUSTER_BUCKET, Cluster
from shared.errors import Unavailable
from shared.logging import get_logger

log = get_logger(__name__)


class ClusterDirectory:
    """Read and write cluster announcements (the NATS connection is read at call time)."""

    def __init__(self, connection: Callable[[], Client]) -> None:
        self._connection = connection
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        js = self._connection().jetstream()
        try:
            self._kv = await js.key_value(CLUSTER_BUCKET)
        except BucketNotFoundError:
            self._kv = await js.create_key_value(
                KeyValueConfig(bucket=CLUSTER_BUCKET, history=1, description="Ekiben clusters")
            )
        return self._kv

    async def announce(self, cluster: Cluster) -> Cluster:
        """Record `cluster` as seen now, keeping when it was first seen."""
        kv = await self._bucket()
        previous = await self.get(cluster.name)
        now = datetime.now(UTC)
        announced = cluster.model_copy(
            update={
                "first_seen_at": previous.first_seen_at if previous else now,
                "last_seen_at": now,
            }
        )
        await kv.put(cluster.name, announced.model_dump_json().encode())
        return announced

    async def get(self, name: str) -> Cluster | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            return None
        except ValueError:  # not a valid key: no cluster has that name
            return None
        return _decode(entry.value)

    async def list(self) -> list[Cluster]:
        # The stream's subjects, in one request: KeyValue.keys() runs a consumer that
        # reports "no keys" when it times out, which a loaded server makes it do.
        await self._bucket()
        stream = f"KV_{CLUSTER_BUCKET}"
        info = await self._connection().jetstream().stream_info(stream, subjects_filter=">")
        prefix = f"$KV.{CLUSTER_BUCKET}."
        keys = [s.removeprefix(prefix) for s in (info.state.subjects or {}) if s.startswith(prefix)]
        found = await asyncio.gather(*(self.get(key) for key in keys))
        return sorted((c for c in found if c is not None), key=lambda c: c.name)


def _decode(raw: bytes | None) -> Cluster | None:
    if not raw:
        return None
    try:
        return Cluster.model_validate_json(raw)
    except ValidationError:
        log.warning("deployer.cluster.unreadable")
        return None


class Heartbeat:
    """Announce `cluster()` now and every `period` seconds until stopped."""

    def __init__(
        self, directory: ClusterDirectory, cluster: Callable[[], Cluster], period: float
    ) -> None:
        self.directory = directory
        self.cluster = cluster
        self.period = period
        self.beats = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        await self.beat()  # known before the first command is served
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="deployer-heartbeat")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def beat(self) -> None:
        try:
            await self.directory.announce(self.cluster())
            self.beats += 1
        except Exception as exc:  # a missed beat is retried next period
            log.warning("deployer.heartbeat.failed", error=repr(exc))
            if self.beats == 0:
                raise Unavailable(f"cannot announce the cluster: {exc}") from exc

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.period)
            except TimeoutError:
                await self.beat()
            else:
                return
