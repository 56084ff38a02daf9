"""What the builder writes, as pure functions: image tags, BentoRequests, Bentos, status.

Nothing here does I/O; the reconciler (reconcile.py) reads the world and calls these, and
unit tests call them directly.

The image tag is derived from content: the bento archive's digest (its sha256, or a hash of
the version's manifest and size when the uploader computed none) and the build
configuration (build arguments, the builder's recipe version). The same bento built the
same way always gets the same tag, so "is it built?" is one manifest HEAD, and two builds of
one bento never race to different tags.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from shared.contracts.builder import (
    BENTO_NAME_LABEL,
    BENTO_VERSION_LABEL,
    BUILD_ID_ANNOTATION,
    ORGANIZATION_LABEL,
    Build,
)
from shared.contracts.registry import Version
from shared.contracts.vocabulary import BuildStatus
from shared.kube.conditions import set_condition
from shared.kube.kinds import BENTO, BENTO_REQUEST
from shared.kube.objects import owner_reference

# Bump when the way images are built changes: every tag changes with it.
RECIPE_VERSION = 1
MANAGED_BY = {"app.kubernetes.io/managed-by": "ekiben-builder"}

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PYTHON = re.compile(r"^3\.[0-9]+(\.[0-9]+)?$")
_BENTOML = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?([-.+a-zA-Z0-9]*)?$")
# A Kubernetes quantity, as the CRDs' schemas check it.
_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


# --- tags ----------------------------------------------------------------------------------


def content_digest(version: Version) -> str:
    """The digest of a bento version's content: its archive's sha256 when known."""
    if version.sha256:
        return f"sha256:{version.sha256}"
    canonical = json.dumps(
        {
            "organization": version.organization,
            "name": version.repository,
            "version": version.version,
            "size": version.size_bytes,
            "manifest": version.manifest,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "manifest:" + hashlib.sha256(canonical.encode()).hexdigest()


def build_config(
    settings_args: Mapping[str, str], spec_args: Mapping[str, str] | None
) -> dict[str, Any]:
    """What besides the content decides the image (the BentoRequest's args win)."""
    return {"recipe": RECIPE_VERSION, "build_args": {**settings_args, **(spec_args or {})}}


def image_tag(bento_version: str, digest: str, config: Mapping[str, Any]) -> str:
    """`<version>-<12 hex>`: readable, and changed by any change of content or config."""
    canonical = json.dumps({"content": digest, "config": config}, sort_keys=True)
    return f"{bento_version}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def parse_duration(text: str | None) -> float | None:
    """A Go duration (`1h30m`, `45s`) in seconds; None for None or an empty string."""
    if not text:
        return None
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 30m or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def split_tag(tag: str) -> tuple[str, str]:
    name, _, version = tag.partition(":")
    return name, version


# --- the bento's shape, from its manifest ---------------------------------------------------


def _names(items: Any, *keys: str) -> list[str]:
    found: list[str] = []
    for item in items or []:
        value = (
            item
            if isinstance(item, str)
            else next((item.get(k) for k in keys if isinstance(item, dict) and item.get(k)), None)
        )
        if isinstance(value, str) and value and value not in found:
            found.append(value)
    return found


def service_resources(declared: object) -> dict[str, Any] | None:
    """`@bentoml.service(resources={"cpu": "2", "memory": "4Gi", "gpu": 1})` in the
    BentoDeployment's resources shape, as requests (the deployer turns a GPU into a limit).

    What Kubernetes could not read (BentoML also takes `cpu: "cpu_count"` or `memory: "2GB"`)
    is left out: the deployment's own resources, or none, apply to it instead.
    """
    if not isinstance(declared, dict):
        return None
    requests: dict[str, Any] = {}
    for key in ("cpu", "memory"):
        value = declared.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and _QUANTITY.match(value):
            requests[key] = value
    gpu = declared.get("gpu")
    if isinstance(gpu, int) and not isinstance(gpu, bool) and gpu > 0:
        requests["gpu"] = gpu
    return {"requests": requests} if requests else None


def bento_shape(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """`services`, `models`, `entryService` and `context` of a Bento(Request) spec."""
    manifest = manifest or {}
    services = []
    for service in manifest.get("services") or []:
        if not isinstance(service, dict) or not service.get("name"):
            continue
        entry: dict[str, Any] = {"name": str(service["name"])}
        if deps := _names(service.get("dependencies"), "service", "name"):
            entry["dependencies"] = deps
        if models := _names(service.get("models"), "tag"):
            entry["models"] = models
        config = service.get("config")
        if isinstance(config, dict) and (resources := service_resources(config.get("resources"))):
            entry["resources"] = resources
        services.append(entry)
    models = _names(manifest.get("models"), "tag")
    for service in services:
        models += [m for m in service.get("models", []) if m not in models]
    shape: dict[str, Any] = {}
    if services:
        shape["services"] = services
    if models:
        shape["models"] = [{"tag": tag} for tag in models if ":" in tag]
    entry_service = manifest.get("entry_service")
    if isinstance(entry_service, str) and entry_service:
        shape["entryService"] = entry_service
    context: dict[str, str] = {}
    bentoml_version = manifest.get("bentoml_version")
    if isinstance(bentoml_version, str) and _BENTOML.match(bentoml_version):
        context["bentomlVersion"] = bentoml_version
    python = manifest.get("python")
    python_version = manifest.get("python_version") or (
        python.get("version") if isinstance(python, dict) else None
    )
    if isinstance(python_version, str) and _PYTHON.match(python_version):
        context["pythonVersion"] = python_version
    if context:
        shape["context"] = context
    return shape


# --- objects ---------------------------------------------------------------------------------


def labels_for(organization: str, name: str, version: str) -> dict[str, str]:
    return {
        ORGANIZATION_LABEL: organization,
        BENTO_NAME_LABEL: name,
        BENTO_VERSION_LABEL: version,
        **MANAGED_BY,
    }


def bento_request(
    *,
    resource_name: str,
    namespace: str,
    organization: str,
    version: Version,
    build_id: str,
) -> dict[str, Any]:
    """The BentoRequest the builder writes for a build of `version` (server-side applied).

    Only the fields the builder owns: a user's `buildArgs`, `builder` or `imageBuildTimeout`
    set with kubectl stay theirs.
    """
    return {
        "apiVersion": BENTO_REQUEST.api_version,
        "kind": BENTO_REQUEST.kind,
        "metadata": {
            "name": resource_name,
            "namespace": namespace,
            "labels": labels_for(organization, version.repository, version.version),
            "annotations": {BUILD_ID_ANNOTATION: build_id},
        },
        "spec": {
            "bentoTag": f"{version.repository}:{version.version}",
            **bento_shape(version.manifest),
        },
    }


def bento(request: Mapping[str, Any], *, organization: str, image: str) -> dict[str, Any]:
    """The Bento of a built request: same name, the image by digest, owned by the request."""
    metadata = request["metadata"]
    spec = request.get("spec") or {}
    name, version = split_tag(str(spec["bentoTag"]))
    body: dict[str, Any] = {"tag": spec["bentoTag"], "image": image}
    for key in ("services", "models", "entryService", "context"):
        if spec.get(key):
            body[key] = spec[key]
    return {
        "apiVersion": BENTO.api_version,
        "kind": BENTO.kind,
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": labels_for(organization, name, version),
            "ownerReferences": [owner_reference(dict(request))],
        },
        "spec": body,
    }


# --- status ----------------------------------------------------------------------------------


def request_status(
    live: Mapping[str, Any] | None,
    *,
    generation: int,
    build: Build,
    bento_ready: bool,
    job_name: str | None = None,
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The status a BentoRequest should have for `build`, and the condition transitions.

    Transitions are `(type, status, reason)` of conditions whose status changed, for
    Kubernetes Events (one per transition, never per reconcile).
    """
    status: dict[str, Any] = json.loads(json.dumps(dict(live or {})))
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    before = {c["type"]: c.get("status") for c in conditions}
    tail = "\n".join(build.log_tail[-20:])
    failure = (build.message or "") + (f"\nlast lines:\n{tail}" if tail else "")

    def cond(type_: str, value: str, reason: str, message: str = "") -> None:
        set_condition(
            conditions, type_, value,  # type: ignore[arg-type]
            reason, message[-30000:], observed_generation=generation,
        )  # fmt: skip

    if build.status is BuildStatus.PENDING:
        cond("ImageExists", "Unknown", "Checking", f"looking for {build.target}")
        cond("ImageBuilding", "False", "Pending", f"build {build.id} is queued")
    elif build.status is BuildStatus.BUILDING:
        cond("ImageExists", "False", "ImageNotFound", f"{build.target} is not in the registry")
        cond(
            "ImageBuilding", "True", "Building",
            f"build {build.id}, attempt {build.attempts}, backend {build.backend}",
        )  # fmt: skip
    elif build.status is BuildStatus.SUCCEEDED:
        cond("ImageExists", "True", build.reason or "ImagePushed", build.image or "")
        cond("ImageBuilding", "False", "Succeeded", f"build {build.id}: {build.image}")
    else:
        cond("ImageExists", "False", "BuildFailed", f"build {build.id} failed")
        cond("ImageBuilding", "False", build.reason or "BuildFailed", failure)
    if build.status is BuildStatus.SUCCEEDED and bento_ready:
        cond("BentoAvailable", "True", "BentoReady", f"Bento {build.image}")
    elif build.status is BuildStatus.FAILED:
        cond("BentoAvailable", "False", "BuildFailed", build.message or "")
    else:
        cond("BentoAvailable", "False", "WaitingForImage", f"image {build.target}")
    status["observedGeneration"] = generation
    status["phase"] = build.status.value
    status["image"] = build.image or build.target
    if job_name:
        status["buildJobName"] = job_name
    transitions = [
        (c["type"], c["status"], c["reason"])
        for c in conditions
        if before.get(c["type"]) != c["status"]
    ]
    return status, transitions


# --- build Jobs (the kubernetes backend) ----------------------------------------------------

JOB_SCRIPT = """set -eu
cd "${WORKSPACE:-/workspace}"
echo "--- downloading the bento"
curl -fsS --retry 3 -o bento.tar "$BENTO_URL"
# The builder checked this archive (no '..', absolute paths, devices or escaping links):
# these must be the same bytes. GNU tar's own refusals of '..' and '/' stay on top.
if [ -n "${BENTO_SHA256:-}" ]; then
  echo "$BENTO_SHA256  bento.tar" | sha256sum -c - >/dev/null \
    || { echo "the bento archive is not the one the builder checked"; exit 4; }
fi
mkdir context
tar -xf bento.tar -C context --no-same-owner --no-same-permissions --exclude-vcs
rm bento.tar
test -f context/env/docker/Dockerfile || { echo "no env/docker/Dockerfile"; exit 3; }
echo "--- building $IMAGE"
buildah bud --layers --isolation chroot --storage-driver vfs $BUILD_ARGS \\
  -f context/env/docker/Dockerfile -t "$IMAGE" context
echo "--- pushing $IMAGE"
buildah push --storage-driver vfs --digestfile "${DIGEST_FILE:-/dev/termination-log}" $AUTH \\
  "$IMAGE" "docker://$IMAGE"
"""


def job_name(build: Build) -> str:
    return f"build-{build.id[:16]}-{build.attempts}"


def build_job(
    request: Mapping[str, Any],
    *,
    build: Build,
    image: str,
    download_url: str,
    archive_sha256: str = "",
    deadline_seconds: int,
    registry_secret: str | None,
    service_account: str | None,
    node_selector: Mapping[str, str],
    tolerations: list[dict[str, Any]],
    resources: Mapping[str, Any],
    backoff_limit: int,
    ttl_seconds: int,
    build_args: Mapping[str, str],
    tls_verify: bool,
) -> dict[str, Any]:
    """The Job of one attempt of `build`; the BentoRequest's `spec.builder` wins over settings."""
    metadata = request["metadata"]
    custom: Mapping[str, Any] = (request.get("spec") or {}).get("builder") or {}
    labels = {
        **labels_for(build.organization, build.bento_name, build.bento_version),
        "ekiben.dev/build-id": build.id,
    }
    extra = custom.get("extraPodMetadata") or {}
    args = " ".join(f"--build-arg {_sh(f'{k}={v}')}" for k, v in sorted(build_args.items()))
    env: list[dict[str, Any]] = [
        {"name": "BENTO_URL", "value": download_url},
        {"name": "BENTO_SHA256", "value": archive_sha256},
        {"name": "IMAGE", "value": build.target},
        {"name": "BUILD_ARGS", "value": args + ("" if tls_verify else " --tls-verify=false")},
        {
            "name": "AUTH",
            "value": ("--authfile /auth/config.json" if registry_secret else "")
            + ("" if tls_verify else " --tls-verify=false"),
        },
        {"name": "STORAGE_DRIVER", "value": "vfs"},
        {"name": "BUILDAH_ISOLATION", "value": "chroot"},
        *(custom.get("env") or []),
    ]
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": "/workspace"}]
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    if registry_secret:
        mounts.append({"name": "registry-auth", "mountPath": "/auth", "readOnly": True})
        volumes.append(
            {
                "name": "registry-auth",
                "secret": {
                    "secretName": registry_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "build",
                "image": image,
                "command": ["/bin/sh", "-c", JOB_SCRIPT],
                "env": env,
                "resources": dict(custom.get("resources") or resources),
                "volumeMounts": mounts,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    if account := custom.get("serviceAccountName") or service_account:
        pod["serviceAccountName"] = account
    if selector := custom.get("nodeSelector") or dict(node_selector):
        pod["nodeSelector"] = dict(selector)
    if tols := custom.get("tolerations") or tolerations:
        pod["tolerations"] = list(tols)
    if affinity := custom.get("affinity"):
        pod["affinity"] = affinity
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(build),
            "namespace": metadata["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(dict(request))],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {
                "metadata": {
                    "labels": {**labels, **(extra.get("labels") or {})},
                    "annotations": dict(extra.get("annotations") or {}),
                },
                "spec": pod,
            },
        },
    }


def job_state(job: Mapping[str, Any] | None) -> tuple[str, str | None, str]:
    """(`running`|`succeeded`|`failed`|`absent`, reason, message) of a build Job."""
    if job is None:
        return "absent", None, ""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", None, ""
        if condition.get("type") == "Failed":
            reason = str(condition.get("reason") or "JobFailed")
            return "failed", reason, str(condition.get("message") or "the build Job failed")
    return "running", None, ""


def _sh(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
