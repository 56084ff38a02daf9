"""A push becomes an image, for real: the `bentoml` client, buildah, the registry, podman.

The real `bentoml` 1.4.40 client pushes the greeter bento (a 1.2+ style service whose own
Dockerfile says `FROM python:3.11-slim`, resolved through the docker.io mirror to the
Debian-built base in the test registry) to the gateway; the builder, triggered by
`bento.pushed`, builds it with buildah (`local` backend) and pushes it. The image is in the
registry (skopeo agrees on the digest), the Bento on the API server names it, the events
are on the stream, the builds API shows it and its logs, and podman runs it: `/greet`
answers 200. An identical re-push builds nothing; a code-only change rebuilds from the
layer cache. With `keep_images=1` the store then holds only the newest image, and the
cache under it still serves the next code-only change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.skopeo import Skopeo
from services.builder.handlers import BENTO_PUSHED_CONSUMER
from tests.builder.conftest import GREETER, BuilderStack, bentoml, build_greeter, login, wait_for
from tests.builder.test_operator import conditions
from tests.fixtures.bentoml import Client
from tests.fixtures.oci import serve_image
from tests.fixtures.report import report
from tests.fixtures.stack import TOKEN_HEADER

pytestmark = [pytest.mark.k8s, pytest.mark.images, pytest.mark.timeout(1800)]


async def newest_build(bs: BuilderStack, version: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        rows = [b for b in await bs.builds() if b["bento_version"] == version]
        return rows[-1] if rows else None

    found: dict[str, Any] = await wait_for(probe, timeout=30, what=f"a build of {version}")
    return found


async def test_a_pushed_bento_is_built_pushed_published_and_runs(
    builder_stack: Callable[..., Any],
    bentoml_client: Client,
    python_base_image: str,
    container_env: ContainerEnvironment,
    tmp_path: Path,
    pytestconfig: pytest.Config,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("service.py", "bentofile.yaml"):
        (source / name).write_text((GREETER / name).read_text())
    home = tmp_path / "home"
    async with builder_stack(containers={"keep_images": 1}) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        await login(bentoml_client, home, bs.stack)
        tag = await build_greeter(bentoml_client, home, source)
        name, version = tag.split(":")
        await bentoml(bentoml_client, home, "push", tag)

        build = await newest_build(bs, version)
        assert build["trigger"] == "push"
        done = await bs.build_done(build["id"])
        assert done["status"] == "succeeded", done
        assert done["reason"] == "ImagePushed"
        assert done["attempts"] == 1
        seconds = (done["finished_at"] - done["started_at"]).total_seconds()
        report(pytestconfig, f"builder: {tag} built and pushed in {seconds:.1f}s")
        image = f"{done['image_repository']}@{done['digest']}"
        target = f"{done['image_repository']}:{done['image_tag']}"

        inspected = await Skopeo(container_env).inspect(f"docker://{target}", tls_verify=False)
        assert inspected["Digest"] == done["digest"]

        resource = bs.resource_name(name, version)

        async def published() -> dict[str, Any] | None:
            request = await bs.request(resource)
            ok = conditions(request).get("BentoAvailable", {}).get("status") == "True"
            return request if ok else None

        request = await wait_for(published, timeout=30, what="BentoAvailable")
        assert conditions(request)["ImageExists"]["reason"] == "ImagePushed"
        assert conditions(request)["ImageBuilding"]["status"] == "False"
        bento = await bs.bento(resource)
        assert bento is not None
        assert bento["spec"]["image"] == image

        events = await bs.events("build.requested", "build.started", "build.completed")
        assert [e["type"] for e in events] == [
            "build.requested", "build.started", "build.completed",
        ]  # fmt: skip
        assert events[2]["data"]["image"] == image
        assert events[2]["data"]["build_id"] == build["id"]

        # The builds API of the gateway.
        headers = {TOKEN_HEADER: bs.stack.admin_token}
        async with httpx.AsyncClient(base_url=bs.stack.url, headers=headers, timeout=30) as api:
            listed = (await api.get("/api/ekiben/v1/builds", params={"bento": tag})).json()
            assert listed["total"] == 1
            assert listed["items"][0]["image"] == image
            one = (await api.get(f"/api/ekiben/v1/builds/{build['id']}")).json()
            assert one["status"] == "succeeded"
            logs = await api.get(f"/api/ekiben/v1/builds/{build['id']}/logs")
            assert logs.status_code == 200
            assert "STEP 1/" in logs.text
            assert f"pushed {image}" in logs.text

        # What the registry holds runs: podman, host network, PORT.
        async with (
            serve_image(container_env, image, pull="always", ready_timeout=180) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as http,
        ):
            greet = await http.post("/greet", json={"name": "builder"})
            assert greet.status_code == 200, greet.text
            assert greet.text == "Hello, builder!"

        # An identical re-push (forced upload of the same bento) builds nothing.
        await bentoml(bentoml_client, home, "push", "--force", tag)

        async def seen_twice() -> bool:
            count = await bs.pool.fetchval(
                "SELECT count(*) FROM processed_events WHERE consumer = $1", BENTO_PUSHED_CONSUMER
            )
            return bool(count == 2)

        await wait_for(seen_twice, timeout=30, what="the second bento.pushed")
        assert len(await bs.builds()) == 1
        assert len(await bs.events("build.started")) == 1

        # A code-only change: a new version, rebuilt from the layer cache up to COPY . ./
        service = source / "service.py"
        service.write_text(service.read_text().replace('GREETING = "Hello"', 'GREETING = "Hi"'))
        tag2 = await build_greeter(bentoml_client, home, source)
        assert tag2 != tag
        await bentoml(bentoml_client, home, "push", tag2)
        build2 = await newest_build(bs, tag2.split(":")[1])
        done2 = await bs.build_done(build2["id"])
        assert done2["status"] == "succeeded", done2
        seconds2 = (done2["finished_at"] - done2["started_at"]).total_seconds()
        lines = [
            r["line"]
            for r in await bs.pool.fetch(
                "SELECT line FROM build_logs WHERE build_id = $1 ORDER BY seq", build2["id"]
            )
        ]
        cached = sum(1 for line in lines if line.startswith("--> Using cache"))
        report(pytestconfig, f"builder: code-only rebuild in {seconds2:.1f}s ({cached} cached)")
        assert cached >= 3, lines[-40:]
        assert done2["digest"] != done["digest"]

        # The store keeps one built image: the first is gone, the second stays...
        buildah = Buildah(container_env)
        target2 = f"{done2['image_repository']}:{done2['image_tag']}"

        async def pruned() -> list[str] | None:
            names = [n for image in await buildah.images() for n in image.names]
            return names if target not in names else None

        names = await wait_for(pruned, timeout=30, what=f"{target} pruned from the store")
        assert target2 in names
        # ... and so do the layers under it: the next code-only change is cached again.
        service.write_text(service.read_text().replace('GREETING = "Hi"', 'GREETING = "Hey"'))
        tag3 = await build_greeter(bentoml_client, home, source)
        await bentoml(bentoml_client, home, "push", tag3)
        build3 = await newest_build(bs, tag3.split(":")[1])
        done3 = await bs.build_done(build3["id"])
        assert done3["status"] == "succeeded", done3
        cached3 = await bs.pool.fetchval(
            "SELECT count(*) FROM build_logs WHERE build_id = $1 AND line LIKE '--> Using cache%'",
            build3["id"],
        )
        assert cached3 >= 3
