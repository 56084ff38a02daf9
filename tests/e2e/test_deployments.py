"""`bentoml deployment ...` with the real 1.4.40 client against `ekiben up`.

`ekiben up` runs the deployer on its embedded control plane with kwok nodes. The test plays
the builder's part (the builder lands separately): when the deployment asks for an image it
publishes the Bento resource, as the contract in shared/contracts/builder.py says. Then
`create --wait` must return once the deployment runs on the simulated nodes, having passed
through image-building and deploying, and get, list, update, apply, terminate and delete are
checked through the client's own output.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from nats.js.errors import NotFoundError

from shared.contracts.builder import bento_resource_name
from shared.devstack.kube import find_binaries
from shared.devstack.process import StartupError
from shared.events import EVENT_STREAM
from shared.kube.client import api_client_from_kubeconfig
from shared.kube.kinds import BENTO, DEPLOYMENT
from shared.kube.objects import Objects
from tests.e2e.conftest import Client, RunningStack
from tests.e2e.test_bentoml_client import login
from tests.fixtures.require import unavailable
from tests.fixtures.stack import TOKEN_HEADER

pytestmark = [pytest.mark.slow, pytest.mark.k8s, pytest.mark.timeout(900)]

SERVICE = """
import bentoml


@bentoml.service(resources={"cpu": "1"})
class Greeter:
    @bentoml.api
    def hello(self, name: str = "world") -> str:
        return f"hello {name}"
"""
BENTOFILE = 'service: "service:Greeter"\ninclude: ["service.py"]\npython:\n  lock_packages: false\n'


def build(client: Client, home: Path, project: Path) -> str:
    project.mkdir(parents=True, exist_ok=True)
    (project / "service.py").write_text(SERVICE)
    (project / "bentofile.yaml").write_text(BENTOFILE)
    client.run(home, "build", cwd=project)
    listed = json.loads(client.run(home, "list", "-o", "json").stdout)
    return str(max(listed, key=lambda b: b["creation_time"])["tag"])


async def statuses(nats_url: str, name: str) -> list[str]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(EVENT_STREAM)
        except NotFoundError:
            return []
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            event = json.loads((await js.get_msg(EVENT_STREAM, seq)).data or b"{}")
            data = event.get("data") or {}
            if (
                event["type"] == "deployment.status_changed"
                and (data.get("deployment") or {}).get("name") == name
            ):
                found.append(str(data["status"]))
        return found
    finally:
        await nc.close()


def output_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


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
    tag = build(client, home, tmp_path / "project")
    client.run(home, "push", tag)
    name, version = tag.split(":")

    # create --wait, in the background: it returns once the deployment runs.
    created: dict[str, subprocess.CompletedProcess[str]] = {}

    def create() -> None:
        created["result"] = client.run(
            home, "deployment", "create", tag, "--name", "greeter", "--scaling-min", "1",
            "--scaling-max", "2", "--env", "MODE=prod", "--wait", "--timeout", "400",
            check=False,
        )  # fmt: skip

    thread = threading.Thread(target=create, name="bentoml-create")
    thread.start()
    headers = {TOKEN_HEADER: stack.admin_token}
    async with (
        httpx.AsyncClient(base_url=stack.gateway, headers=headers, timeout=30) as http,
        await api_client_from_kubeconfig(kubeconfig) as api,
    ):
        deadline = time.monotonic() + 120
        while True:  # the builder's part: publish the Bento once an image is asked for
            got = await http.get("/api/v2/deployments/greeter", params={"cluster": ""})
            if got.status_code == 200 and got.json()["status"] == "image-building":
                break
            assert time.monotonic() < deadline, got.text
            await asyncio.sleep(0.5)
        namespace = got.json()["kube_namespace"]
        objects = Objects(api, field_manager="test-builder")
        await objects.create(BENTO, {
            "apiVersion": BENTO.api_version, "kind": BENTO.kind,
            "metadata": {"name": bento_resource_name("default", name, version),
                         "namespace": namespace},
            "spec": {"tag": tag, "image": f"registry.invalid/ekiben/{name}:{version}",
                     "entryService": "Greeter", "services": [{"name": "Greeter"}]},
        })  # fmt: skip
        await asyncio.to_thread(thread.join, 420)
        result = created["result"]
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        seen = await statuses(stack.nats_url, "greeter")
        assert seen[0] == "image-building", seen
        assert "deploying" in seen
        assert seen[-1] == "running"
        live = await objects.get(DEPLOYMENT, (namespace, "greeter-greeter"))
        assert live is not None
        assert live["status"]["readyReplicas"] >= 1

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
