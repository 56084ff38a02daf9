"""The `kubernetes` backend: one Job per build attempt, in the BentoRequest's namespace.

Before the Job is written, the builder checks the bento as the local backend does
(adapters.bento_archive.fetch_bento: its sha256 is the build's, and it unpacks safely: no
`..`, absolute paths, devices or escaping links, and it has its Dockerfile), in a task of
its own so that a reconcile never waits on a download. A refused bento fails the build with
the reason; the Job is never created. The Job (render.build_job) runs the configured buildah
image: it downloads the bento through a presigned URL the registry hands out (valid for
`job.download_url_seconds`; no S3 credentials anywhere in the cluster), refuses bytes whose
sha256 is not the one checked, builds its Dockerfile and pushes with the credentials of a
dockerconfigjson Secret mounted from `job.registry_secret`. Resources, node selector,
tolerations, service account and the deadline (`activeDeadlineSeconds`) come from the
settings, overridden by the request's `spec.builder` and `spec.imageBuildTimeout`. The Job
is owned by the BentoRequest, and its state (Complete / Failed with the reason Kubernetes
gives, e.g. DeadlineExceeded) is the build's; the digest is then read from the registry, so
a Job's claim is checked.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from services.builder import render
from services.builder.adapters.bento_archive import fetch_bento
from services.builder.backends import BuildOrder, BuildTasks, Outcome, Wake
from services.builder.repository import BuildRow
from services.builder.service import BuildService
from services.builder.settings import BuilderSettings
from shared.errors import PermanentError
from shared.kube.kinds import JOB
from shared.kube.objects import Objects
from shared.kube.watch import Watcher
from shared.logging import get_logger

log = get_logger(__name__)


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        service: BuildService,
        objects: Objects,
        api: client.ApiClient,
        settings: BuilderSettings,
        *,
        work_dir: Path,
        wake: Wake,
    ) -> None:
        self.service = service
        self.objects = objects
        self.batch = client.BatchV1Api(api)
        self.settings = settings
        self.work_dir = work_dir
        # Bentos being checked before their Job is written, and the ones refused.
        self._checks = BuildTasks(wake)

    def watchers(self, namespace: str) -> list[Watcher]:
        selector = "app.kubernetes.io/managed-by=ekiben-builder"
        if namespace:
            return [Watcher(self.batch.list_namespaced_job, namespace, label_selector=selector)]
        return [Watcher(self.batch.list_job_for_all_namespaces, label_selector=selector)]

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        # Jobs run on without us and the next leader polls them; a check cut short leaves
        # no Job, which the next leader finds absent and starts again.
        await self._checks.stop()

    def job(self, order: BuildOrder, download_url: str, sha256: str = "") -> dict[str, Any]:
        job = self.settings.job
        return render.build_job(
            order.request,
            build=order.build,
            image=job.image,
            download_url=download_url,
            archive_sha256=sha256,
            deadline_seconds=int(order.deadline_seconds),
            registry_secret=job.registry_secret,
            service_account=job.service_account,
            node_selector=job.node_selector,
            tolerations=job.tolerations,
            resources=job.resources,
            backoff_limit=job.backoff_limit,
            ttl_seconds=job.ttl_seconds_after_finished,
            build_args=order.build_args,
            tls_verify=self.settings.registry.tls_verify,
        )

    async def start(self, order: BuildOrder) -> None:
        build_id = order.build.id
        key = (order.request["metadata"]["namespace"], render.job_name(order.build))
        if self._checks.running(build_id) or await self.objects.get(JOB, key) is not None:
            return
        self._checks.start(build_id, order.key, lambda: self._submit(order))

    async def _submit(self, order: BuildOrder) -> Outcome | None:
        """Check the bento, then write the Job (None); a refusal is the build's Outcome."""
        build = order.build
        work = self.work_dir / build.id
        try:
            try:
                checked = await fetch_bento(
                    await self.service.presign_download(build),
                    work,
                    expected_digest=build.content_digest,
                )
                if not checked.has_dockerfile():
                    raise PermanentError(
                        f"bento {build.bento} has no env/docker/Dockerfile (built with "
                        "bentoml < 1.2?)",
                        reason="NoDockerfile",
                    )
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
            url = await self.service.presign_download(
                build, expires_seconds=self.settings.job.download_url_seconds
            )
            await self.objects.apply(JOB, self.job(order, url, checked.archive_sha256))
        except PermanentError as exc:
            return Outcome("failed", reason=exc.reason, message=str(exc))
        except Exception as exc:  # noqa: BLE001 - the download or the API: try another attempt
            log.warning("builder.job.submit_failed", build_id=build.id, error=repr(exc))
            return Outcome(
                "failed", reason=getattr(exc, "reason", None) or "BuilderError",
                message=f"the build Job could not be written: {exc}", retriable=True,
            )  # fmt: skip
        return None

    async def poll(self, build: BuildRow, request: dict[str, Any]) -> Outcome:
        name = render.job_name(build)
        if (refused := self._checks.outcome(build.id)) is not None:
            return refused
        if self._checks.running(build.id):
            return Outcome("running", job_name=name)
        job = await self.objects.get(JOB, (request["metadata"]["namespace"], name))
        state, reason, message = render.job_state(job)
        if state == "failed":
            return Outcome("failed", reason=reason, message=message, job_name=name)
        return Outcome(state, job_name=name)  # type: ignore[arg-type]

    def job_for(self, build: BuildRow) -> str | None:
        return render.job_name(build) if build.attempts else None

    async def cancel(self, build: BuildRow, request: dict[str, Any]) -> None:
        await self._checks.cancel(build.id)
        key = (request["metadata"]["namespace"], render.job_name(build))
        await self.objects.delete(JOB, key, propagation="Background")

    def forget(self, build_id: str) -> None:
        self._checks.forget(build_id)
