"""The BentoRequest reconciler: image exists? else build and push; then the Bento.

`reconcile(key)` reads the BentoRequest and the build that serves it, and moves one step:

1. The bento version is resolved through the registry and its content-derived tag computed
   (render.image_tag). The build named by the request's `ekiben.dev/build-id` annotation
   serves it when its tag matches; otherwise the newest build of that tag; otherwise (a
   kubectl-applied request, a changed spec) a new build is recorded.
2. A failed build stays failed for the generation it was built for: it is tried again only
   when the spec changes (another generation) or a rebuild is asked for (a new value of the
   `ekiben.dev/rebuild` annotation, or `POST /builds` with `force`). Never a hot loop.
3. `pending`: unless forced, a manifest HEAD of the tag; there already: succeeded
   (`ImageFound`). Otherwise the build starts on the backend (`build.started`).
4. `building`: the backend says how it goes. Unknown to it (this process restarted, the
   Job vanished): the tag is looked up once more (an image pushed just before a crash is
   adopted, never pushed twice), else the build is attempted again, up to `MAX_ATTEMPTS`.
   A build past its deadline is stopped and fails with `DeadlineExceeded`.
5. `succeeded`: the Bento of the same name is applied (image by digest, the bento's
   services and models, owned by the request), only when it differs.

Status (conditions ImageExists, ImageBuilding, BentoAvailable with observedGeneration) is
written only when it changes; each step that happens records one Kubernetes Event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.builder import render
from services.builder.adapters.registry import RegistryClient
from services.builder.backends import Backend, BuildOrder, Outcome
from services.builder.repository import BuildRow
from services.builder.service import BuildService
from services.builder.settings import BuilderSettings
from shared.contracts.builder import (
    BUILD_ID_ANNOTATION,
    ORGANIZATION_LABEL,
    REBUILD_ANNOTATION,
)
from shared.contracts.vocabulary import BuildStatus
from shared.errors import EkibenError, PermanentError
from shared.kube.conditions import set_condition
from shared.kube.controller import Result
from shared.kube.events import EventRecorder
from shared.kube.kinds import BENTO, BENTO_REQUEST
from shared.kube.objects import Objects
from shared.kube.watch import ObjectKey, Watcher
from shared.logging import get_logger

log = get_logger(__name__)

MAX_ATTEMPTS = 3
# How long a manifest HEAD started beside an announcement's apply stays an answer.
PREFETCH_SECONDS = 5.0
# How often a running build is looked at when nothing wakes the reconciler earlier.
POLL_SECONDS = 30.0


class BuildReconciler:
    def __init__(
        self,
        *,
        service: BuildService,
        objects: Objects,
        recorder: EventRecorder,
        backend: Backend,
        registry: RegistryClient,
        settings: BuilderSettings,
        bentos: Watcher | None = None,
    ) -> None:
        self.service = service
        self.objects = objects
        self.recorder = recorder
        self.backend = backend
        self.registry = registry
        self.settings = settings
        self.bentos = bentos
        # The BentoRequest this process has just written, for the reconcile it enqueues: the
        # first look at a new request costs no GET (a later change comes with its watch event).
        self._written: dict[ObjectKey, dict[str, Any]] = {}
        # Manifest HEADs started beside the apply of a new build's request (by build id):
        # the reconcile that follows takes the answer instead of asking the registry again.
        self._prefetched: dict[str, tuple[float, asyncio.Task[str | None]]] = {}

    def written(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        self._written[key] = obj

    def prefetch(self, build: BuildRow) -> None:
        """Start the tag's manifest HEAD now, for the reconcile `build`'s apply enqueues."""
        if build.force or build.status is not BuildStatus.PENDING:
            return
        now = time.monotonic()
        for build_id, (since, _) in list(self._prefetched.items()):
            if now - since > PREFETCH_SECONDS:
                self.discard(build_id)  # its reconcile went another way
        task = asyncio.create_task(self._lookup(build))
        # Its failure is the reconcile's to report (awaiting it raises); unawaited, it is quiet.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._prefetched[build.id] = (now, task)

    def discard(self, build_id: str) -> None:
        """Drop a prefetched HEAD nobody will take (the apply failed, the reconcile went on)."""
        found = self._prefetched.pop(build_id, None)
        if found is not None:
            found[1].cancel()

    # --- the loop body ------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result | None:
        request = self._written.pop(key, None) or await self.objects.get(BENTO_REQUEST, key)
        if request is None or (request.get("metadata") or {}).get("deletionTimestamp"):
            return None  # gone: its Bento goes with it (owner reference)
        metadata = request["metadata"]
        generation = int(metadata.get("generation") or 1)
        spec = request.get("spec") or {}
        organization = (metadata.get("labels") or {}).get(
            ORGANIZATION_LABEL
        ) or self.settings.default_organization
        build = await self._build_for(request, organization, generation)
        result: Result | None = None
        outcome: Outcome | None = None
        if build.status is BuildStatus.PENDING:
            build, result = await self._pending(request, key, build)
        elif build.status is BuildStatus.BUILDING:
            build, result, outcome = await self._building(request, key, build)
        bento_ready = False
        if build.status is BuildStatus.SUCCEEDED:
            bento_ready = await self._publish(request, key, organization, build)
        job_name = (outcome.job_name if outcome else None) or self.backend.job_for(build)
        await self._write_status(key, generation, build, bento_ready, job_name, request)
        del spec
        return result

    async def on_permanent(self, key: ObjectKey, exc: EkibenError) -> None:
        """A request that cannot be built as it is: a False condition, a Warning Event."""
        reason = getattr(exc, "reason", None) or "Failed"
        message = str(exc)

        def failed(obj: dict[str, Any]) -> dict[str, Any]:
            status: dict[str, Any] = dict(obj.get("status") or {})
            conditions = list(status.get("conditions") or [])
            generation = int(obj["metadata"].get("generation") or 1)
            for type_ in ("ImageBuilding", "BentoAvailable"):
                set_condition(
                    conditions, type_, "False", reason, message, observed_generation=generation
                )
            status.update(conditions=conditions, phase="failed", observedGeneration=generation)
            return status

        obj = await self.objects.update_status(BENTO_REQUEST, key, failed)
        if obj is not None:
            await self.recorder.warning(obj, reason, message[:1000])

    # --- which build --------------------------------------------------------------------

    async def _build_for(
        self, request: dict[str, Any], organization: str, generation: int
    ) -> BuildRow:
        metadata, spec = request["metadata"], request.get("spec") or {}
        name, version = render.split_tag(str(spec.get("bentoTag", "")))
        bento_version = await self.service.bento_version(organization, name, version)
        repository, tag, _ = self.service.target(bento_version, spec.get("buildArgs"))
        repository = self._repository_override(spec, repository)
        namespace = metadata["namespace"]
        annotations = metadata.get("annotations") or {}
        build: BuildRow | None = None
        if build_id := annotations.get(BUILD_ID_ANNOTATION):
            build = await self.service.get(build_id)
            if build is not None and (build.image_tag != tag or build.namespace != namespace):
                build = None
        if build is None:
            build = await self.service.latest(organization, name, version, tag, namespace)
        rebuild = annotations.get(REBUILD_ANNOTATION)
        finished = build is not None and build.status in (
            BuildStatus.SUCCEEDED,
            BuildStatus.FAILED,
        )
        if build is not None and build.generation is None:
            await self.service.set_generation(build, generation)
            build = build.model_copy(update={"generation": generation})
        new_generation = (
            build is not None
            and build.status is BuildStatus.FAILED
            and build.generation is not None
            and build.generation != generation
        )
        asked = bool(rebuild) and finished and build is not None and build.rebuild_token != rebuild
        if build is not None and not new_generation and not asked:
            return build
        created = await self.service.create_for_request(
            organization=organization,
            version=bento_version,
            namespace=namespace,
            generation=generation,
            force=bool(spec.get("forceBuild")) or asked,
            build_args=spec.get("buildArgs"),
            image_repository=repository,
            rebuild_token=rebuild,
        )
        await self.objects.patch(
            BENTO_REQUEST,
            (namespace, metadata["name"]),
            {"metadata": {"annotations": {BUILD_ID_ANNOTATION: created.id}}},
        )
        return created

    def _repository_override(self, spec: Mapping[str, Any], computed: str) -> str:
        image = spec.get("image")
        if not image:
            return computed
        repository = str(image).split("@", 1)[0]
        if ":" in repository.rsplit("/", 1)[-1]:
            repository = repository.rsplit(":", 1)[0]
        if repository.split("/", 1)[0] != self.settings.registry.host:
            raise PermanentError(
                f"spec.image {image!r} is not on the builder's registry "
                f"{self.settings.registry.host}",
                reason="UnsupportedRegistry",
            )
        return repository

    # --- steps --------------------------------------------------------------------------

    async def _pending(
        self, request: dict[str, Any], key: ObjectKey, build: BuildRow
    ) -> tuple[BuildRow, Result | None]:
        if not build.force and (digest := await self._prefetched_lookup(build)) is not None:
            done = await self.service.succeeded(
                build, digest=digest, reason="ImageFound", message="already in the registry"
            )
            if done is not None:
                await self.recorder.normal(
                    request, "ImageFound", f"{build.target} is in the registry: {digest}"
                )
                return done, None
        started = await self.service.started(build)
        if started is None:  # moved on meanwhile: look again
            return (await self.service.get(build.id)) or build, Result(requeue_after=1.0)
        await self.backend.start(self._order(request, key, started))
        await self.recorder.normal(
            request, "BuildStarted",
            f"build {started.id} of {started.bento} on {started.backend}: {started.target}",
        )  # fmt: skip
        return started, Result(requeue_after=POLL_SECONDS)

    async def _building(  # noqa: PLR0911 - one return per way a build ends
        self, request: dict[str, Any], key: ObjectKey, build: BuildRow
    ) -> tuple[BuildRow, Result | None, Outcome]:
        outcome = await self.backend.poll(build, request)
        deadline = self._deadline(request)
        if outcome.state == "running":
            started = build.started_at or build.created_at
            elapsed = (datetime.now(UTC) - started).total_seconds()
            if elapsed <= deadline + 30:  # the backend's own limit fires first
                return build, Result(requeue_after=min(POLL_SECONDS, deadline)), outcome
            await self.backend.cancel(build, request)
            outcome = Outcome(
                "failed", reason="DeadlineExceeded",
                message=f"the build ran past its deadline of {deadline:.0f}s and was stopped",
                job_name=outcome.job_name,
            )  # fmt: skip
        if outcome.state == "succeeded":
            digest = outcome.digest or await self._lookup(build)
            if digest is None:
                outcome = Outcome(
                    "failed", reason="ImageMissing",
                    message=f"the build reported success but {build.target} is not in the "
                    "registry",
                    job_name=outcome.job_name,
                )  # fmt: skip
        if outcome.state == "succeeded" and (digest := outcome.digest or digest):
            done = await self.service.succeeded(build, digest=digest, reason="ImagePushed")
            self._forget(build)
            if done is not None:
                await self.recorder.normal(
                    request, "BuildSucceeded", f"build {build.id}: {done.image}"
                )
                return done, None, outcome
            return (await self.service.get(build.id)) or build, None, outcome
        if outcome.state == "absent" or (outcome.state == "failed" and outcome.retriable):
            if (digest := await self._lookup(build)) is not None:
                done = await self.service.succeeded(build, digest=digest, reason="ImagePushed")
                self._forget(build)
                return done or build, None, outcome
            if build.attempts < MAX_ATTEMPTS:
                why = outcome.message or "the build is no longer running (builder restarted)"
                again = await self.service.started(build, restart=True)
                if again is None:
                    return build, Result(requeue_after=1.0), outcome
                self._forget(build)
                await self.backend.start(self._order(request, key, again))
                await self.recorder.warning(
                    request, "BuildRestarted", f"attempt {again.attempts} of {build.id}: {why}"
                )
                return again, Result(requeue_after=POLL_SECONDS), outcome
            outcome = Outcome(
                "failed", reason=outcome.reason or "Interrupted",
                message=(outcome.message or "the build was interrupted")
                + f" ({build.attempts} attempts)",
                tail=outcome.tail, job_name=outcome.job_name,
            )  # fmt: skip
        failed = await self.service.failed(
            build,
            reason=outcome.reason or "BuildError",
            message=outcome.message or "the build failed",
            tail=outcome.tail,
            retriable=outcome.retriable,
        )
        self._forget(build)
        if failed is not None:
            await self.recorder.warning(
                request, outcome.reason or "BuildFailed", f"build {build.id}: {outcome.message}"
            )
            return failed, None, outcome
        return (await self.service.get(build.id)) or build, None, outcome

    async def _publish(
        self, request: dict[str, Any], key: ObjectKey, organization: str, build: BuildRow
    ) -> bool:
        assert build.image is not None
        desired = render.bento(request, organization=organization, image=build.image)
        live: Any = self.bentos.known.get(key) if self.bentos is not None else None
        if self.bentos is None:
            live = await self.objects.get(BENTO, key)
        _, wrote = await self.objects.apply_if_changed(BENTO, desired, live=live)
        if wrote:
            await self.recorder.normal(request, "BentoPublished", f"Bento {key[1]}: {build.image}")
        return True

    async def _write_status(
        self,
        key: ObjectKey,
        generation: int,
        build: BuildRow,
        bento_ready: bool,
        job_name: str | None,
        read: dict[str, Any],
    ) -> None:
        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            status, _ = render.request_status(
                obj.get("status"),
                generation=generation,
                build=build,
                bento_ready=bento_ready,
                job_name=job_name,
            )
            return status

        await self.objects.update_status(BENTO_REQUEST, key, mutate, read=read)

    # --- helpers ------------------------------------------------------------------------

    def _order(self, request: dict[str, Any], key: ObjectKey, build: BuildRow) -> BuildOrder:
        spec = request.get("spec") or {}
        return BuildOrder(
            build=build,
            request=request,
            key=key,
            deadline_seconds=self._deadline(request),
            build_args={**self.settings.build_args, **(spec.get("buildArgs") or {})},
        )

    def _deadline(self, request: dict[str, Any]) -> float:
        """The request's `imageBuildTimeout`, else the backend's setting."""
        spec = request.get("spec") or {}
        try:
            deadline = render.parse_duration(spec.get("imageBuildTimeout"))
        except ValueError as exc:
            raise PermanentError(str(exc), reason="InvalidSpec") from exc
        if deadline:
            return deadline
        if self.settings.backend == "kubernetes":
            return float(self.settings.job.active_deadline_seconds)
        return self.settings.containers.build_timeout_seconds

    async def _prefetched_lookup(self, build: BuildRow) -> str | None:
        found = self._prefetched.get(build.id)
        if found is None or time.monotonic() - found[0] > PREFETCH_SECONDS:
            self.discard(build.id)
            return await self._lookup(build)
        del self._prefetched[build.id]
        return await found[1]

    async def _lookup(self, build: BuildRow) -> str | None:
        repository = build.image_repository.split("/", 1)[1]
        return await self.registry.manifest_digest(repository, build.image_tag)

    def _forget(self, build: BuildRow) -> None:
        forget = getattr(self.backend, "forget", None)
        if forget is not None:
            forget(build.id)
