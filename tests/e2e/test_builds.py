"""`ekiben up` builds what the real `bentoml` client pushes, and the image runs.

The stack is `ekiben up` as a user runs it: embedded NATS, PostgreSQL, SeaweedFS, OCI
registry and Kubernetes control plane (simulated nodes), the five services as processes.
The Python base image is copied into the stack's registry first, as an air-gapped site
would (`skopeo copy ... docker://HOST:PORT/library/python:3.11-slim`): the registry is the
builder's first docker.io mirror. Then the client pushes the greeter bento, and:
`bento.pushed` starts a build (buildah, `local` backend), `skopeo inspect` shows the pushed
digest, the `Bento` on the API server (read with the printed kubeconfig) names it,
`build.completed` is on the stream, and podman runs the image (`--network host`, `PORT`):
`/greet` answers 200. An identical re-push builds nothing; a code-only change rebuilds from
the layer cache.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.builder.adapters.containers import write_container_config
from services.builder.adapters.skopeo import Skopeo
from services.builder.settings import ContainersSettings
from shared.contracts.builder import bento_resource_name
from shared.kube.client import api_client_from_kubeconfig
from shared.kube.kinds import BENTO
from shared.kube.objects import Objects
from tests.e2e.conftest import Client, RunningStack
from tests.fixtures.events import stored_events
from tests.fixtures.oci import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG, build_python_base, serve_image
from tests.fixtures.report import report

pytestmark = [pytest.mark.slow, pytest.mark.images, pytest.mark.timeout(1800)]

GREETER = Path(__file__).parents[1] / "images" / "bento-greeter"
TOKEN_HEADER = "X-YATAI-API-TOKEN"


async def finished_build(api: httpx.AsyncClient, tag: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = (await api.get("/api/ekiben/v1/builds", params={"bento": tag})).json()
        if page["items"] and page["items"][0]["status"] in ("succeeded", "failed"):
            found: dict[str, Any] = page["items"][0]
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"no finished build of {tag} in {timeout:.0f}s")


def build_greeter(client: Client, home: Path, source: Path) -> str:
    client.run(home, "build", cwd=source)
    listed = json.loads(client.run(home, "list", "-o", "json").stdout)
    return str(max(listed, key=lambda b: b["creation_time"])["tag"])


async def test_ekiben_up_builds_what_the_client_pushes_and_the_image_runs(
    bentoml_client: Client, stack_factory: Any, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    stack: RunningStack = stack_factory()
    state = json.loads((stack.data_dir / "stack.json").read_text())
    registry, kubeconfig = state["registry"], Path(state["kubeconfig"])
    assert kubeconfig.is_file()
    env = write_container_config(ContainersSettings(state_dir=tmp_path / "containers"))
    await Skopeo(env).copy(
        f"oci-archive:{build_python_base()}",
        f"docker://{registry}/{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
        dest_tls_verify=False,
    )

    source, home = tmp_path / "src", tmp_path / "home"
    source.mkdir()
    for name in ("service.py", "bentofile.yaml"):
        (source / name).write_text((GREETER / name).read_text())
    bentoml_client.run(
        home, "cloud", "login", "--endpoint", stack.gateway, "--api-token", stack.admin_token
    )
    tag = build_greeter(bentoml_client, home, source)
    name, version = tag.split(":")
    bentoml_client.run(home, "push", tag)

    headers = {TOKEN_HEADER: stack.admin_token}
    async with httpx.AsyncClient(base_url=stack.gateway, headers=headers, timeout=30) as api:
        build = await finished_build(api, tag)
        assert build["status"] == "succeeded", build
        assert build["trigger"] == "push"
        image = build["image"]
        repository, digest = image.split("@")
        assert repository.startswith(f"{registry}/")
        report(pytestconfig, f"e2e: ekiben up built {tag} -> {image}")

        inspected = await Skopeo(env).inspect(f"docker://{build['target']}", tls_verify=False)
        assert inspected["Digest"] == digest

        kube = await api_client_from_kubeconfig(kubeconfig)
        async with kube:
            bento = await Objects(kube, field_manager="e2e").get(
                BENTO, ("ekiben", bento_resource_name("default", name, version))
            )
        assert bento is not None
        assert bento["spec"]["image"] == image

        events = await stored_events(stack.nats_url)
        completed = [e for e in events if e["type"] == "build.completed"]
        assert [e["data"]["build_id"] for e in completed] == [build["id"]]
        assert completed[0]["data"]["image"] == image

        async with (
            serve_image(env, image, pull="always", ready_timeout=180) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as http,
        ):
            greet = await http.post("/greet", json={"name": "ekiben"})
            assert greet.status_code == 200, greet.text
            assert greet.text == "Hello, ekiben!"

        # The same bento pushed again (forced upload): no build starts.
        bentoml_client.run(home, "push", "--force", tag)
        for _ in range(50):
            pushes = [e for e in await stored_events(stack.nats_url) if e["type"] == "bento.pushed"]
            if len(pushes) == 2:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        assert (await api.get("/api/ekiben/v1/builds")).json()["total"] == 1
        started = [e for e in await stored_events(stack.nats_url) if e["type"] == "build.started"]
        assert len(started) == 1

        # A code-only change rebuilds from the layer cache.
        service = source / "service.py"
        service.write_text(service.read_text().replace('GREETING = "Hello"', 'GREETING = "Hey"'))
        tag2 = build_greeter(bentoml_client, home, source)
        bentoml_client.run(home, "push", tag2)
        build2 = await finished_build(api, tag2)
        assert build2["status"] == "succeeded", build2
        logs = (await api.get(f"/api/ekiben/v1/builds/{build2['id']}/logs")).text
        assert logs.count("--> Using cache") >= 3, logs[-3000:]
        report(pytestconfig, f"e2e: code-only rebuild of {tag2}: {logs.splitlines()[-3]}")
