"""A registry that wants credentials: distribution with htpasswd (Basic auth), for real.

The builder pushes with credentials from its settings (never on a command line) and looks
images up with them; wrong or missing credentials are permanent errors that say so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from services.builder.adapters.auth import RegistryCredentials
from services.builder.adapters.buildah import Buildah, PushRefused
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.registry import RegistryAuthFailed, RegistryClient
from services.builder.adapters.skopeo import Skopeo
from shared.devstack.oci import OciRegistry, start_oci_registry
from shared.devstack.process import StartupError
from shared.errors import is_permanent
from tests.fixtures.require import unavailable

pytestmark = [pytest.mark.images, pytest.mark.timeout(300)]

ROBOT = RegistryCredentials("robot", SecretStr("correct horse battery staple"))


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    directory = tmp_path_factory.mktemp("private-registry")
    htpasswd = directory / "htpasswd"
    hashed = bcrypt.hashpw(ROBOT.password.get_secret_value().encode(), bcrypt.gensalt(rounds=5))
    htpasswd.write_text(f"{ROBOT.username}:{hashed.decode()}\n")
    try:
        server = start_oci_registry(directory / "data", htpasswd=htpasswd)
    except StartupError as exc:
        unavailable(f"OCI registry with htpasswd did not start: {exc}")
    yield server
    server.stop()


async def test_push_and_lookup_with_basic_credentials(
    container_env: ContainerEnvironment, busybox_image: str, private_registry: OciRegistry
) -> None:
    repository, tag = "ekiben-test/private", uuid.uuid4().hex[:8]
    destination = f"{private_registry.host}/{repository}:{tag}"
    digest = await Buildah(container_env).push(
        busybox_image, destination, tls_verify=False, auth=ROBOT
    )
    async with RegistryClient(private_registry.url, auth=ROBOT) as registry:
        assert await registry.ping()
        assert await registry.manifest_digest(repository, tag) == digest
        assert await registry.manifest_digest(repository, "absent") is None
    inspected = await Skopeo(container_env).inspect(
        f"docker://{destination}", tls_verify=False, auth=ROBOT
    )
    assert inspected["Digest"] == digest


async def test_a_docker_config_file_works_like_credentials(
    container_env: ContainerEnvironment,
    busybox_image: str,
    private_registry: OciRegistry,
    tmp_path: Path,
) -> None:
    from services.builder.adapters.containers import auth_json  # noqa: PLC0415

    config = tmp_path / "config.json"
    config.write_text(
        auth_json(private_registry.host, ROBOT.username, ROBOT.password.get_secret_value())
    )
    repository, tag = "ekiben-test/private", uuid.uuid4().hex[:8]
    digest = await Buildah(container_env).push(
        busybox_image, f"{private_registry.host}/{repository}:{tag}", tls_verify=False, auth=config
    )
    async with RegistryClient(private_registry.url, auth=config) as registry:
        assert await registry.manifest_digest(repository, tag) == digest


async def test_wrong_or_missing_credentials_are_refused_for_good(
    container_env: ContainerEnvironment, busybox_image: str, private_registry: OciRegistry
) -> None:
    wrong = RegistryCredentials("robot", SecretStr("wrong"))
    destination = f"{private_registry.host}/ekiben-test/private:refused"
    with pytest.raises(PushRefused) as caught:
        await Buildah(container_env).push(
            busybox_image, destination, tls_verify=False, auth=wrong, retries=0
        )
    assert is_permanent(caught.value)
    assert caught.value.reason == "RegistryAuthFailed"
    assert "wrong" not in caught.value.message
    for auth in (wrong, None):
        async with RegistryClient(private_registry.url, auth=auth) as registry:
            with pytest.raises(RegistryAuthFailed):
                await registry.manifest_digest("ekiben-test/private", "refused")
