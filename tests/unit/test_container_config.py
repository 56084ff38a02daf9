"""The builder's image settings and the container-tool files written from them."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.builder.adapters.auth import (
    RegistryCredentials,
    auth_file_for,
    auth_from_settings,
    credentials_from_file,
)
from services.builder.adapters.containers import registries_conf_text, write_container_config
from services.builder.adapters.tools import ContainerTools
from services.builder.settings import (
    BuilderSettings,
    ContainersSettings,
    TargetRegistrySettings,
    is_loopback_host,
)
from shared.errors import PermanentError


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EKIBEN_BUILDER_REGISTRY__URL", "registry.example.com")
    monkeypatch.setenv("EKIBEN_BUILDER_REGISTRY__REPOSITORY_PREFIX", "/team/bentos/")
    monkeypatch.setenv("EKIBEN_BUILDER_REGISTRY__USERNAME", "robot")
    monkeypatch.setenv("EKIBEN_BUILDER_REGISTRY__PASSWORD", "s3cret")
    mirrors = {"docker.io": ["mirror-a.internal", "127.0.0.1:5000"], "quay.io": ["m.internal/q"]}
    monkeypatch.setenv("EKIBEN_BUILDER_CONTAINERS__MIRRORS", json.dumps(mirrors))
    monkeypatch.setenv("EKIBEN_BUILDER_CONTAINERS__STORAGE_DIR", "/var/lib/ekiben/storage")
    monkeypatch.setenv("EKIBEN_BUILDER_CONTAINERS__BUILDAH", "/opt/bin/buildah")
    settings = BuilderSettings()
    registry = settings.registry
    assert registry.host == "registry.example.com"
    assert registry.base_url == "https://registry.example.com"
    assert registry.tls_verify
    assert registry.image("greeter", "v1") == "registry.example.com/team/bentos/greeter:v1"
    assert isinstance(registry.password, SecretStr)
    assert "s3cret" not in repr(settings)
    containers = settings.containers
    assert containers.mirrors["docker.io"] == ["mirror-a.internal", "127.0.0.1:5000"]
    assert containers.graphroot == Path("/var/lib/ekiben/storage")
    assert containers.buildah == "/opt/bin/buildah"


@pytest.mark.parametrize(
    ("url", "base_url", "tls_verify"),
    [
        ("http://10.0.0.5:5000", "http://10.0.0.5:5000", False),
        ("https://127.0.0.1:5443", "https://127.0.0.1:5443", True),
        ("127.0.0.1:5000", "http://127.0.0.1:5000", False),
        ("localhost:5000", "http://localhost:5000", False),
        ("registry.example.com:443", "https://registry.example.com:443", True),
    ],
)
def test_the_target_registry_scheme_follows_the_url(
    url: str, base_url: str, tls_verify: bool
) -> None:
    registry = TargetRegistrySettings(url=url)
    assert registry.base_url == base_url
    assert registry.tls_verify is tls_verify


def test_credentials_come_in_one_kind() -> None:
    with pytest.raises(ValidationError, match="go together"):
        TargetRegistrySettings(username="robot")
    with pytest.raises(ValidationError, match="not both"):
        TargetRegistrySettings(
            username="robot", password=SecretStr("x"), docker_config=Path("/x.json")
        )
    with pytest.raises(ValidationError, match="empty"):
        ContainersSettings(mirrors={"docker.io": []})


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1:5000")
    assert is_loopback_host("localhost")
    assert is_loopback_host("[::1]:5000")
    assert not is_loopback_host("registry.example.com:5000")
    assert not is_loopback_host("10.0.0.1")


def test_registries_conf_tries_mirrors_in_order_and_marks_plain_http_ones() -> None:
    containers = ContainersSettings(
        mirrors={
            "docker.io": ["127.0.0.1:5001", "mirror.example.com/dockerhub"],
            "quay.io/org": ["127.0.0.1:5001/quay-org"],
        },
        insecure_registries=["build-cache.internal:5000"],
    )
    target = TargetRegistrySettings(url="http://10.1.2.3:5000")
    conf = tomllib.loads(registries_conf_text(containers, target))
    assert conf["unqualified-search-registries"] == ["docker.io"]
    assert conf["short-name-mode"] == "permissive"
    by_prefix = {r.get("prefix", r["location"]): r for r in conf["registry"]}
    docker = by_prefix["docker.io"]
    assert docker["location"] == "docker.io"
    assert docker["insecure"] is False
    assert [(m["location"], m["insecure"]) for m in docker["mirror"]] == [
        ("127.0.0.1:5001", True),
        ("mirror.example.com/dockerhub", False),
    ]
    assert by_prefix["quay.io/org"]["mirror"] == [
        {"location": "127.0.0.1:5001/quay-org", "insecure": True}
    ]
    for host in ("127.0.0.1:5001", "10.1.2.3:5000", "build-cache.internal:5000"):
        assert by_prefix[host]["insecure"] is True, host


def test_the_files_and_environment_for_the_tools(tmp_path: Path) -> None:
    containers = ContainersSettings(state_dir=tmp_path / "state", mirrors={"docker.io": ["x.io"]})
    target = TargetRegistrySettings(
        url="registry.example.com", username="robot", password=SecretStr("pw")
    )
    env = write_container_config(containers, target)
    assert env.env["CONTAINERS_CONF"] == str(env.containers_conf)
    assert env.env["CONTAINERS_REGISTRIES_CONF"] == str(env.registries_conf)
    assert env.env["CONTAINERS_STORAGE_CONF"] == str(env.storage_conf)
    assert env.skopeo_args() == ["--registries-conf", str(env.registries_conf)]
    engine = tomllib.loads(env.containers_conf.read_text())
    assert engine["engine"]["runtime"] == "runc"
    assert engine["containers"]["default_ulimits"] == ["nofile=4096:4096", "nproc=4096:4096"]
    storage = tomllib.loads(env.storage_conf.read_text())["storage"]
    assert storage == {
        "driver": "overlay",
        "graphroot": str(tmp_path / "state" / "storage"),
        "runroot": str(tmp_path / "state" / "storage-run"),
    }
    assert env.graphroot.is_dir()
    assert env.runroot.is_dir()
    assert env.auth_file is not None
    assert env.env["REGISTRY_AUTH_FILE"] == str(env.auth_file)
    assert env.auth_file.stat().st_mode & 0o777 == 0o600
    auths = json.loads(env.auth_file.read_text())["auths"]
    assert base64.b64decode(auths["registry.example.com"]["auth"]) == b"robot:pw"
    # Idempotent: a second start rewrites the same files.
    again = write_container_config(containers, target)
    assert again.registries_conf.read_text() == env.registries_conf.read_text()


def test_a_docker_config_file_is_used_as_it_is(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    token = base64.b64encode(b"robot:pw").decode()
    config.write_text(json.dumps({"auths": {"https://registry.example.com": {"auth": token}}}))
    target = TargetRegistrySettings(url="registry.example.com", docker_config=config)
    env = write_container_config(ContainersSettings(state_dir=tmp_path), target)
    assert env.auth_file == config
    assert auth_from_settings(target) == config
    found = credentials_from_file(config, "registry.example.com")
    assert found is not None
    assert (found.username, found.password.get_secret_value()) == ("robot", "pw")
    assert credentials_from_file(config, "other.example.com") is None
    config.write_text("{not json")
    with pytest.raises(PermanentError):
        credentials_from_file(config, "registry.example.com")


def test_credentials_reach_the_tools_through_a_private_file(tmp_path: Path) -> None:
    credentials = RegistryCredentials("robot", SecretStr("pw"))
    assert "pw" not in repr(credentials)
    with auth_file_for(credentials, "r.example.com", directory=tmp_path) as path:
        assert path is not None
        assert path.stat().st_mode & 0o777 == 0o600
        written = json.loads(path.read_text())["auths"]["r.example.com"]["auth"]
        assert base64.b64decode(written) == b"robot:pw"
    assert not path.exists()


async def test_the_tools_come_configured_from_the_builder_settings(tmp_path: Path) -> None:
    settings = BuilderSettings(
        registry=TargetRegistrySettings(url="127.0.0.1:5000"),
        containers=ContainersSettings(
            state_dir=tmp_path, buildah="/opt/buildah", isolation="oci", build_timeout_seconds=60
        ),
    )
    tools = ContainerTools.from_settings(settings)
    assert tools.env.registries_conf.is_file()
    assert (tools.buildah.binary, tools.buildah.isolation) == ("/opt/buildah", "oci")
    assert tools.buildah.build_timeout == 60
    assert tools.registry_auth is None
    async with tools.registry_client() as registry:
        assert registry.base_url == "http://127.0.0.1:5000"
