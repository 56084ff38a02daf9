"""Build a kubernetes_asyncio ApiClient from the settings: a kubeconfig, or in-cluster.

`api_client(settings)` uses `settings.kubeconfig` when it is set (a developer's cluster, the
test control plane) and the pod's service account otherwise: the token and CA certificate
mounted at /var/run/secrets/kubernetes.io/serviceaccount and the API server address from
KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT. kubernetes_asyncio re-reads the token file
every minute, so the short-lived projected tokens the kubelet rotates keep working.

Each caller gets its own Configuration object instead of kubernetes_asyncio's process-wide
default, so two clusters (or a test control plane next to a developer's cluster) never mix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kubernetes_asyncio import client, config

from shared.settings import KubeSettings

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


async def api_client(
    settings: KubeSettings,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> client.ApiClient:
    """An ApiClient per `settings`; close it with `await api.close()` (or `async with`)."""
    if settings.kubeconfig is not None:
        return await api_client_from_kubeconfig(settings.kubeconfig)
    return api_client_in_cluster(service_account_dir=service_account_dir, environ=environ)


async def api_client_from_kubeconfig(path: Path, *, context: str | None = None) -> client.ApiClient:
    """An ApiClient for `path`; close it with `await api.close()` (or `async with`)."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(path),
        context=context,
        client_configuration=configuration,
        persist_config=False,
    )
    return client.ApiClient(configuration=configuration)


def api_client_in_cluster(
    *, service_account_dir: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> client.ApiClient:
    """An ApiClient with the pod's service account (raises ConfigException outside a pod)."""
    configuration = client.Configuration()
    config.load_incluster_config(  # type: ignore[no-untyped-call]
        client_configuration=configuration,
        token_filename=str(service_account_dir / "token"),
        cert_filename=str(service_account_dir / "ca.crt"),
        environ=dict(os.environ if environ is None else environ),
    )
    return client.ApiClient(configuration=configuration)


def in_cluster_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str | None:
    """The pod's own namespace, from the service account mount (None outside a pod)."""
    try:
        return (service_account_dir / "namespace").read_text().strip() or None
    except OSError:
        return None
