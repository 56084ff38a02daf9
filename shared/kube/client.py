"""Build a kubernetes_asyncio ApiClient from a kubeconfig file.

Each caller gets its own Configuration object instead of kubernetes_asyncio's process-wide
default, so two clusters (or a test control plane next to a developer's cluster) never mix.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client, config


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
