"""A real Kubernetes control plane for the tests (see shared/devstack/kube.py).

`kube_control_plane` starts etcd, kube-apiserver and, when built, kube-controller-manager,
kube-scheduler and kwok with two fake nodes, once per session, and applies deploy/crds.
`kube_api` is a kubernetes_asyncio ApiClient on it; `kube_namespace` gives each test a fresh
namespace. Without the binaries (`bash tests/k8s/build.sh`) the tests skip, or fail when
EKIBEN_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes_asyncio import client

from shared.devstack.kube import KubeControlPlane, crd_paths, find_binaries
from shared.devstack.process import StartupError
from shared.kube.client import api_client_from_kubeconfig
from tests.fixtures.report import report
from tests.fixtures.require import unavailable


@pytest.fixture(scope="session")
def kube_control_plane(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[KubeControlPlane]:
    try:
        binaries = find_binaries()
    except StartupError as exc:
        unavailable(str(exc))
    try:
        plane = KubeControlPlane.start(tmp_path_factory.mktemp("kube"), binaries=binaries)
    except StartupError as exc:
        unavailable(f"Kubernetes control plane did not start: {exc}")
    with plane:
        crds = plane.apply_crds(crd_paths())
        report(
            pytestconfig,
            f"kubernetes control plane {plane.server_url} ready in {plane.startup_seconds:.1f}s "
            f"({', '.join(f'{k} {v:.1f}s' for k, v in plane.timings.items())}); "
            f"{len(crds)} CRDs; kubeconfig {plane.kubeconfig_path}",
        )
        yield plane


@pytest.fixture(scope="session")
async def kube_api(kube_control_plane: KubeControlPlane) -> AsyncIterator[client.ApiClient]:
    api = await api_client_from_kubeconfig(kube_control_plane.kubeconfig_path)
    async with api:
        yield api


@pytest.fixture
async def kube_namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # The namespace controller finishes the deletion in the background.
    await core.delete_namespace(name)


@pytest.fixture
def full_cluster(kube_control_plane: KubeControlPlane) -> KubeControlPlane:
    """The control plane, provided it runs controllers, a scheduler and kwok nodes."""
    if not kube_control_plane.binaries.full_cluster:
        unavailable(
            "kube-controller-manager, kube-scheduler or kwok not built: run bash tests/k8s/build.sh"
        )
    return kube_control_plane
