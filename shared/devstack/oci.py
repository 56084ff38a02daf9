"""A real OCI registry (CNCF distribution) on loopback, for `ekiben up` and the tests.

The builder pushes the images it builds to a registry and the deployer's pods pull them
from it, so the stack runs the real thing: distribution's `registry serve`, plain HTTP on
127.0.0.1, filesystem storage under a data directory (kept between runs) and deletes
enabled. The binary is Debian's `docker-registry` (distribution 2.8) when installed;
otherwise distribution v3 is compiled from its Go module once per machine into
`${EKIBEN_CACHE_DIR:-~/.cache/ekiben}/bin/` (no registry ships a binary; this takes a few
minutes the first time and is instant after). `EKIBEN_OCI_REGISTRY_BIN` names another one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from shared.devstack.process import ManagedProcess, StartupError, free_port, http_ok, wait_until
from shared.devstack.servers import RunningServer

DISTRIBUTION_MODULE = "github.com/distribution/distribution/v3"
DISTRIBUTION_VERSION = "v3.1.2"  # the newest v3 the Go module proxy serves (2026-12)
DEBIAN_BINARY = "docker-registry"
BIN_ENV = "EKIBEN_OCI_REGISTRY_BIN"
_GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


@dataclass
class OciRegistry(RunningServer):
    """A running registry; `url` is `http://127.0.0.1:PORT`."""

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as image references name the registry."""
        return urlsplit(self.url).netloc


def cache_dir() -> Path:
    return Path(os.environ.get("EKIBEN_CACHE_DIR") or Path.home() / ".cache" / "ekiben")


def cached_binary() -> Path:
    """Where the Go-built registry lives (versioned: a version bump builds again)."""
    return cache_dir() / "bin" / f"registry-{DISTRIBUTION_VERSION}"


def find_registry_binary(*, build: bool = True) -> Path:
    """The override, Debian's docker-registry, the cached Go build, or a new Go build."""
    if override := os.environ.get(BIN_ENV):
        return Path(override)
    if found := shutil.which(DEBIAN_BINARY):
        return Path(found)
    cached = cached_binary()
    if cached.is_file():
        return cached
    if not build:
        raise StartupError(f"no OCI registry binary ({DEBIAN_BINARY} or {cached})")
    return build_registry_binary()


def build_registry_binary(*, timeout: float = 1800.0) -> Path:
    """`go install` distribution's cmd/registry into the cache, with a line on stderr."""
    target = cached_binary()
    go = shutil.which("go") or next((p for p in _GO_FALLBACKS if Path(p).is_file()), None)
    if go is None:
        raise StartupError(
            f"no OCI registry: install Debian's {DEBIAN_BINARY} (apt-get install {DEBIAN_BINARY}),"
            f" or Go to build {DISTRIBUTION_MODULE}@{DISTRIBUTION_VERSION}, or use an external"
            " registry (--registry-url)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.write(
        f"ekiben: building the OCI registry ({DISTRIBUTION_MODULE}@{DISTRIBUTION_VERSION}) into"
        f" {target}: a few minutes, once per machine\n"
    )
    sys.stderr.flush()
    began = time.monotonic()
    # Into a private GOBIN, then renamed: a concurrent caller never runs a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".registry-build-") as gobin:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [go, "install", "-trimpath", "-ldflags=-s -w",
             f"{DISTRIBUTION_MODULE}/cmd/registry@{DISTRIBUTION_VERSION}"],
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise StartupError(f"go install of the OCI registry failed:\n{tail}")
        Path(gobin, "registry").replace(target)
    sys.stderr.write(f"ekiben: OCI registry built in {time.monotonic() - began:.0f}s\n")
    return target


def registry_config(
    data_dir: Path, port: int, *, htpasswd: Path | None = None, secret: str
) -> dict[str, object]:
    """distribution's configuration: one file for v2.8 and v3 alike."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(data_dir / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secret},
        "health": {"storagedriver": {"enabled": False}},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "ekiben", "path": str(htpasswd)}}
    return config


def start_oci_registry(
    data_dir: Path,
    *,
    port: int | None = None,
    htpasswd: Path | None = None,
    binary: Path | None = None,
    timeout: float = 30.0,
) -> OciRegistry:
    """distribution on 127.0.0.1 storing under `data_dir`; ready when `GET /v2/` answers.

    The URL of the handle is `http://127.0.0.1:PORT` (image references use `127.0.0.1:PORT`).
    With `htpasswd` (a file of bcrypt entries) every request needs Basic credentials, and
    readiness is a 401 from `/v2/`.
    """
    begin = time.monotonic()
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = binary or find_registry_binary()
    # The upload-state secret is the data directory's own: uploads survive a restart.
    secret_file = data_dir / "http-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(32))
        secret_file.chmod(0o600)
    config = data_dir / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            registry_config(data_dir, port, htpasswd=htpasswd, secret=secret_file.read_text())
        )
    )
    config.chmod(0o600)
    proc = ManagedProcess.start(
        "oci-registry",
        [str(binary), "serve", str(config)],
        log_path=data_dir / "registry.log",
        # distribution v3 exports OpenTelemetry traces when told to; never here.
        env={"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    ready = (lambda: _answers_401(f"{url}/v2/")) if htpasswd else (lambda: http_ok(f"{url}/v2/"))
    wait_until(ready, timeout=timeout, what="OCI registry", proc=proc)
    return OciRegistry(url, proc, time.monotonic() - begin)


def _answers_401(url: str) -> bool:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        urllib.request.urlopen(url, timeout=1.0)  # noqa: S310 - our loopback URL
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False
    return False
