"""Where builds run, behind one interface: `local` (buildah here) or `kubernetes` (a Job).

The reconciler asks a backend three things about a build: `start(order)` (begin, without
waiting: a build takes minutes, a reconcile milliseconds), `poll(build)` (running, done with
a digest, failed with a reason, or unknown to it: `absent`, e.g. after a restart of this
process or a deleted Job) and `cancel(build)`. A backend reports completion by calling the
`wake(key)` it was given, so the reconciler looks again at once instead of polling.
Both keep the work they run in this process in a `BuildTasks`: a task per build and the
Outcome it left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from services.builder.repository import BuildRow
from shared.kube.watch import ObjectKey
from shared.tasks import stop_tasks

State = Literal["running", "succeeded", "failed", "absent"]
Wake = Callable[[ObjectKey], None]


@dataclass(frozen=True)
class BuildOrder:
    """One attempt: the build, the BentoRequest it is for, its limits."""

    build: BuildRow
    request: dict[str, Any]
    key: ObjectKey
    deadline_seconds: float
    build_args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    state: State
    digest: str | None = None
    reason: str | None = None
    message: str = ""
    tail: tuple[str, ...] = ()
    # A fault that another attempt may not hit (registry unreachable, a lost worker).
    retriable: bool = False
    job_name: str | None = None


class Backend(Protocol):
    name: str

    async def startup(self) -> None:
        """Called when this replica starts leading, before any reconcile."""

    async def start(self, order: BuildOrder) -> None: ...

    def job_for(self, build: BuildRow) -> str | None:
        """The name of the Job running `build` (for the request's status), if any."""

    async def poll(self, build: BuildRow, request: dict[str, Any]) -> Outcome: ...

    async def cancel(self, build: BuildRow, request: dict[str, Any]) -> None: ...

    async def shutdown(self) -> None:
        """Stop what runs here (a local build); its build resumes on the next leader."""


class BuildTasks:
    """What a backend runs in this process: one task per build, and the Outcome it left.

    `start` runs `work()` unless that build's task is still running. When the task ends
    (not when it is cancelled) its Outcome is kept, unless it is None (the backend's own
    record says how it goes, e.g. the Job it wrote), and `wake(key)` is called.
    """

    def __init__(self, wake: Wake) -> None:
        self._wake = wake
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._outcomes: dict[str, Outcome] = {}

    def running(self, build_id: str) -> bool:
        task = self._tasks.get(build_id)
        return task is not None and not task.done()

    def outcome(self, build_id: str) -> Outcome | None:
        return self._outcomes.get(build_id)

    def start(
        self, build_id: str, key: ObjectKey, work: Callable[[], Awaitable[Outcome | None]]
    ) -> None:
        if self.running(build_id):
            return
        self._outcomes.pop(build_id, None)

        async def run() -> None:
            outcome = await work()
            if outcome is not None:
                self._outcomes[build_id] = outcome
            self._wake(key)

        self._tasks[build_id] = asyncio.create_task(run(), name=f"build-{build_id}")

    async def cancel(self, build_id: str) -> None:
        task = self._tasks.pop(build_id, None)
        if task is not None:
            await stop_tasks([task], grace=0)
        self._outcomes.pop(build_id, None)

    def forget(self, build_id: str) -> None:
        self._outcomes.pop(build_id, None)
        self._tasks.pop(build_id, None)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await stop_tasks(tasks, grace=0)
