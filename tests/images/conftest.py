"""Fixtures for the image tests: a real OCI registry, the base image in it, buildah's config.

- `oci_registry`: CNCF distribution on a free loopback port (shared/devstack/oci.py).
- `python_base_image`: the Debian-built Python 3.11 base (tests/images/python-base.sh,
  cached), pushed into that registry as `library/python:3.11-slim`; its full reference.
- `busybox_image`: a tiny local image with a shell (FROM scratch + busybox-static), for
  the quick adapter tests.
- `container_env`: the builder's container-tool configuration for this session, with
  `docker.io` mirrored to the registry (so `FROM python:3.11-slim` resolves there) and the
  layer store under the cache directory, outside the clone, kept between sessions.

Missing tools or a registry that cannot start skip the tests here, and fail them with
EKIBEN_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment, write_container_config
from services.builder.adapters.skopeo import Skopeo
from services.builder.settings import ContainersSettings, TargetRegistrySettings
from shared.devstack.oci import OciRegistry, start_oci_registry
from shared.devstack.process import StartupError
from tests.fixtures.bentoml import bentoml_client
from tests.fixtures.oci import (
    BASE_IMAGE_REPOSITORY,
    BASE_IMAGE_TAG,
    build_python_base,
    cache_dir,
    missing_tools,
    timed,
)
from tests.fixtures.report import report
from tests.fixtures.require import unavailable

__all__ = ["bentoml_client"]

BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="session")
def container_tools() -> None:
    if missing := missing_tools():
        unavailable(f"container tools not installed: {', '.join(missing)} (apt-get install them)")


@pytest.fixture(scope="session")
def oci_registry(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[OciRegistry]:
    try:
        server = start_oci_registry(tmp_path_factory.mktemp("oci-registry"))
    except StartupError as exc:
        unavailable(f"OCI registry did not start: {exc}")
    report(pytestconfig, f"oci registry {server.host} ready in {server.started_in:.2f}s")
    yield server
    server.stop()


def target_registry(registry: OciRegistry) -> TargetRegistrySettings:
    return TargetRegistrySettings(url=registry.url, repository_prefix="ekiben-test")


def containers_settings(
    registry: OciRegistry, config_dir: Path, *, state_dir: Path | None = None
) -> ContainersSettings:
    state = state_dir or cache_dir() / "containers"
    return ContainersSettings(
        state_dir=state,
        config_dir=config_dir,
        mirrors={"docker.io": [registry.host]},
    )


@pytest.fixture(scope="session")
def container_env(
    container_tools: None, oci_registry: OciRegistry, tmp_path_factory: pytest.TempPathFactory
) -> ContainerEnvironment:
    """Configuration per session (the registry's port changes), layer store in the cache."""
    config_dir = tmp_path_factory.mktemp("containers-config")
    return write_container_config(
        containers_settings(oci_registry, config_dir), target_registry(oci_registry)
    )


@pytest.fixture(scope="session")
async def python_base_image(
    container_env: ContainerEnvironment, oci_registry: OciRegistry, pytestconfig: pytest.Config
) -> str:
    """`HOST:PORT/library/python:3.11-slim` in the session's registry."""
    elapsed = timed()
    try:
        archive = build_python_base()
    except StartupError as exc:
        unavailable(f"python base image: {exc}")
    built = elapsed()
    reference = f"{oci_registry.host}/{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}"
    elapsed = timed()
    await Skopeo(container_env).copy(
        f"oci-archive:{archive}", f"docker://{reference}", dest_tls_verify=False
    )
    report(
        pytestconfig,
        f"python base image {archive.name}: ready in {built:.1f}s, pushed to {reference} "
        f"in {elapsed():.1f}s",
    )
    return reference


@pytest.fixture(scope="session")
def busybox_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.is_file():
        unavailable("busybox-static is not installed (apt-get install busybox-static)")
    context = tmp_path_factory.mktemp("busybox-context")
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    return context


@pytest.fixture(scope="session")
async def busybox_image(container_env: ContainerEnvironment, busybox_context: Path) -> str:
    """A tiny local base image with a shell (FROM scratch + busybox-static)."""
    tag = "localhost/ekiben-test/busybox:latest"
    await Buildah(container_env).build(busybox_context, busybox_context / "Dockerfile", tag)
    return tag
