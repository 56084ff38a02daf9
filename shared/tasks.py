"""Stopping background tasks without trusting cancellation to land.

Some libraries swallow a CancelledError that arrives at the wrong moment (nats-py does while
it flushes), so a plain ``task.cancel(); await task`` can wait forever. Loops of our own stop
on an event; `stop_tasks` is the bounded last resort.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from shared.logging import get_logger

log = get_logger(__name__)


async def stop_tasks(tasks: Iterable[asyncio.Task[None]], *, grace: float) -> None:
    """Cancel `tasks` and wait at most `grace` seconds for them; log any that outlive it."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, still_running = await asyncio.wait(pending, timeout=grace)
    for task in still_running:
        log.error("task.outlived_cancel", task=task.get_name(), grace_seconds=grace)
