"""The `kubernetes` backend: one Job per build attempt, in the BentoRequest's namespace.

The Job (render.build_job) runs the configured buildah image: it downloads the bento through
a presigned URL the registry hands out (no S3 credentials anywhere in the cluster), builds
its Dockerfile and pushes with the credentials of a dockerconfigjson Secret mounted from
`job.registry_secret`. Resources, node selector, tolerations, service account and the
deadline (`activeDeadlineSeconds`) come from the settings, overridden by the request's
`spec.builder` and `spec.imageBuildTimeout`. The Job is owned by the BentoRequest, and its
state (Complete / Failed with the reason Kubernetes gives, e.g. DeadlineExceeded) is the
build's; the digest is then read from the registry, so a Job's claim is checked.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from services.builder import render
from services.builder.backends import BuildOrder, Outcome
from services.builder.repository import BuildRow
from services.builder.service import BuildService
from services.builder.settings import BuilderSettings
from shared.kube.kinds import JOB
from shared.kube.objects import Objects
from shared.kube.watch import Watcher


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        service: BuildService,
        objects: Objects,
        api: client.ApiClient,
        settings: BuilderSettings,
    ) -> None:
        self.service = service
        self.objects = objects
        self.batch = client.BatchV1Api(api)
        self.settings = settings

    def watchers(self, namespace: str) -> list[Watcher]:
        selector = "app.kubernetes.io/managed-by=ekiben-builder"
        if namespace:
            return [Watcher(self.batch.list_namespaced_job, namespace, label_selector=selector)]
        return [Watcher(self.batch.list_job_for_all_namespaces, label_selector=selector)]

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None  # Jobs run on without us; the next leader polls them

    def job(self, order: BuildOrder, download_url: str) -> dict[str, Any]:
        job = self.settings.job
        return render.build_job(
            order.request,
            build=order.build,
            image=job.image,
            download_url=download_url,
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
        key = (order.request["metadata"]["namespace"], render.job_name(order.build))
        if await self.objects.get(JOB, key) is not None:
            return
        url = await self.service.presign_download(order.build)
        await self.objects.apply(JOB, self.job(order, url))

    async def poll(self, build: BuildRow, request: dict[str, Any]) -> Outcome:
        name = render.job_name(build)
        job = await self.objects.get(JOB, (request["metadata"]["namespace"], name))
        state, reason, message = render.job_state(job)
        if state == "failed":
            return Outcome("failed", reason=reason, message=message, job_name=name)
        return Outcome(state, job_name=name)  # type: ignore[arg-type]

    def job_for(self, build: BuildRow) -> str | None:
        return render.job_name(build) if build.attempts else None

    async def cancel(self, build: BuildRow, request: dict[str, Any]) -> None:
        key = (request["metadata"]["namespace"], render.job_name(build))
        await self.objects.delete(JOB, key, propagation="Background")
