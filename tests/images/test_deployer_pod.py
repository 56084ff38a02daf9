"""The pod template the deployer generates really runs the bento.

The greeter bento is built into an image by the same path the builder takes (buildah on the
bento's own Dockerfile, pushed to a real registry). The deployer's renderer makes the
Deployment for it; the Deployment is applied to the real API server and its pod template
read back from there; podman then runs exactly that container (its command, its env, its
image) on the host network, and the bento answers 200 on its probes and its API.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_asyncio import client

from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.adapters.podman import Podman
from services.deployer.render import RenderOptions, render
from shared.devstack.oci import OciRegistry
from shared.devstack.process import free_port
from shared.kube.kinds import DEPLOYMENT
from shared.kube.objects import Objects
from tests.fixtures.bentoml import Client
from tests.fixtures.oci import podman_argv, podman_run, wait_ready
from tests.fixtures.report import report
from tests.images.test_bento_image import (
    BENTO_SOURCE,
    Bento,
    PushedImage,
    build_and_push,
    build_bento,
)
from tests.k8s.conftest import kube_api, kube_control_plane, kube_namespace

__all__ = ["kube_api", "kube_control_plane", "kube_namespace"]

pytestmark = [pytest.mark.images, pytest.mark.k8s, pytest.mark.timeout(1200)]

OWNER = {"apiVersion": "serving.ekiben.dev/v1alpha1", "kind": "BentoDeployment",
         "name": "greeter", "uid": str(uuid.uuid4()), "controller": True,
         "blockOwnerDeletion": False}  # fmt: skip


@pytest.fixture(scope="module")
async def greeter_image(
    bentoml_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    container_env: ContainerEnvironment,
    oci_registry: OciRegistry,
    python_base_image: str,
) -> AsyncIterator[PushedImage]:
    work = tmp_path_factory.mktemp("deployer-pod")
    source = work / "src"
    shutil.copytree(BENTO_SOURCE, source)
    bento = build_bento(bentoml_client, work / "bentoml", source)
    pushed = await build_and_push(container_env, oci_registry, bento, work)
    yield pushed
    await Buildah(container_env).remove_images(pushed.built.tag)


async def test_the_generated_pod_template_runs_the_bento(
    greeter_image: PushedImage,
    container_env: ContainerEnvironment,
    kube_api: client.ApiClient,
    kube_namespace: str,
    pytestconfig: pytest.Config,
) -> None:
    image = f"{greeter_image.destination.rpartition(':')[0]}@{greeter_image.digest}"
    bd = {
        "apiVersion": "serving.ekiben.dev/v1alpha1", "kind": "BentoDeployment",
        "metadata": {"name": "greeter", "namespace": kube_namespace, "uid": OWNER["uid"]},
        "spec": {"bento": "default-greeter", "envs": [{"name": "GREETING_STYLE", "value": "x"}]},
    }  # fmt: skip
    bento = {
        "metadata": {"name": "default-greeter", "namespace": kube_namespace},
        "spec": {"tag": f"greeter:{greeter_image.bento.version}", "image": image,
                 "entryService": "Greeter", "services": [{"name": "Greeter"}]},
    }  # fmt: skip
    children = render(bd, bento, RenderOptions(namespace=kube_namespace), OWNER)
    (manifest,) = [c.manifest for c in children if c.kind is DEPLOYMENT]
    # Through the real API server (its defaulting and validation), read back from it.
    objects = Objects(kube_api, field_manager="ekiben-deployer")
    manifest["metadata"].pop("ownerReferences")  # no such owner exists on this server
    await objects.apply(DEPLOYMENT, manifest)
    live = await objects.get(DEPLOYMENT, (kube_namespace, manifest["metadata"]["name"]))
    assert live is not None
    template = live["spec"]["template"]["spec"]
    (container,) = [c for c in template["containers"] if c["name"] == "bento"]
    assert container["image"] == image

    port = free_port()
    entrypoint, args, env = podman_argv(container, port)
    podman = Podman(container_env)
    container_id = await podman_run(container_env, image, entrypoint, args, env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            ready = await wait_ready(http, podman, container_id)
            report(pytestconfig, f"deployer: the rendered pod answered /readyz in {ready:.1f}s")
            for probe in ("livenessProbe", "readinessProbe"):
                path = container[probe]["httpGet"]["path"]
                assert (await http.get(path)).status_code == 200, path
            greet = await http.post("/greet", json={"name": "pod"})
            assert greet.status_code == 200, greet.text
            assert greet.text == "Hello, pod!"
    finally:
        await podman.stop(container_id)


PAIR_SERVICE = """
import bentoml


@bentoml.service(resources={"cpu": "1"})
class Model:
    @bentoml.api
    def predict(self, x: int) -> int:
        return x * 2


@bentoml.service(resources={"cpu": "1"})
class Front:
    model = bentoml.depends(Model)

    @bentoml.api
    def double(self, x: int) -> dict:
        import os

        return {"value": self.model.predict(x=x), "served_by": os.environ["EKIBEN_SERVICE"]}
"""


@pytest.fixture(scope="module")
async def pair_image(
    bentoml_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    container_env: ContainerEnvironment,
    oci_registry: OciRegistry,
    python_base_image: str,
) -> AsyncIterator[PushedImage]:
    work = tmp_path_factory.mktemp("deployer-pair")
    source = work / "src"
    source.mkdir()
    (source / "service.py").write_text(PAIR_SERVICE)
    (source / "bentofile.yaml").write_text('service: "service:Front"\ninclude: ["service.py"]\n')
    home = work / "bentoml"
    bentoml_client.run(home, "build", cwd=source)
    store = home / "bentos" / "front"
    version = (store / "latest").read_text().strip()
    pushed = await build_and_push(
        container_env, oci_registry, Bento("front", version, store / version), work
    )
    yield pushed
    await Buildah(container_env).remove_images(pushed.built.tag)


async def test_a_two_service_bento_runs_each_service_wired_to_its_dependency(
    pair_image: PushedImage,
    container_env: ContainerEnvironment,
    kube_api: client.ApiClient,
    kube_namespace: str,
) -> None:
    image = f"{pair_image.destination.rpartition(':')[0]}@{pair_image.digest}"
    manifest = yaml.safe_load((pair_image.bento.path / "bento.yaml").read_text())
    services = [
        {"name": s["name"], "dependencies": [d["service"] for d in s.get("dependencies") or []]}
        for s in manifest["services"]
    ]
    assert {s["name"] for s in services} == {"Front", "Model"}
    bd = {
        "apiVersion": "serving.ekiben.dev/v1alpha1", "kind": "BentoDeployment",
        "metadata": {"name": "pair", "namespace": kube_namespace, "uid": OWNER["uid"]},
        "spec": {"bento": "default-front"},
    }  # fmt: skip
    bento = {
        "metadata": {"name": "default-front", "namespace": kube_namespace},
        "spec": {"tag": f"front:{pair_image.bento.version}", "image": image,
                 "entryService": manifest["entry_service"], "services": services},
    }  # fmt: skip
    objects = Objects(kube_api, field_manager="ekiben-deployer")
    containers: dict[str, dict[str, Any]] = {}
    for child in render(bd, bento, RenderOptions(namespace=kube_namespace), OWNER):
        if child.kind is DEPLOYMENT:
            child.manifest["metadata"].pop("ownerReferences")
            await objects.apply(DEPLOYMENT, child.manifest)
            live = await objects.get(DEPLOYMENT, (kube_namespace, child.name))
            assert live is not None
            containers[child.service] = live["spec"]["template"]["spec"]["containers"][0]
    front_command = containers["Front"]["command"]
    wired = front_command[front_command.index("--depends") + 1]
    assert wired == f"Model=http://pair-model.{kube_namespace}.svc:3000"

    # On the host network the Service's name resolves to this host (--add-host) and each
    # component gets its own free port; the wiring itself is the template's.
    ports = {"Model": free_port(), "Front": free_port()}
    started: list[str] = []
    podman = Podman(container_env)
    try:
        for name in ("Model", "Front"):
            entrypoint, args, env = podman_argv(containers[name], ports[name])
            args = [a.replace(":3000", f":{ports['Model']}") for a in args]
            started.append(await podman_run(
                container_env, image, entrypoint, args, env,
                add_hosts=[f"pair-model.{kube_namespace}.svc:127.0.0.1"],
            ))  # fmt: skip
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[name]}") as http:
                await wait_ready(http, podman, started[-1])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['Front']}") as http:
            answer = await http.post("/double", json={"x": 21})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"value": 42, "served_by": "Front"}
    finally:
        for container_id in started:
            await podman.stop(container_id)
