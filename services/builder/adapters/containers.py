"""The configuration buildah, podman and skopeo run with, written from the builder's settings.

The tools read containers-*.conf files; the builder never relies on the machine's own
`/etc/containers` files (or on a Docker daemon). `write_container_config` writes into a
directory the builder owns:

- `containers.conf`: `[engine] runtime` (runc: crun fails on hybrid cgroups) and
  `[containers] default_ulimits` (a sandboxed builder cannot raise the hard limits).
- `registries.conf`: short names such as `python:3.11-slim` are looked up in
  `unqualified-search-registries` (docker.io) in permissive mode; every mirror prefix gets a
  `[[registry]]` with its `[[registry.mirror]]` entries, tried in order before the original,
  which is how `FROM python:3.11-slim` of an unmodified bento resolves to a local registry;
  plain-HTTP registries (loopback ones, the insecure target, `insecure_registries`) are
  marked `insecure`.
- `storage.conf`: the layer store (driver, graphroot, runroot). The graphroot is the build
  cache: keep it between builds.
- `auth.json` (mode 0600) when the target registry has a username and password.

and returns the environment to run the tools with (`CONTAINERS_CONF`,
`CONTAINERS_REGISTRIES_CONF`, `CONTAINERS_STORAGE_CONF`, `REGISTRY_AUTH_FILE`). skopeo does
not read `CONTAINERS_REGISTRIES_CONF`: pass it `ContainerEnvironment.skopeo_args()`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.builder.settings import (
    ContainersSettings,
    TargetRegistrySettings,
    is_loopback_host,
)


@dataclass(frozen=True)
class ContainerEnvironment:
    """Files written for the container tools and the environment that points them there."""

    config_dir: Path
    containers_conf: Path
    registries_conf: Path
    storage_conf: Path
    graphroot: Path
    runroot: Path
    auth_file: Path | None
    env: Mapping[str, str] = field(default_factory=dict)

    def skopeo_args(self) -> list[str]:
        """Global skopeo options: skopeo ignores `CONTAINERS_REGISTRIES_CONF`."""
        return ["--registries-conf", str(self.registries_conf)]


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value)


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _host_of(location: str) -> str:
    """The registry host of a location such as `127.0.0.1:5000/dockerhub`."""
    return location.split("/", 1)[0]


def plain_http_hosts(
    containers: ContainersSettings, registry: TargetRegistrySettings | None
) -> set[str]:
    """Registry hosts that are reached without verified TLS."""
    hosts = {_host_of(h) for h in containers.insecure_registries}
    for mirrors in containers.mirrors.values():
        hosts |= {_host_of(m) for m in mirrors if is_loopback_host(_host_of(m))}
    if registry is not None and (registry.plain_http or registry.insecure):
        hosts.add(registry.host)
    return hosts


def containers_conf_text(containers: ContainersSettings) -> str:
    return (
        "# Written by the Ekiben builder from its settings; rewritten at each start.\n"
        "[containers]\n"
        f"default_ulimits = {_toml_list(containers.ulimits)}\n"
        "\n"
        "[engine]\n"
        f"runtime = {_toml_str(containers.runtime)}\n"
        # No journald or systemd on a build host or in a pod.
        'events_logger = "file"\n'
        'cgroup_manager = "cgroupfs"\n'
    )


def registries_conf_text(
    containers: ContainersSettings, registry: TargetRegistrySettings | None = None
) -> str:
    """registries.conf (v2 format) for the mirrors and plain-HTTP registries."""
    insecure = plain_http_hosts(containers, registry)
    lines = [
        "# Written by the Ekiben builder from its settings; rewritten at each start.",
        f"unqualified-search-registries = {_toml_list(containers.unqualified_search_registries)}",
        # Short names resolve through the search list without a prompt (there is no TTY).
        'short-name-mode = "permissive"',
    ]
    covered: set[str] = set()
    for prefix, mirrors in containers.mirrors.items():
        prefix_host = _host_of(prefix)
        lines += [
            "",
            "[[registry]]",
            f"prefix = {_toml_str(prefix)}",
            f"location = {_toml_str(prefix)}",
            f"insecure = {'true' if prefix_host in insecure else 'false'}",
        ]
        covered.add(prefix)
        for mirror in mirrors:
            lines += [
                "",
                "[[registry.mirror]]",
                f"location = {_toml_str(mirror)}",
                f"insecure = {'true' if _host_of(mirror) in insecure else 'false'}",
            ]
    for host in sorted(insecure - covered):
        lines += ["", "[[registry]]", f"location = {_toml_str(host)}", "insecure = true"]
    return "\n".join(lines) + "\n"


def storage_conf_text(containers: ContainersSettings) -> str:
    return (
        "# Written by the Ekiben builder from its settings; rewritten at each start.\n"
        "[storage]\n"
        f"driver = {_toml_str(containers.storage_driver)}\n"
        f"graphroot = {_toml_str(str(containers.graphroot))}\n"
        f"runroot = {_toml_str(str(containers.runroot))}\n"
    )


def auth_json(host: str, username: str, password: str) -> str:
    """A containers-auth.json with one registry's credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": token}}}, indent=2)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    # Whole-file replace: a tool starting meanwhile reads the old or the new file, never half.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.chmod(mode)
    tmp.replace(path)


def write_container_config(
    containers: ContainersSettings, registry: TargetRegistrySettings | None = None
) -> ContainerEnvironment:
    """Write the tools' configuration files; the environment to run buildah/podman/skopeo.

    Creates the configuration directory, the graphroot and the runroot. Idempotent: call it
    at every start (settings may have changed).
    """
    config_dir = containers.configuration_dir
    config_dir.mkdir(parents=True, exist_ok=True)
    containers.graphroot.mkdir(parents=True, exist_ok=True)
    containers.runroot.mkdir(parents=True, exist_ok=True)
    containers_conf = config_dir / "containers.conf"
    registries_conf = config_dir / "registries.conf"
    storage_conf = config_dir / "storage.conf"
    _write(containers_conf, containers_conf_text(containers))
    _write(registries_conf, registries_conf_text(containers, registry))
    _write(storage_conf, storage_conf_text(containers))
    auth_file: Path | None = None
    if registry is not None and registry.docker_config is not None:
        auth_file = registry.docker_config
    elif registry is not None and registry.username and registry.password is not None:
        auth_file = config_dir / "auth.json"
        _write(
            auth_file,
            auth_json(registry.host, registry.username, registry.password.get_secret_value()),
            mode=0o600,
        )
    env = {
        "CONTAINERS_CONF": str(containers_conf),
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        "CONTAINERS_STORAGE_CONF": str(storage_conf),
        "BUILDAH_ISOLATION": containers.isolation,
        "TMPDIR": str(_tmp_dir(containers)),
    }
    if auth_file is not None:
        env["REGISTRY_AUTH_FILE"] = str(auth_file)
    return ContainerEnvironment(
        config_dir=config_dir,
        containers_conf=containers_conf,
        registries_conf=registries_conf,
        storage_conf=storage_conf,
        graphroot=containers.graphroot,
        runroot=containers.runroot,
        auth_file=auth_file,
        env=env,
    )


def _tmp_dir(containers: ContainersSettings) -> Path:
    """Scratch space for pulls and pushes beside the store (same filesystem, no /tmp limits)."""
    path = containers.graphroot.parent / f"{containers.graphroot.name}-tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
