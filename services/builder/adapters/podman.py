"""podman: run an image as a container on this machine (smoke checks and tests).

The builder itself never runs what it builds in production (Kubernetes does); this runs an
image the way a pod would, to check that it starts: `--network host` (no bridge, no
iptables), `--rm`, environment variables such as `PORT` for a bento, stopped by id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.process import failure, run_tool


class Podman:
    def __init__(self, env: ContainerEnvironment, *, binary: str = "podman") -> None:
        self.environment = env
        self.binary = binary

    async def run_detached(
        self,
        image: str,
        *,
        env: Mapping[str, str] | None = None,
        network: str = "host",
        name: str | None = None,
        pull: Literal["missing", "always", "never", "newer"] = "missing",
        tls_verify: bool = True,
        args: tuple[str, ...] = (),
        time_limit: float = 600.0,
    ) -> str:
        """`podman run -d --rm` of `image`; the container id."""
        argv = [
            self.binary, "run", "--detach", "--rm", f"--network={network}",
            f"--pull={pull}", f"--tls-verify={str(tls_verify).lower()}",
        ]  # fmt: skip
        if name:
            argv += ["--name", name]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        argv += [image, *args]
        result = await run_tool(
            argv, env=self.environment.env, time_limit=time_limit, capture_stdout=True
        )
        if not result.ok:
            raise failure(f"podman run {image} failed", result)
        return result.stdout.decode().strip().splitlines()[-1]

    async def stop(self, container_id: str, *, grace_seconds: int = 10) -> None:
        """Stop (and, as it runs with --rm, remove) a container; a gone one is fine."""
        result = await run_tool(
            [self.binary, "stop", f"--time={grace_seconds}", "--ignore", container_id],
            env=self.environment.env,
            time_limit=grace_seconds + 60,
        )
        if not result.ok:
            raise failure(f"podman stop {container_id} failed", result)

    async def logs(self, container_id: str, *, tail: int = 50) -> str:
        result = await run_tool(
            [self.binary, "logs", f"--tail={tail}", container_id],
            env=self.environment.env,
            time_limit=60,
        )
        return result.tail_text()

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        result = await run_tool(
            [self.binary, "container", "inspect", container_id],
            env=self.environment.env,
            time_limit=60,
            capture_stdout=True,
        )
        if not result.ok:
            return None
        items: list[dict[str, Any]] = json.loads(result.stdout or b"[]")
        return items[0] if items else None
