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

import httpx
import pytest
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
