"""The controller runtime the builder and the deployer stand on.

The pieces, each a small module:

- `watch`: `Watcher`, list-then-watch of one collection, resumable, relisting on 410.
- `queue`: `WorkQueue`, per-key de-duplication, delays and exponential backoff.
- `controller`: `Controller`, triggers (watches, mapped watches, `enqueue`, resync) feeding
  workers that call `reconcile(key)`; temporary errors back off, permanent ones wait for a
  spec change. `Result(requeue_after=)` asks for another look.
- `mappers`: `parents_of`/`owned_by`, `labelled`, `referenced_by`: child events to parent keys.
- `objects`: `Objects`, dict-based get/list/create/delete, server-side `apply`,
  `apply_if_changed`, conflict-safe `update_status`, finalizers; `owner_reference`.
- `kinds`: `Kind`, the REST path of a kind, and the kinds Ekiben uses.
- `conditions`: `set_condition`, `get_condition`, `is_true`, `status_differs`.
- `events`: `EventRecorder`, Kubernetes Events with series for repeats.
- `leader`: `LeaderElector`, one active replica per Lease.
- `client`: `api_client(settings)`, from a kubeconfig or in-cluster.

Objects are plain JSON dicts: custom resources have no generated models, and one shape for
built-in and custom kinds keeps reconcilers simple. A reconciler and its wiring::

    async def reconcile(key: ObjectKey) -> Result | None:
        request = await objects.get(BENTO_REQUEST, key)       # re-read, every time
        if request is None:
            return None                                       # gone: owner refs clean up
        job = render_job(request, owner=owner_reference(request))  # pure, unit-tested
        await objects.apply_if_changed(JOB, job, live=jobs.known.get(key))  # idle: no I/O
        await objects.update_status(BENTO_REQUEST, key, lambda obj: job_status(obj, jobs))
        return Result(requeue_after=30) if still_building(request) else None

    controller = Controller("builder", reconcile, workers=4, on_permanent=mark_failed)
    controller.watch(requests)                                # the primary Watcher
    controller.watch(jobs, mapper=owned_by(BENTO_REQUEST.api_version, "BentoRequest"))
    elector = LeaderElector(api, name="ekiben-builder", namespace=ns, identity=pod_name)
    await elector.run(controller.run)                         # reconcile only while leading
    # and a bus handler: controller.enqueue((ns, request_name)) when a bento is pushed
"""

from shared.kube.client import api_client, api_client_from_kubeconfig, api_client_in_cluster
from shared.kube.conditions import get_condition, is_true, set_condition, status_differs
from shared.kube.controller import Controller, Result
from shared.kube.events import EventRecorder
from shared.kube.kinds import Kind
from shared.kube.leader import LeaderElector
from shared.kube.mappers import Mapper, labelled, owned_by, parents_of, referenced_by
from shared.kube.objects import (
    APPLIED_HASH_ANNOTATION,
    Objects,
    has_finalizer,
    owner_reference,
    with_finalizer,
    without_finalizer,
)
from shared.kube.queue import QueueShutDown, WorkQueue
from shared.kube.watch import EventType, ObjectKey, Watcher, WatchEvent

__all__ = [
    "APPLIED_HASH_ANNOTATION",
    "Controller",
    "EventRecorder",
    "EventType",
    "Kind",
    "LeaderElector",
    "Mapper",
    "ObjectKey",
    "Objects",
    "QueueShutDown",
    "Result",
    "WatchEvent",
    "Watcher",
    "WorkQueue",
    "api_client",
    "api_client_from_kubeconfig",
    "api_client_in_cluster",
    "get_condition",
    "has_finalizer",
    "is_true",
    "labelled",
    "owned_by",
    "owner_reference",
    "parents_of",
    "referenced_by",
    "set_condition",
    "status_differs",
    "with_finalizer",
    "without_finalizer",
]
