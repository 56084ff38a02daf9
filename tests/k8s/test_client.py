"""shared.kube.client: a kubeconfig, or the real in-cluster path with a service account token."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.devstack.kube import KubeControlPlane
from shared.kube.client import api_client, in_cluster_namespace
from shared.kube.kinds import CONFIG_MAP, NAMESPACE, SECRET
from shared.kube.objects import Objects
from shared.settings import KubeSettings

pytestmark = pytest.mark.k8s


async def test_a_kubeconfig_in_the_settings_is_used(kube_control_plane: KubeControlPlane) -> None:
    settings = KubeSettings(kubeconfig=kube_control_plane.kubeconfig_path)
    async with await api_client(settings) as api:
        assert api.configuration.host == kube_control_plane.server_url
        namespaces = await Objects(api, field_manager="t").list(NAMESPACE)
        assert "default" in {n["metadata"]["name"] for n in namespaces}


async def test_in_cluster_configuration_uses_the_service_account_token(
    kube_control_plane: KubeControlPlane,
    kube_api: client.ApiClient,
    kube_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the kubelet gives a pod: a service account with a bound token, and RBAC.
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    await core.create_namespaced_service_account(kube_namespace, {"metadata": {"name": "reader"}})
    await rbac.create_namespaced_role(
        kube_namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    await rbac.create_namespaced_role_binding(
        kube_namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": kube_namespace}],
        },
    )
    token = await core.create_namespaced_service_account_token(
        "reader", kube_namespace, {"spec": {"expirationSeconds": 600}}
    )
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(token.status.token)
    shutil.copy(kube_control_plane.pki.ca_cert, mount / "ca.crt")
    (mount / "namespace").write_text(kube_namespace)
    server = urlsplit(kube_control_plane.server_url)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(server.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))

    async with await api_client(KubeSettings(kubeconfig=None), service_account_dir=mount) as api:
        objects = Objects(api, field_manager="t")
        review = await objects.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        username = review["status"]["userInfo"]["username"]
        assert username == f"system:serviceaccount:{kube_namespace}:reader"
        assert await objects.list(CONFIG_MAP, kube_namespace) is not None  # allowed
        with pytest.raises(ApiException) as denied:
            await objects.list(SECRET, kube_namespace)  # not granted: the token is who we are
        assert denied.value.status == 403
    assert in_cluster_namespace(mount) == kube_namespace
