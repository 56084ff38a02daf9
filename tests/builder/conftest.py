"""The builder running for real: its own runtime beside the registry and the gateway.

`builder_stack(**settings)` starts, in this process, the registry and the gateway (the
gateway served over HTTP so the real `bentoml` client can push to it) and the builder,
all on the session's NATS, PostgreSQL and SeaweedFS, with the builder pushing to the
session's OCI registry (holding the Debian-built Python base image, docker.io mirrored to
it) and reconciling BentoRequests on the real Kubernetes API server in a fresh namespace.
The layer store is the image tests' one under the cache directory, so builds run warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client
from pydantic import SecretStr

from services.builder.app import create_runtime
from services.builder.controller import BuilderController
from services.builder.settings import BuilderKubeSettings, BuilderSettings
from shared.contracts import registry as reg
from shared.contracts.builder import bento_resource_name
from shared.db import create_pool
from shared.devstack.kube import KubeControlPlane
from shared.devstack.oci import OciRegistry
from shared.devstack.servers import S3Server
from shared.errors import Conflict
from shared.kube.kinds import BENTO, BENTO_REQUEST
from shared.kube.objects import Objects
from shared.service import BackendRuntime
from shared.settings import NatsSettings, PostgresSettings
from tests.fixtures.bentoml import Client, bentoml_client
from tests.fixtures.manifests import bento_manifest
from tests.fixtures.stack import Stack, registry_settings, running_stack
from tests.images.conftest import (
    busybox_context,
    busybox_image,
    container_env,
    container_tools,
    containers_settings,
    oci_registry,
    python_base_image,
    target_registry,
)
from tests.k8s.conftest import kube_api, kube_control_plane, kube_namespace

__all__ = [
    "bentoml_client",
    "busybox_context",
    "busybox_image",
    "container_env",
    "container_tools",
    "kube_api",
    "kube_control_plane",
    "kube_namespace",
    "oci_registry",
    "python_base_image",
]

GREETER = Path(__file__).parents[1] / "images" / "bento-greeter"


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, timeout: float, what: str, every: float = 0.2
) -> Any:
    """Poll `probe` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class BuilderStack:
    stack: Stack
    builder: BackendRuntime | None  # None: the builder runs elsewhere (a process)
    controller: BuilderController | None
    settings: BuilderSettings
    namespace: str
    objects: Objects
    registry: OciRegistry
    pool: Any  # the builder's schema

    def resource_name(self, name: str, version: str, organization: str = "default") -> str:
        return bento_resource_name(organization, name, version)

    async def builds(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT * FROM builds ORDER BY created_at")
        return [dict(r) for r in rows]

    async def build_done(self, build_id: str, timeout: float = 900.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            row = await self.pool.fetchrow("SELECT * FROM builds WHERE id = $1", build_id)
            if row is not None and row["status"] in ("succeeded", "failed"):
                return dict(row)
            return None

        result: dict[str, Any] = await wait_for(probe, timeout=timeout, what=f"build {build_id}")
        return result

    async def request(self, name: str) -> dict[str, Any] | None:
        return await self.objects.get(BENTO_REQUEST, (self.namespace, name))

    async def bento(self, name: str) -> dict[str, Any] | None:
        return await self.objects.get(BENTO, (self.namespace, name))

    async def events(self, *types: str) -> list[dict[str, Any]]:
        """Events on the stream (the builder's and the registry's outboxes drained)."""

        async def drained() -> bool:
            waiting = await self.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
            return bool(waiting == 0)

        await wait_for(drained, timeout=10, what="the builder's outbox")
        found = await self.stack.events()
        return [e for e in found if not types or e["type"] in types]


def builder_settings(
    nats_url: str,
    pg_dsn: str,
    registry: OciRegistry,
    plane: KubeControlPlane,
    namespace: str,
    config_dir: Path,
    prefix: str,
    **overrides: Any,
) -> BuilderSettings:
    containers = containers_settings(registry, config_dir).model_copy(
        update={"prune_on_start": False, **overrides.pop("containers", {})}
    )
    target = target_registry(registry).model_copy(update={"repository_prefix": prefix})
    return BuilderSettings(
        nats=NatsSettings(url=nats_url, backoff_seconds=[0.05, 0.1]),
        postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
        registry=target,
        containers=containers,
        kube=BuilderKubeSettings(
            kubeconfig=plane.kubeconfig_path, namespace=namespace, lease_seconds=6
        ),
        **overrides,
    )


@pytest.fixture
def builder_stack(
    nats_url: str,
    pg_dsn: str,
    s3_server: S3Server,
    oci_registry: OciRegistry,
    kube_control_plane: KubeControlPlane,
    kube_api: client.ApiClient,
    kube_namespace: str,
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[BuilderStack]]:
    """A factory: `async with builder_stack(**settings) as bs:` runs everything."""
    token_file = tmp_path / "admin-token"
    prefix = f"t{uuid.uuid4().hex[:8]}"  # one per test: a restarted builder pushes there too
    registry = registry_settings(nats_url, pg_dsn, s3_server)  # and finds the same bucket

    @contextlib.asynccontextmanager
    async def start(*, builder: bool = True, **overrides: Any) -> AsyncIterator[BuilderStack]:
        """Without `builder`, only the registry and the gateway run (and the settings are
        for a builder process the test starts)."""
        settings = builder_settings(
            nats_url, pg_dsn, oci_registry, kube_control_plane, kube_namespace,
            tmp_path / "containers", prefix, **overrides,
        )  # fmt: skip
        objects = Objects(kube_api, field_manager="test")
        async with running_stack(
            nats_url, pg_dsn, s3_server, token_file, serve_http=True, registry=registry
        ) as st:
            if not builder:
                pool = await create_pool(pg_dsn, schema="builder")
                try:
                    yield BuilderStack(
                        st, None, None, settings, kube_namespace, objects, oci_registry, pool
                    )
                finally:
                    await pool.close()
                return
            runtime, controller = create_runtime(settings)
            async with runtime.running():
                yield BuilderStack(
                    st, runtime, controller, settings, kube_namespace, objects, oci_registry,
                    runtime.pool,
                )  # fmt: skip

    return start


async def bentoml(client: Client, home: Path, *args: str, cwd: Path | None = None) -> str:
    """The CLI in a thread: the gateway it talks to runs on this event loop."""
    done = await asyncio.to_thread(client.run, home, *args, cwd=cwd)
    return done.stdout + done.stderr


async def login(client: Client, home: Path, stack: Stack) -> None:
    await bentoml(
        client, home, "cloud", "login", "--endpoint", stack.url, "--api-token", stack.admin_token
    )


async def build_greeter(client: Client, home: Path, source: Path) -> str:
    """`bentoml build` of (a copy of) the greeter; its tag."""
    await bentoml(client, home, "build", cwd=source)
    listed = json.loads((await asyncio.to_thread(client.run, home, "list", "-o", "json")).stdout)
    newest = max(listed, key=lambda b: b["creation_time"])
    return str(newest["tag"])


def write_bento_project(
    directory: Path, *, packages: list[str] | None = None, setup_script: str | None = None
) -> Path:
    """The greeter's code with extra Python packages or a docker setup script."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "service.py").write_text((GREETER / "service.py").read_text())
    lines = ['service: "service:Greeter"', "include:", '  - "service.py"']
    if packages:
        lines += ["python:", "  lock_packages: false", "  packages:"]
        lines += [f'    - "{p}"' for p in packages]
    if setup_script:
        (directory / "setup.sh").write_text(setup_script)
        lines += ["docker:", '  setup_script: "setup.sh"']
    (directory / "bentofile.yaml").write_text("\n".join(lines) + "\n")
    return directory


def settings_environment(settings: BuilderSettings, **extra: str) -> dict[str, str]:
    """`settings` as the EKIBEN_BUILDER_* variables a builder process reads."""
    env: dict[str, str] = {}

    def walk(prefix: str, data: dict[str, Any]) -> None:
        for key, value in data.items():
            name = f"{prefix}{key.upper()}"
            if value is None:
                continue
            if isinstance(value, dict) and key not in ("mirrors", "build_args", "node_selector"):
                walk(f"{name}__", value)
            elif isinstance(value, dict | list | bool):
                env[name] = json.dumps(value)
            else:
                env[name] = str(value)

    walk("EKIBEN_BUILDER_", settings.model_dump(mode="json", exclude={"job"}))
    env["EKIBEN_BUILDER_POSTGRES__DSN"] = settings.postgres.dsn.get_secret_value()
    env.pop("EKIBEN_BUILDER_REGISTRY__PASSWORD", None)
    return {**env, **extra}


async def upload_bento(bs: BuilderStack, name: str, version: str, archive: bytes) -> None:
    """A bento version stored through the registry's commands, as the gateway does it;
    finishing the upload emits `bento.pushed`."""
    rpc = bs.stack.registry.rpc
    scope = reg.Scope(organization="default", actor="admin")
    ref: dict[str, Any] = {
        "scope": scope, "kind": reg.Kind.BENTO, "repository": name, "version": version,
    }  # fmt: skip
    with contextlib.suppress(Conflict):
        await rpc.call(
            reg.CREATE_REPOSITORY, reg.CreateRepository(scope=scope, kind=reg.Kind.BENTO, name=name)
        )
    await rpc.call(
        reg.CREATE_VERSION,
        reg.CreateVersion(**ref, manifest=bento_manifest(name), build_at=datetime.now(UTC)),
    )
    await rpc.call(reg.START_UPLOAD, reg.VersionRef(**ref))
    url = (await rpc.call(reg.PRESIGN_UPLOAD, reg.VersionRef(**ref))).url
    async with httpx.AsyncClient() as http:
        assert (await http.put(url, content=archive)).status_code == 200
    await rpc.call(reg.FINISH_UPLOAD, reg.FinishUpload(**ref, status="success"))
