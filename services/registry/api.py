"""The registry's request/reply API: every command of `shared.contracts.registry`.

The gateway calls these over NATS (`ekiben.rpc.registry.<command>`); each is answered by
one replica of the registry (a queue group). Requests are validated against the contract's
models before a handler runs, and the handlers' `NotFound`, `Conflict`, `InvalidInput`,
`TooLarge` and `Unavailable` reach the caller as the same errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from services.registry.adapters.s3 import BlobStore
from services.registry.janitor import BlobJanitor
from services.registry.service import RegistryService
from services.registry.settings import RegistrySettings
from shared.contracts.registry import COMMANDS, SERVICE
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

    def pool() -> Any:
        return runtime.pool

    janitor = BlobJanitor(pool, blobs, poll_seconds=settings.janitor_poll_seconds)
    service = RegistryService(pool, blobs, on_blobs_queued=janitor.wake)

    async def sweep() -> int:
        return await service.fail_abandoned_uploads(settings.abandoned_upload_seconds)

    janitor.periodic = sweep

    handlers: dict[str, Callable[[Any], Awaitable[BaseModel]]] = {
        "repository.get": service.get_repository,
        "repository.create": service.create_repository,
        "repository.update": service.update_repository,
        "repository.list": service.list_repositories,
        "repository.delete": service.delete_repository,
        "version.get": service.get_version,
        "version.create": service.create_version,
        "version.update": service.update_version,
        "version.list": service.list_versions,
        "version.delete": service.delete_version,
        "upload.start": service.start_upload,
        "upload.presign": service.presign_upload,
        "upload.multipart.start": service.start_multipart,
        "upload.multipart.presign_part": service.presign_part,
        "upload.multipart.complete": service.complete_multipart,
        "upload.finish": service.finish_upload,
        "download.presign": service.presign_download,
    }
    if handlers.keys() != COMMANDS.keys():
        raise RuntimeError(
            f"registry handlers and contract differ: {sorted(handlers.keys() ^ COMMANDS.keys())}"
        )
    for command, (request_model, _) in COMMANDS.items():
        runtime.responders.add(
            service=SERVICE,
            command=command,
            request_model=request_model,
            handler=handlers[command],
        )
    return Registry(service=service, janitor=janitor)
