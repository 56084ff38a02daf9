"""What goes wrong in builds, on the real servers: each ends with a reason, nothing is lost.

- A requirement that does not exist: `build.failed` with reason `BuildError` and the last
  lines of the failing step, a False `ImageBuilding` condition, no Bento.
- An unsafe bento archive (an entry with `..`, a symlink out of the context): refused by
  the builder with reason `UnsafeArchive`, nothing written outside the build context.
- A builder killed (SIGKILL) in the middle of a build: the next builder takes the Lease,
  finds the build interrupted and builds it again; one build, two attempts, one image.
- A build past its deadline: stopped, `build.failed` with reason `DeadlineExceeded`.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.skopeo import Skopeo
from shared.devstack.process import free_port
from tests.builder.conftest import (
    BuilderStack,
    bentoml,
    build_greeter,
    login,
    settings_environment,
    upload_bento,
    wait_for,
    write_bento_project,
)
from tests.builder.test_operator import conditions
from tests.fixtures.bentoml import Client

pytestmark = [pytest.mark.k8s, pytest.mark.images, pytest.mark.timeout(1200)]
ROOT = Path(__file__).parents[2]


async def push_project(bs: BuilderStack, client: Client, home: Path, project: Path) -> str:
    await login(client, home, bs.stack)
    tag = await build_greeter(client, home, project)
    await bentoml(client, home, "push", tag)
    return tag


async def build_of(bs: BuilderStack, version: str, *, timeout: float = 60) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        rows = [b for b in await bs.builds() if b["bento_version"] == version]
        return rows[-1] if rows else None

    found: dict[str, Any] = await wait_for(probe, timeout=timeout, what=f"a build of {version}")
    return found


async def test_a_broken_requirement_fails_with_the_reason_and_the_last_lines(
    builder_stack: Callable[..., Any],
    bentoml_client: Client,
    python_base_image: str,
    tmp_path: Path,
) -> None:
    project = write_bento_project(tmp_path / "src", packages=["ekiben-no-such-package==0.0.1"])
    async with builder_stack() as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        tag = await push_project(bs, bentoml_client, tmp_path / "home", project)
        name, version = tag.split(":")
        done = await bs.build_done((await build_of(bs, version))["id"])
        assert done["status"] == "failed"
        assert done["reason"] == "BuildError"
        assert "did not build" in done["message"]
        tail = "\n".join(done["log_tail"])
        assert "ekiben-no-such-package" in tail, tail

        failed = await bs.events("build.failed")
        assert len(failed) == 1
        assert failed[0]["data"]["reason"] == "BuildError"
        assert "ekiben-no-such-package" in failed[0]["data"]["message"]

        resource = bs.resource_name(name, version)

        async def marked() -> dict[str, Any] | None:
            request = await bs.request(resource)
            ok = conditions(request).get("ImageBuilding", {}).get("reason") == "BuildError"
            return request if ok else None

        request = await wait_for(marked, timeout=30, what="ImageBuilding=False BuildError")
        assert conditions(request)["ImageBuilding"]["status"] == "False"
        assert "ekiben-no-such-package" in conditions(request)["ImageBuilding"]["message"]
        assert request["status"]["phase"] == "failed"
        assert await bs.bento(resource) is None
        # Not retried by itself: the same spec stays failed.
        await asyncio.sleep(2)
        assert len(await bs.builds()) == 1


def unsafe_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = b"FROM scratch\n"
        info = tarfile.TarInfo("env/docker/Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../../outside-the-context")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    return out.getvalue()


async def test_an_unsafe_archive_is_refused_with_a_reason(
    builder_stack: Callable[..., Any], tmp_path: Path
) -> None:
    async with builder_stack() as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        await upload_bento(bs, "evil", "v1", unsafe_tar())

        done = await bs.build_done((await build_of(bs, "v1"))["id"], timeout=120)
        assert done["status"] == "failed"
        assert done["reason"] == "UnsafeArchive"
        assert "outside-the-context" in done["message"]
        assert "'..'" in done["message"]
        work = bs.settings.containers.state_dir / "work"
        assert not list(work.parent.rglob("outside-the-context"))
        failed = await bs.events("build.failed")
        assert [e["data"]["reason"] for e in failed] == ["UnsafeArchive"]


async def test_a_build_past_its_deadline_fails_with_the_reason(
    builder_stack: Callable[..., Any],
    bentoml_client: Client,
    python_base_image: str,
    tmp_path: Path,
) -> None:
    script = f"#!/bin/sh\necho slow-{uuid.uuid4().hex}\nsleep 300\n"
    project = write_bento_project(tmp_path / "src", setup_script=script)
    async with builder_stack(containers={"build_timeout_seconds": 25}) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        tag = await push_project(bs, bentoml_client, tmp_path / "home", project)
        done = await bs.build_done((await build_of(bs, tag.split(":")[1]))["id"], timeout=300)
        assert done["status"] == "failed"
        assert done["reason"] == "DeadlineExceeded"
        assert "deadline of 25s" in done["message"]
        failed = await bs.events("build.failed")
        assert [e["data"]["reason"] for e in failed] == ["DeadlineExceeded"]


async def test_a_builder_killed_mid_build_is_followed_by_one_that_builds_it_again(
    builder_stack: Callable[..., Any],
    bentoml_client: Client,
    python_base_image: str,
    container_env: ContainerEnvironment,
    tmp_path: Path,
) -> None:
    marker = f"slow-{uuid.uuid4().hex}"
    project = write_bento_project(
        tmp_path / "src", setup_script=f"#!/bin/sh\necho {marker}\nsleep 20\n"
    )
    async with builder_stack(builder=False) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        # The first builder is a process of its own, to be killed.
        port = free_port()
        env = settings_environment(bs.settings, EKIBEN_BUILDER_HTTP__PORT=str(port))
        first = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "builder"],
            cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "builder.log").open("w"),
        )  # fmt: skip

        async def ready() -> bool:
            async with httpx.AsyncClient() as http:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

        try:
            await wait_for(ready, timeout=60, what="the builder process")
            tag = await push_project(bs, bentoml_client, tmp_path / "home", project)
            build = await build_of(bs, tag.split(":")[1], timeout=60)

            async def in_the_slow_step() -> bool:
                seen = await bs.pool.fetchval(
                    "SELECT count(*) FROM build_logs WHERE build_id = $1 AND line = $2",
                    build["id"], marker,
                )  # fmt: skip
                return bool(seen)

            await wait_for(in_the_slow_step, timeout=300, what="the build's slow step")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        row = await bs.pool.fetchrow("SELECT * FROM builds WHERE id = $1", build["id"])
        assert row["status"] == "building"
        assert row["attempts"] == 1

    # A new builder (in this process) takes the Lease once the dead one's runs out.
    async with builder_stack() as bs2:
        bs2: BuilderStack  # type: ignore[no-redef]
        done = await bs2.build_done(build["id"], timeout=600)
        assert done["status"] == "succeeded", (done["reason"], done["message"], done["log_tail"])
        assert done["attempts"] == 2
        assert len(await bs2.builds()) == 1
        started = await bs2.events("build.started")
        assert [e["data"]["attempt"] for e in started] == [1, 2]
        assert len(await bs2.events("build.completed")) == 1
        target = f"{done['image_repository']}:{done['image_tag']}"
        inspected = await Skopeo(container_env).inspect(f"docker://{target}", tls_verify=False)
        assert inspected["Digest"] == done["digest"]
