"""skopeo: inspect an image in a registry, copy images between registries and archives.

For what buildah and the httpx client do not cover: seeding a registry with a base image
from an OCI archive (`copy("oci-archive:/path", "docker://host/library/python:3.11-slim")`),
mirroring an image between registries, and reading an image's configuration without
pulling it (`inspect`). skopeo does not read `CONTAINERS_REGISTRIES_CONF`, so the generated
registries.conf is passed with `--registries-conf`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from services.builder.adapters.auth import Auth, auth_file_for
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.process import LogSink, failure, run_tool
from shared.errors import NotFound


class Skopeo:
    def __init__(
        self, env: ContainerEnvironment, *, binary: str = "skopeo", time_limit: float = 1800.0
    ) -> None:
        self.environment = env
        self.binary = binary
        self.time_limit = time_limit

    def _base(self) -> list[str]:
        return [self.binary, *self.environment.skopeo_args()]

    async def inspect(
        self, ref: str, *, tls_verify: bool = True, config: bool = False, auth: Auth = None
    ) -> dict[str, Any]:
        """`skopeo inspect` of `ref` (`docker://HOST/REPO:TAG`, `oci-archive:PATH`, ...).

        With `config`, the image's OCI configuration (Env, Entrypoint, User, ...) instead of
        the summary (Digest, Layers, Env, ...). Raises `NotFound` for a missing image.
        """
        host = _registry_host(ref)
        with auth_file_for(auth, host, directory=self._scratch()) as authfile:
            argv = [*self._base(), "inspect", f"--tls-verify={str(tls_verify).lower()}"]
            if config:
                argv.append("--config")
            if authfile is not None:
                argv += ["--authfile", str(authfile)]
            argv.append(ref)
            result = await run_tool(
                argv, env=self.environment.env, time_limit=120, capture_stdout=True
            )
        if not result.ok:
            text = result.tail_text().lower()
            if "manifest unknown" in text or "not found" in text or "no such" in text:
                raise NotFound(f"no image {ref}: {result.tail_text()}")
            raise failure(f"skopeo inspect {ref} failed", result)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    async def copy(
        self,
        source: str,
        destination: str,
        *,
        src_tls_verify: bool = True,
        dest_tls_verify: bool = True,
        dest_auth: Auth = None,
        log_sink: LogSink | None = None,
    ) -> str:
        """`skopeo copy source destination`; the digest of the manifest written."""
        host = _registry_host(destination)
        with (
            tempfile.TemporaryDirectory(prefix="copy-", dir=self._scratch()) as scratch,
            auth_file_for(dest_auth, host, directory=Path(scratch)) as authfile,
        ):
            digestfile = Path(scratch) / "digest"
            argv = [
                *self._base(), "copy", "--quiet",
                f"--src-tls-verify={str(src_tls_verify).lower()}",
                f"--dest-tls-verify={str(dest_tls_verify).lower()}",
                "--digestfile", str(digestfile),
            ]  # fmt: skip
            if authfile is not None:
                argv += ["--dest-authfile", str(authfile)]
            argv += [source, destination]
            result = await run_tool(
                argv, env=self.environment.env, time_limit=self.time_limit, log_sink=log_sink
            )
            if not result.ok:
                raise failure(f"skopeo copy {source} {destination} failed", result)
            return digestfile.read_text().strip()

    def _scratch(self) -> Path:
        path = self.environment.config_dir / "scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _registry_host(ref: str) -> str:
    """The registry host of a `docker://HOST/...` reference ('' for other transports)."""
    if not ref.startswith("docker://"):
        return ""
    return ref.removeprefix("docker://").split("/", 1)[0]
