"""The builder as an operator on the real API server, without a real build.

The image a build would produce is put in the registry under the build's content-derived
tag beforehand (a tiny busybox image), so the reconcile finds it with a manifest HEAD: the
build succeeds as `ImageFound`, never starting, and the Bento names the digest. Also: a
kubectl-applied BentoRequest for a bento that does not exist fails once with a reason and
is not retried until its spec changes; deleting a request removes its Bento.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment
from shared.contracts.builder import (
    BUILD_ID_ANNOTATION,
    ORGANIZATION_LABEL,
    RequestBuild,
)
from shared.kube.kinds import BENTO_REQUEST
from tests.builder.conftest import BuilderStack, bentoml, build_greeter, login, wait_for
from tests.fixtures.bentoml import Client
from tests.fixtures.stack import TOKEN_HEADER

pytestmark = [pytest.mark.k8s, pytest.mark.images, pytest.mark.timeout(600)]


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


@pytest.fixture
def greeter_source(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("service.py", "bentofile.yaml"):
        (source / name).write_text(
            (Path(__file__).parents[1] / "images/bento-greeter" / name).read_text()
        )
    return source


async def test_an_image_in_the_registry_is_found_not_built(
    builder_stack: Callable[..., Any],
    bentoml_client: Client,
    greeter_source: Path,
    busybox_image: str,
    container_env: ContainerEnvironment,
    tmp_path: Path,
) -> None:
    async with builder_stack(policy="never") as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        home = tmp_path / "home"
        await login(bentoml_client, home, bs.stack)
        tag = await build_greeter(bentoml_client, home, greeter_source)
        await bentoml(bentoml_client, home, "push", tag)
        name, version = tag.split(":")
        service = bs.controller.service
        found = await service.bento_version("default", name, version)
        repository, image_tag, _ = service.target(found)
        pushed = await Buildah(container_env).push(
            busybox_image, f"{repository}:{image_tag}", tls_verify=False
        )
        assert await bs.builds() == []  # policy never: the push built nothing

        build = await service.request_build(
            RequestBuild(organization="default", bento_name=name, bento_version=version)
        )
        done = await bs.build_done(build.id, timeout=60)
        assert done["status"] == "succeeded", done
        assert done["reason"] == "ImageFound"
        assert done["digest"] == pushed
        assert done["attempts"] == 0  # never started

        resource = bs.resource_name(name, version)

        async def available() -> dict[str, Any] | None:
            request = await bs.request(resource)
            ok = conditions(request).get("BentoAvailable", {}).get("status") == "True"
            return request if ok else None

        request = await wait_for(available, timeout=30, what="BentoAvailable")
        assert request["metadata"]["annotations"][BUILD_ID_ANNOTATION] == build.id
        assert request["metadata"]["labels"][ORGANIZATION_LABEL] == "default"
        status = request["status"]
        assert status["phase"] == "succeeded"
        assert status["observedGeneration"] == request["metadata"]["generation"]
        assert conditions(request)["ImageExists"]["reason"] == "ImageFound"
        bento = await bs.bento(resource)
        assert bento is not None
        assert bento["spec"]["image"] == f"{repository}@{pushed}"
        assert bento["spec"]["tag"] == tag
        assert [s["name"] for s in bento["spec"]["services"]] == ["Greeter"]
        owner = bento["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("BentoRequest", request["metadata"]["uid"])

        events = await bs.events("build.requested", "build.started", "build.completed")
        assert [e["type"] for e in events] == ["build.requested", "build.completed"]
        assert events[1]["data"]["image"] == f"{repository}@{pushed}"

        # The builds API of the gateway.
        headers = {TOKEN_HEADER: bs.stack.admin_token}
        async with httpx.AsyncClient(base_url=bs.stack.url, headers=headers, timeout=30) as api:
            listed = await api.get("/api/ekiben/v1/builds", params={"bento": tag})
            assert listed.status_code == 200, listed.text
            assert listed.json()["total"] == 1, listed.text
            assert listed.json()["items"][0]["image"] == f"{repository}@{pushed}"
            assert (await api.get("/api/ekiben/v1/builds?status=failed")).json()["total"] == 0
            one = await api.get(f"/api/ekiben/v1/builds/{build.id}")
            assert one.json()["status"] == "succeeded"
            assert one.json()["bento"] == tag
            posted = await api.post("/api/ekiben/v1/builds", json={"bento": tag})
            assert posted.status_code == 202, posted.text
            assert posted.json()["id"] == build.id  # the same content: the same build
            bad = await api.post("/api/ekiben/v1/builds", json={"bento": "No Such"})
            assert bad.status_code == 422
            assert "not a bento tag" in bad.json()["error"]["message"]
            missing = await api.post("/api/ekiben/v1/builds", json={"bento": "absent:v1"})
            assert missing.status_code == 422, missing.text
            assert "not found" in missing.json()["error"]["message"]
            assert (await api.get("/api/ekiben/v1/builds/nope")).status_code == 404
            assert (await api.get("/api/ekiben/v1/builds/nope/logs")).status_code == 404
            wrong = await api.get("/api/ekiben/v1/builds?status=done")
            assert wrong.status_code == 422

        # Asking again builds nothing: the succeeded build covers the same content.
        again = await service.request_build(
            RequestBuild(organization="default", bento_name=name, bento_version=version)
        )
        assert again.id == build.id
        assert len(await bs.builds()) == 1

        # An idle controller writes nothing: the request keeps its resourceVersion.
        before = (await bs.request(resource) or {})["metadata"]["resourceVersion"]
        bs.controller.controller.enqueue((bs.namespace, resource))
        await asyncio.sleep(1.0)
        assert (await bs.request(resource) or {})["metadata"]["resourceVersion"] == before

        # Deleting the request removes its Bento (garbage collection of the owner reference).
        await bs.objects.delete(BENTO_REQUEST, (bs.namespace, resource))

        async def bento_gone() -> bool:
            return await bs.bento(resource) is None

        await wait_for(bento_gone, timeout=60, what="the Bento to be collected")


async def test_a_kubectl_applied_request_for_a_missing_bento_fails_once(
    builder_stack: Callable[..., Any],
) -> None:
    async with builder_stack() as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        manifest = {
            "apiVersion": BENTO_REQUEST.api_version,
            "kind": "BentoRequest",
            "metadata": {"name": "nobody-v1", "namespace": bs.namespace},
            "spec": {"bentoTag": "nobody:v1"},
        }
        await bs.objects.create(BENTO_REQUEST, manifest)

        async def failed() -> dict[str, Any] | None:
            request = await bs.request("nobody-v1")
            cond = conditions(request).get("BentoAvailable", {})
            return request if cond.get("reason") == "BentoNotFound" else None

        request = await wait_for(failed, timeout=30, what="a BentoNotFound condition")
        assert request["status"]["phase"] == "failed"
        assert "nobody:v1 not found" in conditions(request)["BentoAvailable"]["message"]
        controller = bs.controller.controller
        assert controller is not None
        assert controller.is_failed((bs.namespace, "nobody-v1"))
        rv = request["metadata"]["resourceVersion"]
        await asyncio.sleep(2.0)  # no hot loop: nothing is written again
        assert (await bs.request("nobody-v1") or {})["metadata"]["resourceVersion"] == rv
        assert await bs.builds() == []
