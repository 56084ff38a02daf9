"""Kubernetes helpers shared by the builder and the deployer.

`watch` turns a list function of kubernetes_asyncio into a resumable stream of events with the
list-then-watch protocol every controller needs; `client` builds an ApiClient from a kubeconfig.
Objects travel as plain JSON dicts: custom resources have no generated models, and one shape
for built-in and custom kinds keeps reconcilers simple.
"""

from shared.kube.client import api_client_from_kubeconfig
from shared.kube.watch import EventType, Watcher, WatchEvent

__all__ = ["EventType", "WatchEvent", "Watcher", "api_client_from_kubeconfig"]
