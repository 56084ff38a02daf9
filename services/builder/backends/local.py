"""The `local` backend: buildah on this host, for `ekiben up` and the tests.

A build runs as an asyncio task of this process: download the bento archive through a
presigned URL the registry hands out (the builder never holds S3 credentials), unpack it
safely (adapters.bento_archive refuses `..`, absolute paths, devices and escaping links),
`buildah bud --layers` its own `env/docker/Dockerfile` (the layer store under the state
directory is kept between builds: a code-only change rebuilds from `COPY . ./`), then push.

Right before the push the registry is asked for the tag: a tag is never pushed twice, so a
build interrupted after its push (and retried) adopts the image that is there instead of
putting a second one under the same tag. Every output line goes to the build's log.

At most `max_concurrent_builds` run at once; the others wait for a slot in `running`.

The store keeps the newest `containers.keep_images` built images and the cache layers
under them. When the last running build ends, older built images are removed (buildah
drops the untagged layers only they used); a build that starts meanwhile waits for that.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.builder.adapters.bento_archive import fetch_bento
from services.builder.adapters.buildah import BuildFailed, PushRefused, StoredImage
from services.builder.adapters.process import ToolTimeout
from services.builder.adapters.tools import ContainerTools
from services.builder.backends import BuildOrder, BuildTasks, Outcome, Wake
from services.builder.metrics import BUILDS_IN_PROGRESS
from services.builder.repository import BuildRow
from services.builder.service import BuildService, LogWriter
from shared.errors import EkibenError, PermanentError
from shared.logging import get_logger

log = get_logger(__name__)


class LocalBackend:
    name = "local"

    def __init__(
        self,
        service: BuildService,
        tools: ContainerTools,
        *,
        work_dir: Path,
        wake: Wake,
        concurrency: int = 2,
    ) -> None:
        self.service = service
        self.tools = tools
        self.work_dir = work_dir
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks = BuildTasks(wake)
        # Builds using the store now, and the pruning of it that runs when they are none.
        self._active = 0
        self._pruning: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        # Nothing builds here yet: working containers in the store were left by a killed
        # process. (Scratch directories are per build and emptied when it starts again.)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.tools.prune_on_start:
            return
        try:
            removed = await self.tools.buildah.prune_working_containers()
        except EkibenError as exc:
            log.warning("builder.local.prune_failed", error=str(exc))
        else:
            if removed:
                log.info("builder.local.pruned", containers=len(removed))

    async def shutdown(self) -> None:
        await self._tasks.stop()
        if self._pruning is not None:
            await self._pruning

    async def start(self, order: BuildOrder) -> None:
        self._tasks.start(order.build.id, order.key, lambda: self._run(order))

    async def poll(self, build: BuildRow, request: dict[str, Any]) -> Outcome:
        if (result := self._tasks.outcome(build.id)) is not None:
            return result
        return Outcome("running" if self._tasks.running(build.id) else "absent")

    async def cancel(self, build: BuildRow, request: dict[str, Any]) -> None:
        await self._tasks.cancel(build.id)

    def job_for(self, build: BuildRow) -> str | None:
        return None

    def forget(self, build_id: str) -> None:
        self._tasks.forget(build_id)

    # --- one build --------------------------------------------------------------------

    async def _run(self, order: BuildOrder) -> Outcome:
        build = order.build
        began = time.monotonic()
        first = await self.service.last_log_seq(build) + 1
        try:
            async with self._slots, self.service.log_writer(build, first) as logs:
                BUILDS_IN_PROGRESS.labels(backend=self.name).inc()
                try:
                    await self._enter_store()
                    try:
                        outcome = await self._build(order, logs, began)
                    finally:
                        self._leave_store()
                finally:
                    BUILDS_IN_PROGRESS.labels(backend=self.name).dec()
                await logs.line(f"--- {outcome.state}: {outcome.digest or outcome.reason}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("builder.local.crashed", build_id=build.id)
            outcome = Outcome(
                "failed", reason="BuilderError", message=f"{type(exc).__name__}: {exc}",
                retriable=True,
            )  # fmt: skip
        finally:
            shutil.rmtree(self.work_dir / build.id, ignore_errors=True)
        return outcome

    async def _build(  # noqa: PLR0911 - one outcome per way a build ends
        self, order: BuildOrder, logs: LogWriter, began: float
    ) -> Outcome:
        build = order.build
        work = self.work_dir / build.id
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            await logs.line(f"--- attempt {build.attempts}: {build.bento} -> {build.target}")
            url = await self.service.presign_download(build)
            extracted = await fetch_bento(url, work, expected_digest=build.content_digest)
            await logs.line(
                f"--- downloaded the bento archive ({extracted.archive_bytes} B, "
                f"sha256:{extracted.archive_sha256})"
            )
            if not extracted.has_dockerfile():
                raise PermanentError(  # noqa: TRY301 - mapped to an outcome below
                    f"bento {build.bento} has no env/docker/Dockerfile (built with bentoml < 1.2?)",
                    reason="NoDockerfile",
                )
            await logs.line(f"--- unpacked {extracted.entries} entries, {extracted.total_bytes} B")
            remaining = order.deadline_seconds - (time.monotonic() - began)
            if remaining <= 0:
                raise ToolTimeout(  # noqa: TRY301
                    "deadline passed before the build started", tail=(), seconds=0
                )
            built = await self.tools.buildah.build(
                extracted.root,
                extracted.dockerfile,
                build.target,
                build_args=order.build_args,
                labels=_image_labels(build),
                log_sink=logs.line,
                time_limit=remaining,
            )
            await logs.line(
                f"--- built {built.image_id[:12]} in {built.seconds:.1f}s "
                f"({built.cached_steps}/{built.steps} steps from cache)"
            )
            digest = await self._existing(build)
            if digest is not None:
                await logs.line(f"--- {build.target} is in the registry already: {digest}")
                return Outcome("succeeded", digest=digest)
            registry = self.tools.registry
            pushing = time.monotonic()
            digest = await self.tools.buildah.push(
                build.target,
                build.target,
                tls_verify=registry.tls_verify,
                auth=self.tools.registry_auth,
                log_sink=logs.line,
            )
            await logs.line(
                f"--- pushed {build.image_repository}@{digest} in {time.monotonic() - pushing:.1f}s"
            )
            return Outcome("succeeded", digest=digest)
        except BuildFailed as exc:
            return Outcome(
                "failed", reason="BuildError",
                message=f"the Dockerfile of {build.bento} did not build (buildah exit "
                f"{exc.exit_code})",
                tail=exc.tail,
            )  # fmt: skip
        except ToolTimeout as exc:
            return Outcome(
                "failed", reason="DeadlineExceeded",
                message=f"the build ran past its deadline of {order.deadline_seconds:.0f}s "
                "and was stopped",
                tail=exc.tail,
            )  # fmt: skip
        except PushRefused as exc:
            return Outcome("failed", reason=exc.reason, message=str(exc))
        except PermanentError as exc:
            return Outcome("failed", reason=exc.reason, message=str(exc))
        except EkibenError as exc:
            reason = getattr(exc, "reason", None) or "Unavailable"
            return Outcome("failed", reason=reason, message=str(exc), retriable=True)

    # --- the layer store ---------------------------------------------------------------

    async def _enter_store(self) -> None:
        # No await between the check and the count: a pruning never starts under a build.
        while self._pruning is not None:
            await asyncio.shield(self._pruning)
        self._active += 1

    def _leave_store(self) -> None:
        self._active -= 1
        if self._active == 0 and self.tools.keep_images > 0:
            self._pruning = asyncio.create_task(self._prune(), name="builder-store-prune")

    async def _prune(self) -> None:
        keep = self.tools.keep_images
        prefix = f"{self.tools.registry.host}/{self.tools.registry.repository('')}"
        removed = 0
        try:
            for name in stale_images(await self.tools.buildah.images(), prefix, keep):
                try:
                    await self.tools.buildah.remove_images(name)
                except (EkibenError, ToolTimeout) as exc:  # in use by a container, say
                    log.warning("builder.local.store_prune_failed", image=name, error=str(exc))
                else:
                    removed += 1
        except (EkibenError, ToolTimeout) as exc:
            log.warning("builder.local.store_prune_failed", error=str(exc))
        finally:
            self._pruning = None
        if removed:
            log.info("builder.local.store_pruned", images=removed, kept=keep)

    async def _existing(self, build: BuildRow) -> str | None:
        repository = build.image_repository.split("/", 1)[1]
        async with self.tools.registry_client() as registry:
            return await registry.manifest_digest(repository, build.image_tag)


def stale_images(images: Iterable[StoredImage], prefix: str, keep: int) -> list[str]:
    """The names to remove so that only the `keep` newest images built here (named under
    `prefix`) stay. Other images (base images) are never touched."""
    built = sorted(
        (image for image in images if any(n.startswith(prefix) for n in image.names)),
        key=lambda image: image.created,
        reverse=True,
    )
    return [n for image in built[keep:] for n in image.names if n.startswith(prefix)]


def _image_labels(build: BuildRow) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": build.bento_name,
        "org.opencontainers.image.version": build.bento_version,
        "dev.ekiben.organization": build.organization,
        "dev.ekiben.bento": build.bento,
        "dev.ekiben.build-id": build.id,
    }
