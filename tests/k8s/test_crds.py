"""The CRDs in deploy/crds against the real API server: accepted, validated, versioned."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.devstack.kube import KubeControlPlane

pytestmark = pytest.mark.k8s

RESOURCES = ("resources.ekiben.dev", "v1alpha1")
MERGE = "application/merge-patch+json"
SERVING = ("serving.ekiben.dev", "v1alpha1")


def bento_request(name: str = "iris") -> dict[str, Any]:
    return {
        "apiVersion": "resources.ekiben.dev/v1alpha1",
        "kind": "BentoRequest",
        "metadata": {"name": name},
        "spec": {
            "bentoTag": "iris_classifier:ab12cd34ef",
            "context": {"bentomlVersion": "1.3.14", "pythonVersion": "3.11"},
            "entryService": "IrisClassifier",
            "services": [
                {"name": "IrisClassifier", "dependencies": ["Preprocessor"], "models": ["iris:v1"]},
                {"name": "Preprocessor"},
            ],
            "models": [{"tag": "iris:v1", "size": "12Mi"}],
            "imageBuildTimeout": "30m",
            "buildArgs": {"PIP_INDEX_URL": "https://pypi.example/simple"},
        },
    }


def bento(name: str = "iris") -> dict[str, Any]:
    return {
        "apiVersion": "resources.ekiben.dev/v1alpha1",
        "kind": "Bento",
        "metadata": {"name": name},
        "spec": {
            "tag": "iris_classifier:ab12cd34ef",
            "image": "127.0.0.1:5000/ekiben/iris_classifier@sha256:" + "a" * 64,
            "entryService": "IrisClassifier",
            "services": [
                {"name": "IrisClassifier", "dependencies": ["Preprocessor"]},
                {"name": "Preprocessor"},
            ],
            "imagePullSecrets": [{"name": "regcred"}],
        },
    }


def bento_deployment(name: str = "iris") -> dict[str, Any]:
    """Everything a Yatai v2alpha1 user sets, in Ekiben's per-service shape."""
    return {
        "apiVersion": "serving.ekiben.dev/v1alpha1",
        "kind": "BentoDeployment",
        "metadata": {"name": name},
        "spec": {
            "bento": "iris",
            "labels": {"team": "ml"},
            "annotations": {"owner": "ml@example.com"},
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": 2, "memory": "4Gi"},
            },
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            },
            "envs": [
                {"name": "LOG_LEVEL", "value": "info"},
                {
                    "name": "HF_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                },
            ],
            "envFrom": [{"secretRef": {"name": "iris-secrets"}}],
            "extraPodSpec": {
                "serviceAccountName": "iris",
                "nodeSelector": {"pool": "cpu"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "zone", "operator": "In", "values": ["a"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
                "containers": [{"name": "log-shipper", "image": "fluent/fluent-bit:3.1"}],
            },
            "services": [
                {
                    "name": "IrisClassifier",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "8Gi", "gpu": 1},
                        "limits": {"gpu": 1},
                    },
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 10},
                    "extraPodSpec": {
                        "nodeSelector": {"pool": "gpu"},
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                        ],
                    },
                },
                {"name": "Preprocessor", "replicas": 2},
            ],
            "entryService": "IrisClassifier",
            "ingress": {
                "enabled": True,
                "host": "iris.example.com",
                "ingressClassName": "nginx",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "tls": {"secretName": "iris-tls"},
            },
        },
    }


async def create(
    api: client.ApiClient, namespace: str, body: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    group, version = body["apiVersion"].split("/")
    plural = body["kind"].lower() + "s"
    crs = client.CustomObjectsApi(api)
    created: dict[str, Any] = await crs.create_namespaced_custom_object(
        group, version, namespace, plural, body, **kwargs
    )
    return created


async def test_crds_are_established_with_status_and_printer_columns(
    kube_control_plane: KubeControlPlane,
) -> None:
    crds = kube_control_plane.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    )["items"]
    by_name = {crd["metadata"]["name"]: crd for crd in crds}
    expected = {
        "bentorequests.resources.ekiben.dev": ["bentoreq", "breq"],
        "bentos.resources.ekiben.dev": ["bto"],
        "bentodeployments.serving.ekiben.dev": ["bentodeploy", "bd"],
    }
    for name, short_names in expected.items():
        crd = by_name[name]
        assert crd["spec"]["names"]["shortNames"] == short_names
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        assert {"Phase", "Image", "Age"} <= columns
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
        # A non-structural schema would be served but flagged here.
        assert "NonStructuralSchema" not in conditions


async def test_valid_objects_are_accepted_and_defaulted(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    request = await create(kube_api, kube_namespace, bento_request())
    assert request["spec"]["forceBuild"] is False  # schema default
    created_bento = await create(kube_api, kube_namespace, bento())
    assert created_bento["spec"]["services"][0]["dependencies"] == ["Preprocessor"]
    deployment = await create(kube_api, kube_namespace, bento_deployment())
    spec = deployment["spec"]
    # Defaults are applied inside anchored sub-schemas reused per service too.
    assert spec["resources"]["gpuResourceName"] == "nvidia.com/gpu"
    assert spec["services"][0]["resources"]["gpuResourceName"] == "nvidia.com/gpu"
    assert spec["ingress"]["path"] == "/"
    # Pass-through Kubernetes types keep their unknown fields.
    assert spec["autoscaling"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    assert "nodeAffinity" in spec["extraPodSpec"]["affinity"]


async def test_printer_columns_are_served_as_a_table(
    kube_api: client.ApiClient, kube_namespace: str, kube_control_plane: KubeControlPlane
) -> None:
    await create(kube_api, kube_namespace, bento_deployment("shown"))
    crs = client.CustomObjectsApi(kube_api)
    await crs.patch_namespaced_custom_object_status(
        *SERVING,
        kube_namespace,
        "bentodeployments",
        "shown",
        {"status": {"phase": "running", "readyReplicas": 3, "image": "img:1"}},
        _content_type=MERGE,
    )
    table = kube_control_plane.request(
        "GET",
        f"/apis/serving.ekiben.dev/v1alpha1/namespaces/{kube_namespace}/bentodeployments",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Bento", "Phase", "Ready", "Replicas"]
    row = dict(zip(names, table["rows"][0]["cells"], strict=True))
    assert (row["Bento"], row["Phase"], row["Ready"], row["Image"]) == (
        "iris",
        "running",
        3,
        "img:1",
    )


def _broken(path: str, value: Any, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with the dotted `path` set to `value` (or removed when value is ...)."""
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[leaf]
    elif leaf.isdigit():
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return body


REJECTED = [
    pytest.param(
        _broken("spec.bentoTag", ..., bento_request()),
        "spec.bentoTag: Required value",
        id="bentorequest-missing-tag",
    ),
    pytest.param(
        _broken("spec.bentoTag", "Iris Classifier", bento_request()),
        "spec.bentoTag in body should match",
        id="bentorequest-bad-tag",
    ),
    pytest.param(
        _broken("spec.imageBuildTimeout", "half an hour", bento_request()),
        "spec.imageBuildTimeout in body should match",
        id="bentorequest-bad-duration",
    ),
    pytest.param(
        _broken("spec.image", ..., bento()),
        "spec.image: Required value",
        id="bento-missing-image",
    ),
    pytest.param(
        _broken("spec.bento", "Iris_Bento", bento_deployment()),
        "spec.bento in body should match",
        id="deployment-bad-bento-name",
    ),
    pytest.param(
        _broken("metadata.name", "x" * 41, bento_deployment()),
        "metadata.name must be at most 40 characters",
        id="deployment-name-too-long",
    ),
    pytest.param(
        _broken("spec.autoscaling.minReplicas", 6, bento_deployment()),
        "maxReplicas must be greater than or equal to minReplicas",
        id="deployment-min-above-max",
    ),
    pytest.param(
        _broken("spec.services.0.resources.requests.gpu", -1, bento_deployment()),
        "should be greater than or equal to 0",
        id="deployment-negative-gpu",
    ),
    pytest.param(
        _broken("spec.services.0.resources.requests.memory", "lots", bento_deployment()),
        "spec.services[0].resources.requests.memory in body should match",
        id="deployment-bad-quantity",
    ),
    pytest.param(
        _broken("spec.extraPodSpec.tolerations.0.operator", "Sometimes", bento_deployment()),
        'Unsupported value: "Sometimes"',
        id="deployment-toleration-enum",
    ),
    pytest.param(
        _broken("spec.autoscaling.metrics.0.type", "Vibes", bento_deployment()),
        'Unsupported value: "Vibes"',
        id="deployment-metric-type-enum",
    ),
    pytest.param(
        _broken("spec.extraPodSpec.containers.0.image", ..., bento_deployment()),
        "spec.extraPodSpec.containers[0].image: Required value",
        id="deployment-sidecar-without-image",
    ),
    pytest.param(
        _broken("spec.entryService", "Nope", bento_deployment()),
        "entryService must name one of spec.services",
        id="deployment-unknown-entry-service",
    ),
    pytest.param(
        _broken("spec.envFrom.0", {"prefix": "X_"}, bento_deployment()),
        "envFrom entries need exactly one of secretRef or configMapRef",
        id="deployment-envfrom-without-source",
    ),
    pytest.param(
        _broken("spec.ingress.enabled", False, bento_deployment()),
        "ingress.tls needs ingress.enabled",
        id="deployment-tls-without-ingress",
    ),
]


@pytest.mark.parametrize(("body", "message"), REJECTED)
async def test_objects_breaking_the_schema_are_rejected(
    kube_api: client.ApiClient, kube_namespace: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as caught:
        await create(kube_api, kube_namespace, body)
    assert caught.value.status == 422, caught.value.body
    status = json.loads(caught.value.body)
    assert status["reason"] == "Invalid"
    assert message in status["message"], status["message"]


async def test_unknown_fields_are_rejected_with_strict_validation(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    body = _broken("spec.replicaCount", 3, bento_deployment())
    with pytest.raises(ApiException) as caught:
        await create(kube_api, kube_namespace, body, field_validation="Strict")
    assert caught.value.status == 400
    assert 'unknown field "spec.replicaCount"' in json.loads(caught.value.body)["message"]


async def test_status_is_a_subresource_with_validated_conditions(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    crs = client.CustomObjectsApi(kube_api)
    created = await create(kube_api, kube_namespace, bento_request("status"))
    assert created["metadata"]["generation"] == 1
    condition = {
        "type": "ImageExists",
        "status": "True",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "reason": "Found",
        "message": "image in registry",
    }
    patch = {
        "spec": {"forceBuild": True},  # ignored: the status endpoint only writes status
        "status": {"phase": "succeeded", "observedGeneration": 1, "conditions": [condition]},
    }
    updated = await crs.patch_namespaced_custom_object_status(
        *RESOURCES, kube_namespace, "bentorequests", "status", patch, _content_type=MERGE
    )
    assert updated["status"]["conditions"][0]["reason"] == "Found"
    assert updated["spec"]["forceBuild"] is False
    assert updated["metadata"]["generation"] == 1  # status writes do not bump the generation

    # And the main endpoint ignores status.
    spec_patch = {"spec": {"forceBuild": True}, "status": {"phase": "failed"}}
    updated = await crs.patch_namespaced_custom_object(
        *RESOURCES, kube_namespace, "bentorequests", "status", spec_patch, _content_type=MERGE
    )
    assert updated["status"]["phase"] == "succeeded"
    assert updated["metadata"]["generation"] == 2

    bad = {"status": {"conditions": [{**condition, "status": "Maybe"}]}}
    with pytest.raises(ApiException) as caught:
        await crs.patch_namespaced_custom_object_status(
            *RESOURCES, kube_namespace, "bentorequests", "status", bad, _content_type=MERGE
        )
    assert caught.value.status == 422
    assert 'Unsupported value: "Maybe"' in json.loads(caught.value.body)["message"]


async def test_update_with_stale_resource_version_conflicts(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    crs = client.CustomObjectsApi(kube_api)
    created = await create(kube_api, kube_namespace, bento_deployment("race"))
    first, second = copy.deepcopy(created), copy.deepcopy(created)

    first["spec"]["replicas"] = 2
    updated = await crs.replace_namespaced_custom_object(
        *SERVING, kube_namespace, "bentodeployments", "race", first
    )
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    # `second` still carries the old resourceVersion: optimistic concurrency must refuse it.
    second["spec"]["replicas"] = 3
    with pytest.raises(ApiException) as caught:
        await crs.replace_namespaced_custom_object(
            *SERVING, kube_namespace, "bentodeployments", "race", second
        )
    assert caught.value.status == 409
    status = json.loads(caught.value.body)
    assert status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]

    # The same applies to the status subresource, which controllers write.
    stale_status = {**second, "status": {"phase": "running"}}
    with pytest.raises(ApiException) as caught:
        await crs.replace_namespaced_custom_object_status(
            *SERVING, kube_namespace, "bentodeployments", "race", stale_status
        )
    assert caught.value.status == 409


async def test_server_side_apply_tracks_field_owners(
    kube_namespace: str, kube_control_plane: KubeControlPlane
) -> None:
    path = (
        f"/apis/serving.ekiben.dev/v1alpha1/namespaces/{kube_namespace}/bentodeployments/ssa"
        "?fieldManager={manager}"
    )
    body = bento_deployment("ssa")
    body["spec"]["replicas"] = 1
    applied = kube_control_plane.request(
        "PATCH",
        path.format(manager="ekiben-deployer"),
        json.dumps(body),
        content_type="application/apply-patch+yaml",
    )
    managers = {m["manager"] for m in applied["metadata"]["managedFields"]}
    assert managers == {"ekiben-deployer"}

    # Another manager changing a field the deployer owns is a conflict, not a silent overwrite.
    other = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": "ssa"},
        "spec": {"bento": "iris", "replicas": 4},
    }
    with pytest.raises(Exception) as caught:  # noqa: PT011 - urllib's HTTPError
        kube_control_plane.request(
            "PATCH",
            path.format(manager="someone-else"),
            json.dumps(other),
            content_type="application/apply-patch+yaml",
        )
    assert getattr(caught.value, "code", None) == 409
