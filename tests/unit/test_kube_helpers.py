"""Pure parts of shared.kube: paths, mappers, owner references, finalizers, manifest hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.config.config_exception import ConfigException

from shared.kube.client import api_client, in_cluster_namespace
from shared.kube.kinds import BENTO_REQUEST, CONFIG_MAP, DEPLOYMENT, NAMESPACE
from shared.kube.mappers import labelled, owned_by, parents_of
from shared.kube.objects import (
    has_finalizer,
    manifest_hash,
    owner_reference,
    with_finalizer,
    without_finalizer,
)
from shared.settings import KubeSettings


def test_kind_paths() -> None:
    assert CONFIG_MAP.path("ns", "a") == "/api/v1/namespaces/ns/configmaps/a"
    assert CONFIG_MAP.path("") == "/api/v1/configmaps"
    assert DEPLOYMENT.path("ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert (
        BENTO_REQUEST.path("ns", "iris", "status")
        == "/apis/resources.ekiben.dev/v1alpha1/namespaces/ns/bentorequests/iris/status"
    )
    assert NAMESPACE.path("", "ekiben") == "/api/v1/namespaces/ekiben"
    assert BENTO_REQUEST.group == "resources.ekiben.dev"
    assert CONFIG_MAP.group == ""
    with pytest.raises(ValueError, match="namespace"):
        CONFIG_MAP.path("", "a")
    with pytest.raises(ValueError, match="subresource"):
        CONFIG_MAP.path("ns", "", "status")


def owner(name: str, kind: str = "BentoRequest", uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "resources.ekiben.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
    }


def test_owner_reference_names_the_owner() -> None:
    assert owner_reference(owner("iris")) == {
        "apiVersion": "resources.ekiben.dev/v1alpha1",
        "kind": "BentoRequest",
        "name": "iris",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    with pytest.raises(ValueError, match="uid"):
        owner_reference({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}})


def test_parents_of_maps_a_child_to_owners_of_the_kind() -> None:
    child = {
        "metadata": {
            "name": "iris-build",
            "namespace": "ns",
            "ownerReferences": [
                owner_reference(owner("iris")),
                # Another version of the same group still matches.
                {**owner_reference(owner("old")), "apiVersion": "resources.ekiben.dev/v1beta1"},
                {**owner_reference(owner("x", kind="Bento")), "controller": False},
                {**owner_reference(owner("y")), "apiVersion": "other.dev/v1"},
            ],
        }
    }
    api_version = "resources.ekiben.dev/v1alpha1"
    assert parents_of(child, api_version=api_version, kind="BentoRequest") == [
        ("ns", "iris"),
        ("ns", "old"),
    ]
    assert parents_of(child, api_version=api_version, kind="Bento") == [("ns", "x")]
    assert parents_of(child, api_version=api_version, kind="Bento", controller_only=True) == []
    assert owned_by(api_version, "BentoRequest")(child) == [("ns", "iris"), ("ns", "old")]
    assert parents_of({"metadata": {}}, api_version=api_version, kind="BentoRequest") == []


def test_labelled_maps_by_label() -> None:
    mapper = labelled("ekiben.dev/bento-deployment")
    obj = {"metadata": {"namespace": "ns", "labels": {"ekiben.dev/bento-deployment": "web"}}}
    assert list(mapper(obj)) == [("ns", "web")]
    assert list(mapper({"metadata": {"namespace": "ns"}})) == []


def test_finalizer_helpers_copy_and_do_not_duplicate() -> None:
    obj: dict[str, Any] = {"metadata": {"name": "a", "finalizers": ["other"]}}
    added = with_finalizer(obj, "ekiben.dev/cleanup")
    assert added["metadata"]["finalizers"] == ["other", "ekiben.dev/cleanup"]
    assert obj["metadata"]["finalizers"] == ["other"]  # a copy
    assert with_finalizer(added, "ekiben.dev/cleanup") == added
    assert has_finalizer(added, "ekiben.dev/cleanup")
    removed = without_finalizer(added, "ekiben.dev/cleanup")
    assert removed["metadata"]["finalizers"] == ["other"]
    assert not has_finalizer(removed, "ekiben.dev/cleanup")
    assert not has_finalizer({}, "x")


def test_manifest_hash_is_stable_and_sensitive() -> None:
    a = {"kind": "ConfigMap", "data": {"x": "1", "y": "2"}}
    b = {"data": {"y": "2", "x": "1"}, "kind": "ConfigMap"}
    assert manifest_hash(a) == manifest_hash(b)
    assert manifest_hash(a) != manifest_hash({**a, "data": {"x": "1"}})


async def test_in_cluster_configuration_outside_a_pod_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigException, match="host/port"):
        await api_client(KubeSettings(kubeconfig=None), service_account_dir=tmp_path, environ={})
    assert in_cluster_namespace(tmp_path) is None
