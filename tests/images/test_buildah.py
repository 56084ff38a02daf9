"""The buildah, skopeo and registry adapters on small busybox images: real tools, seconds each.

Streaming of build output, failures with their last lines, timeouts and cancellation that
kill the whole build, no working container left behind, push digests that the registry
(httpx client) and skopeo agree on.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from services.builder.adapters.buildah import Buildah, BuildFailed
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.process import ToolTimeout
from services.builder.adapters.registry import RegistryClient
from services.builder.adapters.skopeo import Skopeo
from shared.devstack.oci import OciRegistry
from shared.errors import is_permanent

pytestmark = [pytest.mark.images, pytest.mark.timeout(300)]


def dockerfile(context: Path, text: str) -> Path:
    path = context / f"Dockerfile.{uuid.uuid4().hex[:8]}"
    path.write_text(text)
    return path


def processes_with(marker: str) -> list[int]:
    """PIDs whose command line contains `marker` (to check that nothing outlived a kill)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


async def test_build_streams_each_line_as_buildah_prints_it(
    container_env: ContainerEnvironment, busybox_image: str, busybox_context: Path
) -> None:
    seen: list[tuple[float, str]] = []

    async def sink(line: str) -> None:
        seen.append((time.monotonic(), line))

    marker = uuid.uuid4().hex[:8]
    file = dockerfile(
        busybox_context,
        f"FROM {busybox_image}\nRUN echo first-{marker} && sleep 2 && echo second-{marker}\n",
    )
    built = await Buildah(container_env).build(
        busybox_context, file, f"localhost/ekiben-test/stream:{marker}", pull="never", log_sink=sink
    )
    lines = [line for _, line in seen]
    first = next(t for t, line in seen if line == f"first-{marker}")
    second = next(t for t, line in seen if line == f"second-{marker}")
    assert second - first >= 1.5, "the first line reached the sink only at the end"
    assert lines[0].startswith("STEP 1/2: FROM")
    assert built.steps == 2
    assert built.image_id
    await Buildah(container_env).remove_images(built.tag)


async def test_a_failed_build_carries_its_last_lines_and_leaves_no_container(
    container_env: ContainerEnvironment, busybox_image: str, busybox_context: Path
) -> None:
    buildah = Buildah(container_env)
    before = {c.id for c in await buildah.working_containers()}
    marker = f"oops-marker-{uuid.uuid4().hex[:8]}"
    file = dockerfile(
        busybox_context, f"FROM {busybox_image}\nRUN echo step-one\nRUN echo {marker}; exit 3\n"
    )
    with pytest.raises(BuildFailed) as caught:
        await buildah.build(busybox_context, file, "localhost/ekiben-test/fails:1", pull="never")
    error = caught.value
    assert is_permanent(error)
    assert error.reason == "BuildError"
    assert marker in error.message
    assert any("exit status 3" in line for line in error.tail)
    assert error.details["log_tail"] == list(error.tail)
    assert {c.id for c in await buildah.working_containers()} == before


async def test_a_build_past_its_time_limit_is_killed_with_its_steps(
    container_env: ContainerEnvironment, busybox_image: str, busybox_context: Path
) -> None:
    buildah = Buildah(container_env)
    before = {c.id for c in await buildah.working_containers()}
    seconds = str(3000 + int(uuid.uuid4().int % 999))  # a sleep no other process runs
    file = dockerfile(
        busybox_context, f"FROM {busybox_image}\nRUN echo started && exec sleep {seconds}\n"
    )
    began = time.monotonic()
    with pytest.raises(ToolTimeout) as caught:
        await buildah.build(
            busybox_context, file, "localhost/ekiben-test/slow:1", pull="never", time_limit=8
        )
    assert time.monotonic() - began < 45
    assert not is_permanent(caught.value)
    assert "started" in caught.value.tail
    assert processes_with(f"sleep {seconds}") == []
    assert {c.id for c in await buildah.working_containers()} == before


async def test_a_cancelled_build_is_killed_with_its_steps(
    container_env: ContainerEnvironment, busybox_image: str, busybox_context: Path
) -> None:
    buildah = Buildah(container_env)
    before = {c.id for c in await buildah.working_containers()}
    seconds = str(4000 + int(uuid.uuid4().int % 999))
    file = dockerfile(
        busybox_context, f"FROM {busybox_image}\nRUN echo started && exec sleep {seconds}\n"
    )
    started = asyncio.Event()

    async def sink(line: str) -> None:
        if line == "started":
            started.set()

    task = asyncio.create_task(
        buildah.build(
            busybox_context, file, "localhost/ekiben-test/cancel:1", pull="never", log_sink=sink
        )
    )
    await asyncio.wait_for(started.wait(), 60)
    assert processes_with(f"sleep {seconds}"), "the step is running"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with(f"sleep {seconds}") == []
    assert {c.id for c in await buildah.working_containers()} == before


async def test_push_returns_the_digest_the_registry_and_skopeo_report(
    container_env: ContainerEnvironment, busybox_image: str, oci_registry: OciRegistry
) -> None:
    buildah = Buildah(container_env)
    destination = f"{oci_registry.host}/ekiben-test/busybox:{uuid.uuid4().hex[:8]}"
    digest = await buildah.push(busybox_image, destination, tls_verify=False)
    assert digest.startswith("sha256:")

    inspected = await Skopeo(container_env).inspect(f"docker://{destination}", tls_verify=False)
    assert inspected["Digest"] == digest

    repository, _, tag = destination.split("/", 1)[1].rpartition(":")
    async with RegistryClient(oci_registry.url) as registry:
        assert await registry.ping()
        assert await registry.manifest_digest(repository, tag) == digest
        assert await registry.manifest_digest(repository, digest) == digest
        assert await registry.manifest_digest(repository, "no-such-tag") is None
        assert await registry.manifest_digest("ekiben-test/no-such-repo", "v1") is None


async def test_images_are_removed_and_unknown_ones_ignored(
    container_env: ContainerEnvironment, busybox_image: str
) -> None:
    buildah = Buildah(container_env)
    tag = f"localhost/ekiben-test/removable:{uuid.uuid4().hex[:8]}"
    await buildah.tag(busybox_image, tag)
    assert await buildah.image_exists(tag)
    await buildah.remove_images(tag, "localhost/ekiben-test/never-built:1")
    assert not await buildah.image_exists(tag)
    assert await buildah.image_exists(busybox_image), "only the tag went, not the image"
