"""Push, build, deploy: `bentoml deployment ...` with the real 1.4.40 client against `ekiben up`.

Nothing plays another service's part. `ekiben up` runs the builder (buildah, its embedded
registry) and the deployer on its embedded control plane with kwok nodes. The client pushes
the greeter bento; `bento.pushed` starts its build. `deployment create --wait` must return
once the deployment runs on the simulated nodes, having passed through image-building (the
build is still running) and deploying. The Deployment's pod template, read back from the API
server, names the image the builder built, and podman runs that container (its command, env
and image) on the host network: the bento answers 200, as the pod would. Then get, list,
update, apply, terminate and delete are checked through the client's own output.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.builder.adapters.containers import write_container_config
from services.builder.adapters.podman import Podman
from services.builder.adapters.skopeo import Skopeo
from services.builder.settings import ContainersSettings
from shared.contracts.builder import bento_resource_name
from shared.devstack.kube import find_binaries
from shared.devstack.process import StartupError, free_port
from shared.kube.client import api_client_from_kubeconfig
from shared.kube.kinds import BENTO, DEPLOYMENT
from shared.kube.objects import Objects
from tests.e2e.conftest import Client, RunningStack
from tests.e2e.test_bentoml_client import login
from tests.fixtures.events import stored_events
from tests.fixtures.oci import (
    BASE_IMAGE_REPOSITORY,
    BASE_IMAGE_TAG,
    build_python_base,
    podman_argv,
    podman_run,
    wait_ready,
)
from tests.fixtures.require import unavailable
from tests.fixtures.stack import TOKEN_HEADER

pytestmark = [pytest.mark.slow, pytest.mark.k8s, pytest.mark.images, pytest.mark.timeout(1800)]

GREETER = Path(__file__).parents[1] / "images" / "bento-greeter"


def build(client: Client, home: Path, project: Path) -> str:
    shutil.copytree(GREETER, project)
    client.run(home, "build", cwd=project)
    listed = json.loads(client.run(home, "list", "-o", "json").stdout)
    return str(max(listed, key=lambda b: b["creation_time"])["tag"])


async def seed_base_image(stack: RunningStack, tmp_path: Path) -> None:
    """The Python base image into the stack's registry, its first docker.io mirror, as an
    air-gapped site would copy it (`skopeo copy ... docker://HOST:PORT/library/python:...`)."""
    state = json.loads((stack.data_dir / "stack.json").read_text())
    env = write_container_config(ContainersSettings(state_dir=tmp_path / "containers"))
    await Skopeo(env).copy(
        f"oci-archive:{build_python_base()}",
        f"docker://{state['registry']}/{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
        dest_tls_verify=False,
    )


async def answers_like_the_pod(container: dict[str, Any], image: str, tmp_path: Path) -> None:
    """podman runs the pod template's container (command, env, image) on the host network."""
    env = write_container_config(ContainersSettings(state_dir=tmp_path / "run"))
    entrypoint, args, variables = podman_argv(container, free_port())
    container_id = await podman_run(env, image, entrypoint, args, variables)
    podman = Podman(env)
    try:
        url = f"http://127.0.0.1:{variables['PORT']}"
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            await wait_ready(http, podman, container_id)
            greet = await http.post("/greet", json={"name": "kube"})
            assert greet.status_code == 200, greet.text
            assert greet.text == "Hello, kube!"
    finally:
        await podman.stop(container_id)


def output_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


async def statuses(nats_url: str, name: str) -> list[str]:
    return [
        str(event["data"]["status"])
        for event in await stored_events(nats_url, "deployment.status_changed")
        if ((event.get("data") or {}).get("deployment") or {}).get("name") == name
    ]


async def test_bentoml_deployment_commands_against_ekiben_up(
    bentoml_client: Client, stack_factory: Any, tmp_path: Path
) -> None:
    try:
        if not find_binaries().full_cluster:
            unavailable("kube-controller-manager, kube-scheduler or kwok not built")
    except StartupError as exc:
        unavailable(str(exc))
    stack: RunningStack = stack_factory()
    kubeconfig = stack.data_dir / "k8s" / "kubeconfig"
    assert kubeconfig.exists(), "ekiben up started no control plane"
    client, home = bentoml_client, tmp_path / "home"
    assert login(client, home, stack).returncode == 0
    await seed_base_image(stack, tmp_path)
    tag = build(client, home, tmp_path / "project")
    client.run(home, "push", tag)
    name, version = tag.split(":")

    # create --wait, in the background: it returns once the deployment runs.
    created: dict[str, subprocess.CompletedProcess[str]] = {}

    def create() -> None:
        created["result"] = client.run(
            home, "deployment", "create", tag, "--name", "greeter", "--scaling-min", "1",
            "--scaling-max", "2", "--env", "MODE=prod", "--wait", "--timeout", "900",
            check=False,
        )  # fmt: skip

    thread = threading.Thread(target=create, name="bentoml-create")
    thread.start()
    headers = {TOKEN_HEADER: stack.admin_token}
    async with (
        httpx.AsyncClient(base_url=stack.gateway, headers=headers, timeout=30) as http,
        await api_client_from_kubeconfig(kubeconfig) as api,
    ):
        namespace = "ekiben"  # where `ekiben up` builds and deploys
        objects = Objects(api, field_manager="e2e")
        await asyncio.to_thread(thread.join, 960)
        result = created["result"]
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        seen = await statuses(stack.nats_url, "greeter")
        assert seen[0] == "image-building", seen
        assert "deploying" in seen
        assert seen[-1] == "running"
        live = await objects.get(DEPLOYMENT, (namespace, "greeter-greeter"))
        assert live is not None
        assert live["status"]["readyReplicas"] >= 1
        builds = (await http.get("/api/ekiben/v1/builds", params={"bento": tag})).json()
        assert [b["status"] for b in builds["items"]] == ["succeeded"], builds
        image = builds["items"][0]["image"]
        bento = await objects.get(BENTO, (namespace, bento_resource_name("default", name, version)))
        assert bento is not None
        assert bento["spec"]["image"] == image
        (container,) = [
            c for c in live["spec"]["template"]["spec"]["containers"] if c["name"] == "bento"
        ]
        assert container["image"] == image
        await answers_like_the_pod(container, image, tmp_path)

    got = output_json(client.run(home, "deployment", "get", "greeter", "-o", "json"))
    assert got["name"] == "greeter"
    assert got["bento"] == tag
    assert got["status"]["status"] == "running"
    assert got["created_by"] == "admin"
    service = got["config"]["services"]["Greeter"]
    assert (service["scaling"]["min_replicas"], service["scaling"]["max_replicas"]) == (1, 2)
    assert {"name": "MODE", "value": "prod"} in got["config"]["envs"]

    listed = output_json(client.run(home, "deployment", "list", "-o", "json"))
    assert [d["name"] for d in listed] == ["greeter"]

    client.run(home, "deployment", "update", "greeter", "--scaling-max", "3")
    got = output_json(client.run(home, "deployment", "get", "greeter", "-o", "json"))
    assert got["config"]["services"]["Greeter"]["scaling"]["max_replicas"] == 3

    # The client's apply compares the config's cluster with the deployment's: name it.
    config = tmp_path / "apply.yaml"
    config.write_text(yaml.safe_dump({
        "name": "greeter", "bento": tag, "cluster": got["cluster"],
        "services": {"Greeter": {"scaling": {"min_replicas": 2, "max_replicas": 4}}},
    }))  # fmt: skip
    client.run(home, "deployment", "apply", "-f", str(config))
    got = output_json(client.run(home, "deployment", "get", "greeter", "-o", "json"))
    assert got["config"]["services"]["Greeter"]["scaling"]["min_replicas"] == 2

    terminated = client.run(home, "deployment", "terminate", "greeter", "--wait")
    assert "terminated successfully" in terminated.stdout
    got = output_json(client.run(home, "deployment", "get", "greeter", "-o", "json"))
    assert got["status"]["status"] == "terminated"

    deleted = client.run(home, "deployment", "delete", "greeter")
    assert "deleted successfully" in deleted.stdout
    missing = client.run(home, "deployment", "get", "greeter", check=False)
    assert missing.returncode != 0
