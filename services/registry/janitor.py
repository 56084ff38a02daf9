"""The janitor: object-store deletions that a committed transaction queued.

A transaction that drops a version or fails an upload cannot delete its blob itself: the
delete would happen even if the transaction rolled back, or be lost if the process died
after the commit. Instead it inserts rows into `blob_deletions` (an object to delete, or a
multipart upload to abort) and wakes the janitor after the commit.

Each pass claims due rows with `FOR UPDATE SKIP LOCKED` (replicas share the work), does the
object-store calls while holding the row locks, then drops the rows that succeeded and
postpones the others with exponential backoff. Holding the locks is what makes a new
upload of the same key safe: its `start` deletes the queued row and so waits for a
deletion in progress to finish before the client can write the new archive.

Besides the wake-ups, a slow poll retries postponed rows and runs the periodic sweep
(uploads abandoned without a finish).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge

from services.registry import repository as repo
from services.registry.adapters.s3 import BlobStore
from services.registry.repository import QueuedDeletion
from shared.db import Pool
from shared.logging import get_logger
from shared.tasks import stop_tasks

log = get_logger(__name__)

BLOB_DELETIONS_PENDING = Gauge(
    "ekiben_registry_blob_deletions_pending", "Queued object-store deletions not yet done"
)
BLOB_DELETIONS_DONE = Counter(
    "ekiben_registry_blob_deletions_total", "Object-store deletions by outcome", ["outcome"]
)

MAX_BACKOFF_SECONDS = 300.0
OPERATION_TIMEOUT_SECONDS = 5.0


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts + 1`: 1, 2, 4, ... up to 5 minutes."""
    return min(2.0 ** min(attempts, 16), MAX_BACKOFF_SECONDS)


class BlobJanitor:
    def __init__(
        self,
        pool: Callable[[], Pool],
        blobs: BlobStore,
        *,
        poll_seconds: float = 30.0,
        batch_size: int = 50,
        periodic: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._pool = pool
        self._blobs = blobs
        self._poll = poll_seconds
        self._batch_size = batch_size
        self.periodic = periodic
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """Run a pass now (called after a commit that queued work)."""
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="registry-blob-janitor")

    async def stop(self) -> None:
        """Interrupt the pass in flight (deletions are retried later) and wait for the loop."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()  # ends the wait at once, should a library swallow the cancel
            await stop_tasks([task], grace=5.0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_periodic = float("-inf")
        while not self._stopping:
            self._wake.clear()
            try:
                if self.periodic is not None and loop.time() - last_periodic >= self._poll:
                    last_periodic = loop.time()
                    await self.periodic()
                while await self.run_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the janitor outlives outages of PG or S3
                log.warning("registry.janitor.error", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def run_once(self) -> int:
        """One batch of due work; returns how many rows it finished (0: nothing due)."""
        async with self._pool().acquire() as conn, conn.transaction():
            batch = await repo.claim_due_deletions(conn, self._batch_size)
            if not batch:
                BLOB_DELETIONS_PENDING.set(await repo.pending_deletions(conn))
                return 0
            results = await asyncio.gather(*(self._carry_out(d) for d in batch))
            done = [d.id for d, error in zip(batch, results, strict=True) if error is None]
            await repo.drop_deletions(conn, done)
            for deletion, error in zip(batch, results, strict=True):
                if error is not None:
                    delay = backoff(deletion.attempts)
                    await repo.postpone_deletion(conn, deletion.id, error=error, delay=delay)
                    log.warning(
                        "registry.janitor.retry",
                        object_key=deletion.object_key,
                        upload_id=deletion.upload_id,
                        attempts=deletion.attempts + 1,
                        retry_in=delay,
                        error=error,
                    )
            BLOB_DELETIONS_PENDING.set(await repo.pending_deletions(conn))
        BLOB_DELETIONS_DONE.labels("done").inc(len(done))
        BLOB_DELETIONS_DONE.labels("postponed").inc(len(batch) - len(done))
        return len(done)

    async def _carry_out(self, deletion: QueuedDeletion) -> str | None:
        """None on success, else the error text."""
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
                if deletion.upload_id is None:
                    await self._blobs.delete(deletion.object_key)
                else:
                    await self._blobs.abort_multipart_upload(
                        deletion.object_key, deletion.upload_id
                    )
        except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
            return repr(exc)
        log.debug(
            "registry.janitor.done",
            object_key=deletion.object_key,
            upload_id=deletion.upload_id,
            reason=deletion.reason,
        )
        return None
