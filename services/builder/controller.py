"""The builder as a Kubernetes operator: watches, the work queue, the Lease, the sweep.

Wiring only (the logic is in reconcile.py, the manifests in render.py): BentoRequests in
the watched namespaces are the primary kind; the Bentos and build Jobs they own map back to
them. One replica reconciles at a time: the one holding the Lease `ekiben-builder` in the
builder's home namespace. While leading it also sweeps, every `SWEEP_SECONDS`, the builds
not finished and writes their BentoRequests again, so a build whose request could not be
written (the API server was down at the time) is never lost.

Any replica may announce a build (its event handlers run everywhere): announcing applies the
BentoRequest, which the leader's watch sees; the leader also enqueues it directly.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from services.builder import render
from services.builder.adapters.registry import RegistryClient
from services.builder.adapters.tools import ContainerTools
from services.builder.backends import Backend
from services.builder.backends.local import LocalBackend
from services.builder.reconcile import BuildReconciler
from services.builder.repository import BuildRow
from services.builder.service import BuildService
from services.builder.settings import BuilderSettings
from shared.contracts.builder import bento_resource_name
from shared.errors import Unavailable
from shared.kube import (
    Controller,
    EventRecorder,
    LeaderElector,
    Objects,
    Watcher,
    api_client,
    owned_by,
)
from shared.kube.kinds import BENTO, BENTO_REQUEST
from shared.kube.objects import api_message
from shared.kube.watch import ObjectKey
from shared.logging import get_logger
from shared.tasks import stop_tasks

log = get_logger(__name__)

FIELD_MANAGER = "ekiben-builder"
SWEEP_SECONDS = 30.0


def _identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class BuilderController:
    def __init__(self, settings: BuilderSettings, service: BuildService) -> None:
        self.settings = settings
        self.service = service
        self.api: client.ApiClient | None = None
        self.objects: Objects | None = None
        self.controller: Controller | None = None
        self.elector: LeaderElector | None = None
        self.backend: Backend | None = None
        self.reconciler: BuildReconciler | None = None
        self._registry: RegistryClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._requests: list[Watcher] = []

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self.api = api = await api_client(settings.kube)
        self.objects = Objects(api, field_manager=FIELD_MANAGER)
        identity = _identity()
        recorder = EventRecorder(api, controller=FIELD_MANAGER, instance=identity)
        tools = ContainerTools.from_settings(settings)
        self._registry = tools.registry_client()
        controller = Controller(
            "builder",
            self._reconcile,
            workers=settings.max_concurrent_builds + 2,
            on_permanent=self._on_permanent,
        )
        self.backend = self._backend(tools, api, controller)
        crs = client.CustomObjectsApi(api)
        bento_watchers = []
        self._requests = []
        for namespace in settings.kube.watched:
            requests = self._watcher(crs, BENTO_REQUEST.plural, namespace)
            self._requests.append(requests)
            controller.watch(requests)
            bentos = self._watcher(crs, BENTO.plural, namespace)
            bento_watchers.append(bentos)
            controller.watch(bentos, mapper=owned_by(BENTO_REQUEST.api_version, "BentoRequest"))
            for extra in getattr(self.backend, "watchers", lambda _ns: [])(namespace):
                controller.watch(extra, mapper=owned_by(BENTO_REQUEST.api_version, "BentoRequest"))
        self.reconciler = BuildReconciler(
            service=self.service,
            objects=self.objects,
            recorder=recorder,
            backend=self.backend,
            registry=self._registry,
            settings=settings,
            bentos=bento_watchers[0] if len(bento_watchers) == 1 else None,
        )
        self.controller = controller
        self.elector = LeaderElector(
            api,
            name=settings.kube.lease_name,
            namespace=settings.kube.namespace,
            identity=identity,
            lease_duration=int(settings.kube.lease_seconds),
            renew_deadline=settings.kube.lease_seconds * 2 / 3,
            retry_period=settings.kube.lease_seconds / 6,
        )
        self.service.announce = self.announce
        self._task = asyncio.create_task(self.elector.run(self._lead), name="builder-elector")

    def _backend(
        self, tools: ContainerTools, api: client.ApiClient, controller: Controller
    ) -> Backend:
        if self.settings.backend == "kubernetes":
            from services.builder.backends.kubernetes import KubernetesBackend  # noqa: PLC0415

            assert self.objects is not None
            return KubernetesBackend(
                self.service,
                self.objects,
                api,
                self.settings,
                work_dir=self.settings.containers.state_dir / "checks",
                wake=controller.enqueue,
            )
        return LocalBackend(
            self.service,
            tools,
            work_dir=self.settings.containers.state_dir / "work",
            wake=controller.enqueue,
            concurrency=self.settings.max_concurrent_builds,
        )

    @staticmethod
    def _watcher(crs: client.CustomObjectsApi, plural: str, namespace: str) -> Watcher:
        group, version = BENTO_REQUEST.group, BENTO_REQUEST.version
        if namespace:
            return Watcher(crs.list_namespaced_custom_object, group, version, namespace, plural)
        return Watcher(crs.list_cluster_custom_object, group, version, plural)

    async def stop(self) -> None:
        self.service.announce = None
        if self.elector is not None:
            self.elector.stop()
        if self._task is not None:
            await stop_tasks([self._task], grace=15.0)
            self._task = None
        if self._registry is not None:
            await self._registry.aclose()
        if self.api is not None:
            await self.api.close()
            self.api = None

    async def _lead(self) -> None:
        assert self.controller is not None
        assert self.backend is not None
        await self.backend.startup()
        try:
            async with self.controller.running():
                while True:
                    try:
                        await self.service.announce_unfinished()
                    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                        log.warning("builder.sweep.failed", error=repr(exc))
                    await asyncio.sleep(SWEEP_SECONDS)
        finally:
            await self.backend.shutdown()

    async def _reconcile(self, key: ObjectKey) -> Any:
        assert self.reconciler is not None
        return await self.reconciler.reconcile(key)

    async def _on_permanent(self, key: ObjectKey, exc: Any) -> None:
        assert self.reconciler is not None
        await self.reconciler.on_permanent(key, exc)

    # --- announcing ------------------------------------------------------------------

    def key_of(self, build: BuildRow) -> ObjectKey:
        name = bento_resource_name(build.organization, build.bento_name, build.bento_version)
        return (build.namespace, name)

    async def announce(self, build: BuildRow) -> None:
        """Write the BentoRequest of `build` and have it reconciled."""
        if self.objects is None:
            raise Unavailable("the builder is not connected to Kubernetes")
        version = await self.service.bento_version(
            build.organization, build.bento_name, build.bento_version
        )
        key = self.key_of(build)
        manifest = render.bento_request(
            resource_name=key[1],
            namespace=key[0],
            organization=build.organization,
            version=version,
            build_id=build.id,
        )
        # The watch's copy when this replica leads and has it (an idle sweep sends nothing);
        # a listed watch that does not know it says it is new (no GET before the apply).
        known = [w.known[key] for w in self._requests if key in w.known]
        listed = bool(self._requests) and all(w.resource_version for w in self._requests)
        leading = self.elector is not None and self.elector.is_leader
        reconciler = self.reconciler if leading and self.controller is not None else None
        if reconciler is not None:  # the tag's HEAD runs beside the apply, not after it
            reconciler.prefetch(build)
        try:
            if known or listed:
                written, _ = await self.objects.apply_if_changed(
                    BENTO_REQUEST, manifest, live=known[0] if known else None
                )
            else:
                written, _ = await self.objects.apply_if_changed(BENTO_REQUEST, manifest)
        except ApiException as exc:
            if reconciler is not None:
                reconciler.discard(build.id)
            if exc.status in (400, 422):
                # Refused for what it says, not for when: another try would be refused too.
                await self.service.failed(
                    build,
                    reason="InvalidBentoRequest",
                    message=f"the API server refused BentoRequest {key[0]}/{key[1]}: "
                    + api_message(exc),
                )
                return
            raise Unavailable(f"cannot write BentoRequest {key[0]}/{key[1]}: {exc.status}") from exc
        if reconciler is not None and self.controller is not None:
            reconciler.written(key, written)
            self.controller.enqueue(key)

    async def ready(self) -> None:
        if self.api is None:
            raise Unavailable("not connected to Kubernetes")
        await client.VersionApi(self.api).get_code()
