"""The builder's logic: builds as owned data, their transitions and their events.

A build request (a push, a user, a deployment) resolves the bento version through the
registry (request/reply), derives the image tag from its content (render.image_tag) and
either finds a build that already covers it (pending, building, or succeeded and not
forced) or records a new pending build with `build.requested`, in one transaction. Only
then, after the commit, is the build announced (`announce`, set by the controller wiring:
it writes the BentoRequest and enqueues it), so nothing is announced that may roll back.

Every later transition (`started`, `succeeded`, `failed`) is a compare-and-set on the row
with its event in the same transaction (the outbox), so a replayed step never emits twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

from services.builder import repository as repo
from services.builder.metrics import BUILD_DURATION, BUILDS_FINISHED
from services.builder.render import build_config, content_digest, image_tag
from services.builder.repository import BuildRow
from services.builder.settings import BuilderSettings
from shared.bus import RpcClient
from shared.contracts import builder as contract
from shared.contracts import registry as reg
from shared.contracts.vocabulary import BuildStatus
from shared.db import Pool
from shared.errors import Conflict, NotFound, PermanentError
from shared.events.types import (
    ArtifactRef,
    BuildCompleted,
    BuildCompletedData,
    BuildFailed,
    BuildFailedData,
    BuildRequested,
    BuildRequestedData,
    BuildStarted,
    BuildStartedData,
)
from shared.logging import get_logger
from shared.outbox import processed_once, write_event

log = get_logger(__name__)

SOURCE = "/ekiben/builder"
VERSION_CACHE_SECONDS = 5.0
_EVENT_REASON = {"push": "bento.pushed", "manual": "manual", "deployment": "deployment"}
Announce = Callable[[BuildRow], Awaitable[None]]


def new_build_id() -> str:
    return uuid.uuid4().hex


def _ref(build: contract.Build) -> ArtifactRef:
    return ArtifactRef(
        organization=build.organization, name=build.bento_name, version=build.bento_version
    )


def _subject(build: contract.Build) -> str:
    return f"builds/{build.organization}/{build.bento}"


class BuildService:
    def __init__(self, pool: Callable[[], Pool], rpc: RpcClient, settings: BuilderSettings) -> None:
        self._pool = pool
        self._rpc = rpc
        self.settings = settings
        self.announce: Announce | None = None
        # One push asks for its version three times within milliseconds (the handler, the
        # announcement, the reconcile): a short-lived cache makes that one request/reply.
        self._versions: dict[tuple[str, str, str], tuple[float, reg.Version]] = {}

    # --- the registry ------------------------------------------------------------------

    async def bento_version(self, organization: str, name: str, version: str) -> reg.Version:
        """The bento version from the registry; PermanentError when it cannot be built."""
        key = (organization, name, version)
        cached = self._versions.get(key)
        if cached is not None and time.monotonic() - cached[0] < VERSION_CACHE_SECONDS:
            return cached[1]
        found = await self._fetch_version(organization, name, version)
        if len(self._versions) > 1024:
            self._versions.clear()
        self._versions[key] = (time.monotonic(), found)
        return found

    def forget_version(self, organization: str, name: str, version: str) -> None:
        self._versions.pop((organization, name, version), None)

    async def _fetch_version(self, organization: str, name: str, version: str) -> reg.Version:
        try:
            found = await self._rpc.call(
                reg.GET_VERSION,
                reg.GetVersion(
                    scope=reg.Scope(organization=organization, actor="builder"),
                    kind=reg.Kind.BENTO,
                    repository=name,
                    version=version,
                ),
            )
        except NotFound as exc:
            raise PermanentError(
                f"bento {name}:{version} not found in organization {organization}",
                reason="BentoNotFound",
            ) from exc
        if found.upload_status is not reg.UploadStatus.SUCCESS:
            raise PermanentError(
                f"bento {name}:{version} has no uploaded archive (upload {found.upload_status})",
                reason="BentoNotUploaded",
            )
        return found

    async def presign_download(
        self, build: contract.Build, *, expires_seconds: int | None = None
    ) -> str:
        """A short-lived URL of the bento archive (the builder holds no S3 credentials).

        It expires after `expires_seconds` or the registry's own expiry, whichever is sooner.
        """
        presigned = await self._rpc.call(
            reg.PRESIGN_DOWNLOAD,
            reg.PresignDownload(
                scope=reg.Scope(organization=build.organization, actor="builder"),
                kind=reg.Kind.BENTO,
                repository=build.bento_name,
                version=build.bento_version,
                expires_seconds=expires_seconds,
            ),
        )
        return presigned.url

    def target(
        self, version: reg.Version, build_args: dict[str, str] | None = None
    ) -> tuple[str, str, str]:
        """(image repository `HOST/PREFIX/name`, content-derived tag, content digest)."""
        digest = content_digest(version)
        tag = image_tag(version.version, digest, build_config(self.settings.build_args, build_args))
        registry = self.settings.registry
        return f"{registry.host}/{registry.repository(version.repository)}", tag, digest

    # --- commands ----------------------------------------------------------------------

    async def request_build(
        self,
        request: contract.RequestBuild,
        *,
        build_id: str | None = None,
        event: tuple[str, str] | None = None,
        emit_requested: bool = True,
    ) -> contract.Build:
        """Find the build that covers `request`, or record a new pending one (see module).

        `event` is `(consumer, event id)` of the event that asked: a redelivery finds it
        processed and changes nothing. A failed build under the same tag is tried again only
        when a person asks (`manual`) or the request is forced.
        """
        if request.trigger == "push":  # a re-push may have replaced the archive
            self.forget_version(request.organization, request.bento_name, request.bento_version)
        version = await self.bento_version(
            request.organization, request.bento_name, request.bento_version
        )
        repository, tag, digest = self.target(version)
        namespace = request.namespace or self.settings.kube.namespace
        async with self._pool().acquire() as conn, conn.transaction():
            if event is not None and not await processed_once(conn, *event):
                existing = await repo.latest_build(
                    conn, organization=request.organization, bento_name=request.bento_name,
                    bento_version=request.bento_version, image_tag=tag, namespace=namespace,
                )  # fmt: skip
                if existing is None:
                    raise NotFound("the event was processed, but its build is gone")
                return existing.contract()
            existing = await repo.latest_build(
                conn, organization=request.organization, bento_name=request.bento_name,
                bento_version=request.bento_version, image_tag=tag, namespace=namespace,
            )  # fmt: skip
            if existing is not None and self._covers(existing, request):
                log.info("builder.build.reused", build_id=existing.id, status=existing.status)
                return existing.contract()
            build = await repo.insert_build(
                conn,
                id=build_id or new_build_id(),
                organization=request.organization,
                bento_name=request.bento_name,
                bento_version=request.bento_version,
                trigger=request.trigger,
                image_repository=repository,
                image_tag=tag,
                content_digest=digest,
                force=request.force,
                backend=self.settings.backend,
                namespace=namespace,
                requested_by=request.requested_by,
            )
            if build is None:  # another request made it between our read and our insert
                raise Conflict(f"a build of {request.bento_name}:{request.bento_version} started")
            if emit_requested:
                await write_event(conn, self._requested_event(build))
        log.info("builder.build.requested", build_id=build.id, bento=build.bento, tag=tag)
        await self._announce(build)
        return build.contract()

    @staticmethod
    def _covers(existing: BuildRow, request: contract.RequestBuild) -> bool:
        if existing.status in (BuildStatus.PENDING, BuildStatus.BUILDING):
            return True
        if request.force:
            return False
        if existing.status is BuildStatus.SUCCEEDED:
            return True
        return request.trigger != "manual"  # failed: only a person's request tries again

    def _requested_event(self, build: BuildRow) -> BuildRequested:
        return BuildRequested(
            source=SOURCE,
            subject=_subject(build),
            data=BuildRequestedData(
                build_id=build.id,
                bento=_ref(build),
                image_repository=build.image_repository,
                reason=_EVENT_REASON[build.trigger],
                requested_by=build.requested_by,
                namespace=build.namespace,
                force=build.force,
            ),
        )

    async def _announce(self, build: BuildRow) -> None:
        if self.announce is None:
            return
        try:
            await self.announce(build)
        except Exception as exc:  # noqa: BLE001 - the sweep announces it again
            log.warning("builder.build.announce_failed", build_id=build.id, error=repr(exc))

    async def announce_unfinished(self) -> int:
        """Announce every pending or building build again (after a restart, a lost write)."""
        builds = await repo.unfinished_builds(self._pool())
        for build in builds:
            await self._announce(build)
        return len(builds)

    async def get_build(self, request: contract.GetBuild) -> contract.Build:
        build = await repo.get_build(self._pool(), request.id, organization=request.organization)
        if build is None:
            raise NotFound(f"build {request.id} not found")
        return build.contract()

    async def list_builds(self, request: contract.ListBuilds) -> contract.BuildPage:
        total, rows = await repo.list_builds(
            self._pool(),
            organization=request.organization,
            bento_name=request.bento_name,
            bento_version=request.bento_version,
            status=request.status,
            start=request.start,
            count=request.count,
        )
        return contract.BuildPage(total=total, items=[r.contract() for r in rows])

    async def read_logs(self, request: contract.ReadLogs) -> contract.BuildLogs:
        pool = self._pool()
        build = await repo.get_build(pool, request.id, organization=request.organization)
        if build is None:
            raise NotFound(f"build {request.id} not found")
        lines = await repo.read_logs(pool, build.id, after=request.after, limit=request.limit)
        finished = build.status in (BuildStatus.SUCCEEDED, BuildStatus.FAILED)
        return contract.BuildLogs(build=build.contract(), lines=lines, finished=finished)

    # --- transitions (called by the reconciler) -------------------------------------------

    async def get(self, build_id: str) -> BuildRow | None:
        return await repo.get_build(self._pool(), build_id)

    async def latest(
        self, organization: str, name: str, version: str, tag: str, namespace: str
    ) -> BuildRow | None:
        return await repo.latest_build(
            self._pool(), organization=organization, bento_name=name, bento_version=version,
            image_tag=tag, namespace=namespace,
        )  # fmt: skip

    async def create_for_request(
        self,
        *,
        organization: str,
        version: reg.Version,
        namespace: str,
        generation: int,
        force: bool,
        build_args: dict[str, str] | None,
        image_repository: str | None,
        rebuild_token: str | None = None,
    ) -> BuildRow:
        """A build for a BentoRequest nobody announced (kubectl apply, a changed spec)."""
        repository, tag, digest = self.target(version, build_args)
        async with self._pool().acquire() as conn, conn.transaction():
            build = await repo.insert_build(
                conn,
                id=new_build_id(),
                organization=organization,
                bento_name=version.repository,
                bento_version=version.version,
                trigger="manual",
                image_repository=image_repository or repository,
                image_tag=tag,
                content_digest=digest,
                force=force,
                backend=self.settings.backend,
                namespace=namespace,
                requested_by="kubernetes",
                generation=generation,
                rebuild_token=rebuild_token,
            )
            if build is None:
                active = await repo.latest_build(
                    conn, organization=organization, bento_name=version.repository,
                    bento_version=version.version, image_tag=tag, namespace=namespace,
                )  # fmt: skip
                if active is None:
                    raise Conflict("a build for this request appeared and vanished")
                return active
            await write_event(conn, self._requested_event(build))
        return build

    async def set_generation(self, build: BuildRow, generation: int) -> None:
        if build.generation != generation:
            await repo.set_generation(self._pool(), build.id, generation)

    async def started(self, build: BuildRow, *, restart: bool = False) -> BuildRow | None:
        """`building` (attempt + 1) with `build.started`; None if it was not pending."""
        async with self._pool().acquire() as conn, conn.transaction():
            row = await repo.mark_building(conn, build.id, restart=restart)
            if row is None:
                return None
            await write_event(
                conn,
                BuildStarted(
                    source=SOURCE,
                    subject=_subject(row),
                    data=BuildStartedData(
                        build_id=row.id, bento=_ref(row), image=row.target, attempt=row.attempts
                    ),
                ),
            )
        log.info("builder.build.started", build_id=row.id, attempt=row.attempts)
        return row

    async def succeeded(
        self, build: BuildRow, *, digest: str, reason: str, message: str = ""
    ) -> BuildRow | None:
        async with self._pool().acquire() as conn, conn.transaction():
            row = await repo.mark_succeeded(
                conn, build.id, digest=digest, reason=reason, message=message
            )
            if row is None:
                return None
            duration = _seconds_since(row.started_at or row.created_at)
            await write_event(
                conn,
                BuildCompleted(
                    source=SOURCE,
                    subject=_subject(row),
                    data=BuildCompletedData(
                        build_id=row.id,
                        bento=_ref(row),
                        image=f"{row.image_repository}@{digest}",
                        digest=digest,
                        duration_seconds=duration,
                    ),
                ),
            )
        outcome = "found" if reason == "ImageFound" else "succeeded"
        BUILDS_FINISHED.labels(backend=row.backend, outcome=outcome).inc()
        if row.started_at is not None:
            BUILD_DURATION.labels(backend=row.backend, outcome=outcome).observe(duration)
        log.info("builder.build.succeeded", build_id=row.id, image=row.image, reason=reason)
        return row

    async def failed(
        self,
        build: BuildRow,
        *,
        reason: str,
        message: str,
        tail: Sequence[str] = (),
        retriable: bool = False,
    ) -> BuildRow | None:
        tail = list(tail)[-40:]
        async with self._pool().acquire() as conn, conn.transaction():
            row = await repo.mark_failed(conn, build.id, reason=reason, message=message, tail=tail)
            if row is None:
                return None
            text = message if not tail else message + "\nlast lines:\n" + "\n".join(tail[-20:])
            await write_event(
                conn,
                BuildFailed(
                    source=SOURCE,
                    subject=_subject(row),
                    data=BuildFailedData(
                        build_id=row.id,
                        bento=_ref(row),
                        reason=reason,
                        message=text[-8000:],
                        retriable=retriable,
                    ),
                ),
            )
        BUILDS_FINISHED.labels(backend=row.backend, outcome="failed").inc()
        if row.started_at is not None:
            BUILD_DURATION.labels(backend=row.backend, outcome="failed").observe(
                _seconds_since(row.started_at)
            )
        log.warning("builder.build.failed", build_id=row.id, reason=reason, error=message[:500])
        return row

    def log_writer(self, build: BuildRow, first_seq: int) -> LogWriter:
        return LogWriter(self._pool, build.id, first_seq, self.settings.log_max_lines)

    async def last_log_seq(self, build: BuildRow) -> int:
        return await repo.last_log_seq(self._pool(), build.id)


def _seconds_since(moment: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


class LogWriter:
    """Build output into the database in batches (every 250 ms or 200 lines).

    Use as `async with writer:`; lines arrive through `await writer.line(text)`. At the end
    the log is trimmed to its last `max_lines`.
    """

    def __init__(
        self, pool: Callable[[], Pool], build_id: str, first_seq: int, max_lines: int
    ) -> None:
        self._pool = pool
        self.build_id = build_id
        self._next = first_seq
        self._max = max_lines
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LogWriter:
        self._ticker = asyncio.create_task(self._tick(), name=f"build-log-{self.build_id}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(Exception):
            await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        await self.flush()
        await repo.trim_logs(self._pool(), self.build_id, keep=self._max)

    async def line(self, text: str) -> None:
        self._pending.append(text)
        if len(self._pending) >= 200:
            await self.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            lines, self._pending = self._pending, []
            if not lines:
                return
            first, self._next = self._next, self._next + len(lines)
            await repo.append_logs(self._pool(), self.build_id, first, lines)

    @contextlib.asynccontextmanager
    async def section(self, title: str) -> AsyncIterator[None]:
        await self.line(f"--- {title}")
        yield
