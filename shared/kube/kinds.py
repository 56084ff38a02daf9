"""Which URL a kind lives at: a resource-path builder instead of API discovery.

The REST path of a resource follows from four facts: its group/version, its plural, and
whether it is namespaced. Controllers know these for every kind they touch, so `Kind` states
them once and builds paths, and no request pays for a discovery round trip (which
kubernetes_asyncio.dynamic makes, and caches in a file, before its first call).

    DEPLOYMENT.path("ns", "web")          -> /apis/apps/v1/namespaces/ns/deployments/web
    BENTO_REQUEST.path("ns", "iris", "status")
    CONFIG_MAP.path("")                   -> /api/v1/configmaps (every namespace)
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Kind:
    api_version: str  # "v1", "apps/v1", "resources.ekiben.dev/v1alpha1"
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        """The API group; "" for the core group."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        """The collection (no name) or object path; namespace "" lists every namespace."""
        path = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        elif self.namespaced and name:
            raise ValueError(f"{self.kind} {name!r} is namespaced: a namespace is required")
        path += f"/{self.plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        if subresource:
            if not name:
                raise ValueError("a subresource needs an object name")
            path += f"/{subresource}"
        return path


# Built-in kinds the builder and the deployer touch.
NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False)
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
SECRET = Kind("v1", "Secret", "secrets")
SERVICE = Kind("v1", "Service", "services")
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
POD = Kind("v1", "Pod", "pods")
PERSISTENT_VOLUME_CLAIM = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
JOB = Kind("batch/v1", "Job", "jobs")
HORIZONTAL_POD_AUTOSCALER = Kind(
    "autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"
)
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses")
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
EVENT = Kind("events.k8s.io/v1", "Event", "events")
# The same Events through the core API, whose shape (`count`, `lastTimestamp`,
# `involvedObject`) covers the old writers and the new: what readers list.
CORE_EVENT = Kind("v1", "Event", "events")

# Ekiben's own (deploy/crds).
BENTO_REQUEST = Kind("resources.ekiben.dev/v1alpha1", "BentoRequest", "bentorequests")
BENTO = Kind("resources.ekiben.dev/v1alpha1", "Bento", "bentos")
BENTO_DEPLOYMENT = Kind("serving.ekiben.dev/v1alpha1", "BentoDeployment", "bentodeployments")
