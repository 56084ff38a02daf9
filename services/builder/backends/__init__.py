"""Where builds run, behind one interface: `local` (buildah here) or `kubernetes` (a Job).

The reconciler asks a backend three things about a build: `start(order)` (begin, without
waiting: a build takes minutes, a reconcile milliseconds), `poll(build)` (running, done with
a digest, failed with a reason, or unknown to it: `absent`, e.g. after a restart of this
process or a deleted Job) and `cancel(build)`. A backend reports completion by calling the
`wake(key)` it was given, so the reconciler looks again at once instead of polling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from services.builder.repository import BuildRow
from shared.kube.watch import ObjectKey

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
