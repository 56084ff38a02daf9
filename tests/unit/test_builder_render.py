"""The builder's pure parts: content-derived tags, the manifests it writes, the status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.builder import render
from services.builder.settings import BuilderSettings
from shared.contracts.builder import Build
from shared.contracts.registry import Kind, UploadStatus, Version
from shared.contracts.vocabulary import BuildStatus
from tests.fixtures.manifests import bento_manifest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def version(sha256: str | None = None, **manifest: Any) -> Version:
    return Version(
        uid="u", kind=Kind.BENTO, organization="default", repository="iris", version="v1",
        description="", manifest={**bento_manifest(models=["clf:m1"]), **manifest}, labels=[],
        size_bytes=10, bentoml_version="1.4.40", build_at=NOW, created_by=None, created_at=NOW,
        updated_at=None, upload_status=UploadStatus.SUCCESS, upload_started_at=None,
        upload_finished_at=None, upload_finished_reason="", sha256=sha256,
    )  # fmt: skip


def build(status: BuildStatus, **fields: Any) -> Build:
    base: dict[str, Any] = {
        "id": "b1", "organization": "default", "bento_name": "iris", "bento_version": "v1",
        "status": status, "trigger": "push", "image_repository": "r:5000/ekiben/iris",
        "image_tag": "v1-abc", "backend": "local", "namespace": "ns", "created_at": NOW,
        "attempts": 1,
    }  # fmt: skip
    return Build.model_validate({**base, **fields})


def test_the_tag_follows_the_content_and_the_configuration() -> None:
    config = render.build_config({}, None)
    a = render.image_tag("v1", render.content_digest(version("aa" * 32)), config)
    assert a == render.image_tag("v1", render.content_digest(version("aa" * 32)), config)
    assert a.startswith("v1-")
    assert len(a) == len("v1-") + 12
    assert a != render.image_tag("v1", render.content_digest(version("bb" * 32)), config)
    other = render.build_config({}, {"PIP_INDEX_URL": "http://mirror"})
    assert a != render.image_tag("v1", render.content_digest(version("aa" * 32)), other)
    # Without an archive digest, the manifest decides.
    assert render.content_digest(version()) != render.content_digest(version(service="x:Y"))
    assert render.content_digest(version()).startswith("manifest:")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800.0), ("1h30m", 5400.0), ("45s", 45.0), ("", None)]
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert render.parse_duration(text) == seconds


def test_a_bad_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="duration"):
        render.parse_duration("10 minutes")


def test_the_request_and_the_bento_carry_the_manifest_shape() -> None:
    request = render.bento_request(
        resource_name="default-iris-v1", namespace="ns", organization="default",
        version=version(), build_id="b1",
    )  # fmt: skip
    spec = request["spec"]
    assert spec["bentoTag"] == "iris:v1"
    assert spec["services"] == [{"name": "Iris", "models": ["clf:m1"]}]
    assert spec["models"] == [{"tag": "clf:m1"}]
    assert spec["entryService"] == "Iris"
    assert spec["context"] == {"bentomlVersion": "1.4.40"}
    request["metadata"]["uid"] = "uid-1"
    bento = render.bento(request, organization="default", image="r/ekiben/iris@sha256:" + "0" * 64)
    assert bento["metadata"]["name"] == "default-iris-v1"
    assert bento["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert bento["metadata"]["ownerReferences"][0]["kind"] == "BentoRequest"
    assert bento["spec"]["image"].endswith("@sha256:" + "0" * 64)
    assert bento["spec"]["services"] == spec["services"]


def test_dependencies_as_the_client_writes_them() -> None:
    shape = render.bento_shape(
        {"services": [{"name": "A", "dependencies": [{"service": "B"}, "C"]}, {"name": "B"}]}
    )
    assert shape["services"] == [{"name": "A", "dependencies": ["B", "C"]}, {"name": "B"}]


def test_status_per_build_state_and_the_transitions() -> None:
    status, transitions = render.request_status(
        None, generation=2, build=build(BuildStatus.BUILDING), bento_ready=False
    )
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ImageBuilding"]["status"] == "True"
    assert conditions["ImageExists"]["status"] == "False"
    assert all(c["observedGeneration"] == 2 for c in conditions.values())
    assert status["phase"] == "building"
    assert {t[0] for t in transitions} == {"ImageBuilding", "ImageExists", "BentoAvailable"}

    done = build(BuildStatus.SUCCEEDED, digest="sha256:" + "1" * 64, reason="ImagePushed")
    done = done.model_copy(update={"image": "r:5000/ekiben/iris@sha256:" + "1" * 64})
    status2, transitions2 = render.request_status(
        status, generation=2, build=done, bento_ready=True
    )
    conditions = {c["type"]: c for c in status2["conditions"]}
    assert conditions["BentoAvailable"]["status"] == "True"
    assert conditions["ImageExists"]["reason"] == "ImagePushed"
    assert status2["image"] == done.image
    assert ("BentoAvailable", "True", "BentoReady") in transitions2
    # The same again: nothing changes, nothing to report.
    status3, transitions3 = render.request_status(
        status2, generation=2, build=done, bento_ready=True
    )
    assert status3 == status2
    assert transitions3 == []

    failed = build(
        BuildStatus.FAILED, reason="BuildError", message="no such package", log_tail=["E: x"]
    )
    status4, _ = render.request_status(status2, generation=2, build=failed, bento_ready=False)
    conditions = {c["type"]: c for c in status4["conditions"]}
    assert conditions["ImageBuilding"]["reason"] == "BuildError"
    assert "E: x" in conditions["ImageBuilding"]["message"]
    assert conditions["BentoAvailable"]["status"] == "False"
    assert status4["phase"] == "failed"


def test_the_build_job_carries_the_settings_and_the_request_overrides() -> None:
    settings = BuilderSettings(
        job={"registry_secret": "regcred", "service_account": "builder",
             "node_selector": {"pool": "build"},
             "tolerations": [{"key": "build", "operator": "Exists"}]},
    )  # fmt: skip
    request = {
        "metadata": {"name": "default-iris-v1", "namespace": "ns", "uid": "u1"},
        "apiVersion": "resources.ekiben.dev/v1alpha1", "kind": "BentoRequest",
        "spec": {"bentoTag": "iris:v1", "builder": {"resources": {"limits": {"cpu": "2"}}}},
    }  # fmt: skip
    job = render.build_job(
        request, build=build(BuildStatus.BUILDING), image="buildah:1",
        download_url="https://s3/presigned", deadline_seconds=600,
        registry_secret=settings.job.registry_secret,
        service_account=settings.job.service_account,
        node_selector=settings.job.node_selector, tolerations=settings.job.tolerations,
        resources=settings.job.resources, backoff_limit=0, ttl_seconds=60,
        build_args={"A": "b c"}, tls_verify=True,
    )  # fmt: skip
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert pod["serviceAccountName"] == "builder"
    assert pod["nodeSelector"] == {"pool": "build"}
    assert pod["tolerations"] == [{"key": "build", "operator": "Exists"}]
    container = pod["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "2"}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BENTO_URL"] == "https://s3/presigned"
    assert env["IMAGE"] == "r:5000/ekiben/iris:v1-abc"
    assert "--build-arg 'A=b c'" in env["BUILD_ARGS"]
    assert {"name": "registry-auth", "mountPath": "/auth", "readOnly": True} in container[
        "volumeMounts"
    ]
    secret = next(v for v in pod["volumes"] if v["name"] == "registry-auth")["secret"]
    assert secret["secretName"] == "regcred"
    assert "AWS" not in str(job)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (None, "running"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, "succeeded"),
        ({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
         "failed"),
    ],
)  # fmt: skip
def test_job_state(status: dict[str, Any] | None, state: str) -> None:
    assert render.job_state({"status": status})[0] == state
    assert render.job_state(None)[0] == "absent"


def test_the_chart_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EKIBEN_BUILDER_BACKEND", "kubernetes")
    monkeypatch.setenv("EKIBEN_BUILDER_JOB__IMAGE", "quay.io/buildah/stable:v1")
    monkeypatch.setenv("EKIBEN_BUILDER_JOB__REGISTRY_SECRET", "regcred")
    monkeypatch.setenv("EKIBEN_BUILDER_KUBE__WATCH_NAMESPACES", '["a", "b"]')
    settings = BuilderSettings()
    assert settings.backend == "kubernetes"
    assert settings.job.image == "quay.io/buildah/stable:v1"
    assert settings.job.registry_secret == "regcred"
    assert settings.kube.watched == ["a", "b"]
    assert settings.kube.lease_name == "ekiben-builder"
    monkeypatch.setenv("EKIBEN_BUILDER_KUBE__WATCH_NAMESPACES", '["*"]')
    assert BuilderSettings().kube.watched == [""]


def test_the_resources_a_service_declares_reach_the_bento() -> None:
    shape = render.bento_shape({"services": [
        {"name": "Llm", "config": {"resources": {"cpu": "2", "memory": "8Gi", "gpu": 1,
                                                "gpu_type": "nvidia-l4"}}},
        {"name": "Cheap", "config": {"resources": {"cpu": 0.5}}},
        # What Kubernetes cannot read is left to the deployment's settings.
        {"name": "Odd", "config": {"resources": {"cpu": "cpu_count", "memory": "2GB"}}},
    ]})  # fmt: skip
    assert shape["services"] == [
        {"name": "Llm", "resources": {"requests": {"cpu": "2", "memory": "8Gi", "gpu": 1}}},
        {"name": "Cheap", "resources": {"requests": {"cpu": "0.5"}}},
        {"name": "Odd"},
    ]
