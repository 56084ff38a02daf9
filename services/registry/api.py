"""The registry's request/reply API: every command of `shared.contracts.registry`.

The gateway calls these over NATS (`ekiben.rpc.registry.<command>`); each is answered by
one replica of the registry (a queue group). Requests are validated against the contract's
models before a handler runs, and the handlers' `NotFound`, `Conflict`, `InvalidInput`,
`TooLarge` and `Unavailable` reach the caller as the same errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.registry.adapters.s3 import BlobStore
from services.registry.janitor import BlobJanitor
from services.registry.service import RegistryService
from services.registry.settings import RegistrySettings
from shared.contracts import registry as reg
from shared.db import Pool
from shared.service import BackendRuntime


@dataclass(frozen=True)
class Registry:
    """What `register` built: the logic, and the background task the app starts."""

    service: RegistryService
    janitor: BlobJanitor


def register(runtime: BackendRuntime, blobs: BlobStore) -> Registry:
    """Answer every registry command on `runtime`'s broker."""
    settings = runtime.settings
    if not isinstance(settings, RegistrySettings):
        raise TypeError("the registry runs with RegistrySettings")

    pool: Callable[[], Pool] = lambda: runtime.pool  # noqa: E731 - read at call time
    janitor = BlobJanitor(pool, blobs, poll_seconds=settings.janitor_poll_seconds)
    service = RegistryService(
        pool,
        blobs,
        on_blobs_queued=janitor.wake,
        upload_grace_seconds=settings.upload_grace_seconds,
    )
    janitor.periodic = service.fail_abandoned_uploads

    answer = runtime.responders.add
    answer(reg.GET_REPOSITORY, service.get_repository)
    answer(reg.CREATE_REPOSITORY, service.create_repository)
    answer(reg.UPDATE_REPOSITORY, service.update_repository)
    answer(reg.LIST_REPOSITORIES, service.list_repositories)
    answer(reg.DELETE_REPOSITORY, service.delete_repository)
    answer(reg.GET_VERSION, service.get_version)
    answer(reg.CREATE_VERSION, service.create_version)
    answer(reg.UPDATE_VERSION, service.update_version)
    answer(reg.LIST_VERSIONS, service.list_versions)
    answer(reg.DELETE_VERSION, service.delete_version)
    answer(reg.START_UPLOAD, service.start_upload)
    answer(reg.PRESIGN_UPLOAD, service.presign_upload)
    answer(reg.PRESIGN_PROXY_UPLOAD, service.presign_proxy_upload)
    answer(reg.START_MULTIPART, service.start_multipart)
    answer(reg.PRESIGN_PART, service.presign_part)
    answer(reg.COMPLETE_MULTIPART, service.complete_multipart)
    answer(reg.FINISH_UPLOAD, service.finish_upload)
    answer(reg.PRESIGN_DOWNLOAD, service.presign_download)
    missing = set(reg.COMMANDS) - set(runtime.responders.commands)
    if missing:
        raise RuntimeError(f"registry commands without a handler: {sorted(map(str, missing))}")
    return Registry(service=service, janitor=janitor)
