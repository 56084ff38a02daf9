"""buildah: build a bento's own Dockerfile into an image, push it, clean up after it.

    env = write_container_config(settings.containers, settings.registry)
    buildah = Buildah(env, binary=settings.containers.buildah)
    built = await buildah.build(context, context / "env/docker/Dockerfile", "greeter:v1",
                                log_sink=store_line)
    digest = await buildah.push("greeter:v1", settings.registry.image("greeter", "v1"),
                                tls_verify=settings.registry.tls_verify)

Builds use `buildah bud --layers` (the layer cache: a code-only change of a bento rebuilds
from `COPY . ./` only), `--force-rm` (a failed step leaves no working container),
`--isolation chroot` and `--network host` by default (the Dockerfile's apt-get and
pip/uv steps reach the network; no netns, no cgroups needed). Every output line goes to
the `log_sink` as buildah prints it. A failed build raises `BuildFailed` with the last
lines; a build past its timeout, or whose task is cancelled, is killed with every process
it started and its leftover working containers are removed.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.builder.adapters.auth import Auth, auth_file_for
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.process import (
    DEFAULT_TAIL_LINES,
    LogSink,
    ToolResult,
    ToolTimeout,
    failure,
    run_tool,
)
from shared.errors import EkibenError, PermanentError, TemporaryError

PullPolicy = Literal["missing", "newer", "always", "never"]
# buildah 1.28's --pull values: "false" pulls only what is missing, "true" also what is newer.
_PULL_FLAG: dict[PullPolicy, str] = {
    "missing": "false",
    "newer": "true",
    "always": "always",
    "never": "never",
}
_STEP = re.compile(r"^STEP (\d+)/(\d+): ")
_USING_CACHE = re.compile(r"^--> Using cache ")


class BuildFailed(PermanentError):
    """The Dockerfile did not build. Rebuilding the same bento fails the same way, mostly:
    the message and `tail` carry buildah's last lines (the failing step's output)."""

    def __init__(self, message: str, *, tail: Sequence[str], exit_code: int) -> None:
        super().__init__(
            message, reason="BuildError", details={"exit_code": exit_code, "log_tail": list(tail)}
        )
        self.tail = tuple(tail)
        self.exit_code = exit_code


class PushFailed(TemporaryError):
    """The image could not be pushed; `reason` says whether retrying may help."""


class PushRefused(PermanentError):
    """The registry refused the push (credentials, permissions, TLS/HTTP mismatch)."""


@dataclass(frozen=True)
class BuiltImage:
    """A finished build: the image id, the tag it carries, and how much came from cache."""

    image_id: str
    tag: str
    seconds: float
    steps: int
    cached_steps: int
    tail: tuple[str, ...]


@dataclass(frozen=True)
class StoredImage:
    """A tagged image in the layer store: its id, its names, and when it was created."""

    id: str
    names: tuple[str, ...]
    created: int


@dataclass(frozen=True)
class WorkingContainer:
    id: str
    name: str
    image: str


class Buildah:
    """buildah run with the generated configuration (`ContainerEnvironment.env`)."""

    def __init__(
        self,
        env: ContainerEnvironment,
        *,
        binary: str = "buildah",
        build_timeout: float = 3600.0,
        push_timeout: float = 1800.0,
        isolation: str = "chroot",
        network: str = "host",
    ) -> None:
        self.environment = env
        self.binary = binary
        self.build_timeout = build_timeout
        self.push_timeout = push_timeout
        self.isolation = isolation
        self.network = network

    async def _run(
        self,
        *args: str,
        time_limit: float = 120.0,
        log_sink: LogSink | None = None,
        capture_stdout: bool = False,
        tail_lines: int = DEFAULT_TAIL_LINES,
    ) -> ToolResult:
        return await run_tool(
            [self.binary, *args],
            env=self.environment.env,
            time_limit=time_limit,
            log_sink=log_sink,
            capture_stdout=capture_stdout,
            tail_lines=tail_lines,
        )

    # --- build -------------------------------------------------------------------------

    async def build(
        self,
        context_dir: Path,
        dockerfile: Path,
        tag: str,
        *,
        build_args: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        layers: bool = True,
        network: str | None = None,
        isolation: str | None = None,
        pull: PullPolicy = "missing",
        image_format: Literal["oci", "docker"] = "oci",
        log_sink: LogSink | None = None,
        time_limit: float | None = None,
        tail_lines: int = DEFAULT_TAIL_LINES,
    ) -> BuiltImage:
        """`buildah bud` of `dockerfile` in `context_dir`, tagged `tag` in the local store.

        `network` and `isolation` default to the adapter's (`host`, `chroot`). `pull` says
        when FROM images are fetched: `missing` (only when not in the store; the default,
        fast and stable), `newer` (ask the registry at each build), `always`, `never`.
        Every output line goes to `log_sink` as it is printed. Raises `BuildFailed` (with
        the last `tail_lines` lines), `ToolTimeout` after `time_limit` seconds (default:
        the adapter's) and `ToolNotFound`; a cancelled call kills the build.
        """
        args = [
            "bud",
            "--file", _absolute(dockerfile),
            "--tag", tag,
            f"--layers={'true' if layers else 'false'}",
            "--force-rm",
            f"--network={network or self.network}",
            f"--isolation={isolation or self.isolation}",
            f"--pull={_PULL_FLAG[pull]}",
            f"--format={image_format}",
        ]  # fmt: skip
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        steps = cached = 0

        async def sink(line: str) -> None:
            nonlocal steps, cached
            if match := _STEP.match(line):
                steps = max(steps, int(match.group(1)))
            elif _USING_CACHE.match(line):
                cached += 1
            if log_sink is not None:
                await log_sink(line)

        with tempfile.TemporaryDirectory(prefix="bud-", dir=self._scratch()) as scratch:
            iidfile = Path(scratch) / "iid"
            args += ["--iidfile", str(iidfile), _absolute(context_dir)]
            before = await self._container_ids()
            try:
                result = await self._run(
                    *args,
                    time_limit=time_limit or self.build_timeout,
                    log_sink=sink,
                    tail_lines=tail_lines,
                )
            except BaseException:
                # Killed (timeout, cancel): its working containers were not cleaned up.
                await self._remove_new_containers(before)
                raise
            if not result.ok:
                await self._remove_new_containers(before)
                raise BuildFailed(
                    f"build of {tag} failed (buildah exit {result.returncode}); last lines:\n"
                    + result.tail_text(),
                    tail=result.tail,
                    exit_code=result.returncode,
                )
            image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        return BuiltImage(
            image_id=image_id.removeprefix("sha256:"),
            tag=tag,
            seconds=result.seconds,
            steps=steps,
            cached_steps=cached,
            tail=result.tail,
        )

    def _scratch(self) -> Path:
        path = self.environment.config_dir / "scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- push --------------------------------------------------------------------------

    async def push(
        self,
        tag: str,
        destination: str,
        *,
        tls_verify: bool = True,
        auth: Auth = None,
        log_sink: LogSink | None = None,
        time_limit: float | None = None,
        retries: int = 2,
    ) -> str:
        """Push local image `tag` to `destination` (`HOST/REPO:TAG`); its manifest digest.

        The digest (`sha256:...`) is what buildah wrote with `--digestfile`: the manifest as
        stored in the registry, so `destination@digest` pins exactly this image.
        """
        host = destination.split("/", 1)[0]
        with (
            tempfile.TemporaryDirectory(prefix="push-", dir=self._scratch()) as scratch,
            auth_file_for(auth, host, directory=Path(scratch)) as authfile,
        ):
            digestfile = Path(scratch) / "digest"
            args = [
                "push",
                f"--tls-verify={'true' if tls_verify else 'false'}",
                "--digestfile", str(digestfile),
                f"--retry={retries}",
            ]  # fmt: skip
            if authfile is not None:
                args += ["--authfile", str(authfile)]
            args += [tag, f"docker://{destination}"]
            result = await self._run(
                *args, time_limit=time_limit or self.push_timeout, log_sink=log_sink
            )
            if not result.ok:
                raise _push_error(destination, result)
            digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if not digest.startswith("sha256:"):
            raise PushFailed(
                f"push of {destination} wrote no digest; last lines:\n{result.tail_text()}",
                reason="PushFailed",
            )
        return digest

    # --- images and working containers ---------------------------------------------------

    async def image_exists(self, ref: str) -> bool:
        result = await self._run("inspect", "--type", "image", ref, capture_stdout=True)
        return result.ok

    async def tag(self, image: str, *names: str) -> None:
        """Give local image `image` (a tag or an id) more names."""
        result = await self._run("tag", image, *names)
        if not result.ok:
            raise failure(f"buildah tag {image} failed", result)

    async def remove_images(self, *refs: str, force: bool = False) -> None:
        """Remove images (tags or ids) from the store; unknown ones are ignored.

        The layers stay as long as another image uses them, so the build cache of other
        bentos survives.
        """
        for ref in refs:
            args = ["rmi", *(["--force"] if force else []), ref]
            result = await self._run(*args)
            if not result.ok and not _is_unknown_image(result):
                raise failure(f"buildah rmi {ref} failed", result)

    async def images(self) -> list[StoredImage]:
        """The tagged images in the store (not the untagged layers of the build cache)."""
        for _ in range(3):  # an image removed while buildah lists them fails the listing
            result = await self._run("images", "--json", capture_stdout=True)
            if result.ok or not _is_unknown_image(result):
                break
        if not result.ok:
            raise failure("buildah images failed", result)
        listed = json.loads(result.stdout or b"null") or []
        return [
            StoredImage(
                id=str(item.get("id", "")),
                names=tuple(str(name) for name in item.get("names") or ()),
                created=int(item.get("created") or 0),
            )
            for item in listed
        ]

    async def working_containers(self) -> list[WorkingContainer]:
        """buildah's working containers in the store (left behind by killed builds)."""
        result = await self._run("containers", "--json", capture_stdout=True)
        if not result.ok:
            raise failure("buildah containers failed", result)
        listed = json.loads(result.stdout or b"null") or []
        return [
            WorkingContainer(
                id=str(item.get("id", "")),
                name=str(item.get("containername", "")),
                image=str(item.get("imagename", "")),
            )
            for item in listed
        ]

    async def remove_containers(self, *ids: str) -> None:
        for container_id in ids:
            result = await self._run("rm", container_id)
            if not result.ok and "container not known" not in result.tail_text():
                raise failure(f"buildah rm {container_id} failed", result)

    async def prune_working_containers(self) -> list[str]:
        """Remove every working container; their ids. For a store no build is using."""
        ids = [c.id for c in await self.working_containers()]
        await self.remove_containers(*ids)
        return ids

    async def _container_ids(self) -> set[str]:
        try:
            return {c.id for c in await self.working_containers()}
        except EkibenError:
            return set()

    async def _remove_new_containers(self, before: set[str]) -> None:
        """Remove working containers that appeared during a build (best effort).

        Builds sharing one store concurrently would see each other's containers here; the
        builder runs one build per store at a time, or calls this only when idle.
        """
        try:
            new = [c.id for c in await self.working_containers() if c.id not in before]
            await self.remove_containers(*new)
        except (EkibenError, ToolTimeout):
            return


def _absolute(path: Path) -> str:
    # buildah resolves relative paths against its own working directory: never rely on it.
    return str(path.resolve())


def _is_unknown_image(result: ToolResult) -> bool:
    text = result.tail_text().lower()
    return "image not known" in text or "no such image" in text or "not known" in text


def _push_error(destination: str, result: ToolResult) -> EkibenError:
    text = result.tail_text()
    lowered = text.lower()
    details = {"exit_code": result.returncode, "log_tail": list(result.tail)}
    message = f"push of {destination} failed (buildah exit {result.returncode}); last lines:\n"
    if any(
        word in lowered
        for word in ("unauthorized", "authentication required", "denied", "forbidden")
    ):
        return PushRefused(message + text, reason="RegistryAuthFailed", details=details)
    if "http response to https client" in lowered:
        return PushRefused(
            message + text + "\n(the registry speaks plain HTTP: mark it insecure)",
            reason="RegistryInsecure",
            details=details,
        )
    if any(word in lowered for word in ("connection refused", "no such host", "i/o timeout")):
        return PushFailed(message + text, reason="RegistryUnreachable", details=details)
    return PushFailed(message + text, reason="PushFailed", details=details)
