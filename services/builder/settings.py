"""Builder settings (env prefix `EKIBEN_BUILDER_`, `__` between nested sections).

Two sections are about images:

- `registry`: where built images go (`EKIBEN_BUILDER_REGISTRY__URL`, `__REPOSITORY_PREFIX`,
  `__INSECURE`, `__USERNAME`, `__PASSWORD`, `__DOCKER_CONFIG`).
- `containers`: how buildah, podman and skopeo run (`EKIBEN_BUILDER_CONTAINERS__STORAGE_DIR`,
  `__CONFIG_DIR`, `__MIRRORS` as JSON, `__INSECURE_REGISTRIES`, `__BUILDAH`, ...). See
  services/builder/adapters/containers.py for the files written from it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.contracts.deployer import ClusterName
from shared.settings import BackendSettings, HttpSettings, KubeSettings

DEFAULT_STATE_DIR = Path.home() / ".local" / "share" / "ekiben" / "builder"


def is_loopback_host(host: str) -> bool:
    """Whether `host` (`name[:port]`, `[v6]:port`) is this machine: 127/8, ::1, localhost."""
    name = urlsplit(f"//{host}").hostname or host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class TargetRegistrySettings(BaseModel):
    """The registry built images are pushed to (and looked up in, to skip a rebuild).

    `url` is `https://HOST[:PORT]`, `http://HOST[:PORT]` (plain HTTP, implies `insecure`) or
    a bare `HOST[:PORT]` (HTTPS, except plain HTTP on a loopback address, as Docker does).
    Images are named `HOST[:PORT]/<repository_prefix>/<bento>:<version>`. Credentials are
    either `username` + `password` or `docker_config`, a `.dockerconfigjson` file (a mounted
    `kubernetes.io/dockerconfigjson` Secret); none for an open registry.
    """

    url: str = "http://127.0.0.1:5000"
    repository_prefix: str = "ekiben"
    # Plain HTTP, or HTTPS without certificate verification.
    insecure: bool = False
    username: str | None = None
    password: SecretStr | None = None
    docker_config: Path | None = None

    @field_validator("repository_prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> TargetRegistrySettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("registry username and password go together")
        if self.username is not None and self.docker_config is not None:
            raise ValueError("give registry username/password or docker_config, not both")
        return self

    @property
    def host(self) -> str:
        """`HOST[:PORT]` as image references name the registry."""
        return urlsplit(self.url if "://" in self.url else f"//{self.url}").netloc

    @property
    def plain_http(self) -> bool:
        """Whether to talk HTTP (not HTTPS) to it."""
        if self.url.startswith("http://"):
            return True
        if self.url.startswith("https://"):
            return False
        return self.insecure or is_loopback_host(self.host)

    @property
    def tls_verify(self) -> bool:
        return not (self.insecure or self.plain_http)

    @property
    def base_url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    def repository(self, name: str) -> str:
        """The repository path (without host) of an image called `name`."""
        return f"{self.repository_prefix}/{name}" if self.repository_prefix else name

    def image(self, name: str, tag: str) -> str:
        """The full reference `HOST/PREFIX/name:tag`."""
        return f"{self.host}/{self.repository(name)}:{tag}"


class ContainersSettings(BaseModel):
    """How buildah, podman and skopeo run: their configuration files are written from this.

    `mirrors` maps a registry or a prefix (`docker.io`, `docker.io/library`) to hosts tried
    in order before the original, e.g. `{"docker.io": ["127.0.0.1:5000"]}`: that is how a
    bento's `FROM python:3.11-slim` resolves on a site that cannot reach Docker Hub. Mirrors,
    the target registry and `insecure_registries` on a loopback address or listed in
    `insecure_registries` are reached over plain HTTP.
    """

    # The layer store (graphroot) and its run state (runroot): keep the graphroot between
    # builds, it is the build cache. Unset: under state_dir.
    storage_dir: Path | None = None
    runroot_dir: Path | None = None
    # Where the generated containers.conf, registries.conf, storage.conf and auth files go.
    config_dir: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    storage_driver: Literal["overlay", "vfs"] = "overlay"
    mirrors: dict[str, list[str]] = Field(default_factory=dict)
    insecure_registries: list[str] = Field(default_factory=list)
    # Short names (`python:3.11-slim`) are looked up in these, in order.
    unqualified_search_registries: list[str] = Field(default_factory=lambda: ["docker.io"])
    # runc: crun (Debian's default) fails on hosts with hybrid cgroups.
    runtime: str = "runc"
    # Limits inside build steps and containers; within the host's hard limits, which an
    # unprivileged or sandboxed builder cannot raise.
    ulimits: list[str] = Field(default_factory=lambda: ["nofile=4096:4096", "nproc=4096:4096"])
    # Binaries: a name on PATH or a path.
    buildah: str = "buildah"
    podman: str = "podman"
    skopeo: str = "skopeo"
    isolation: Literal["chroot", "oci", "rootless"] = "chroot"
    network: str = "host"
    build_timeout_seconds: float = Field(default=3600.0, gt=0)
    # Remove buildah's leftover working containers when the builder starts leading (left by
    # a killed build). Off only where other programs share the store (the tests).
    prune_on_start: bool = True
    # Built images kept in the layer store, newest first, with the cache layers under them.
    # Older ones (and the layers no kept image uses) are removed when no build is running;
    # a bento built again after that is built cold. 0: keep every image.
    keep_images: int = Field(default=20, ge=0)
    push_timeout_seconds: float = Field(default=1800.0, gt=0)

    @field_validator("mirrors")
    @classmethod
    def _no_empty_mirror_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for prefix, hosts in value.items():
            if not hosts:
                raise ValueError(f"mirror list of {prefix!r} is empty")
        return value

    @property
    def graphroot(self) -> Path:
        return self.storage_dir or self.state_dir / "storage"

    @property
    def runroot(self) -> Path:
        return self.runroot_dir or self.state_dir / "storage-run"

    @property
    def configuration_dir(self) -> Path:
        return self.config_dir or self.state_dir / "containers"


class BuilderKubeSettings(KubeSettings):
    """The cluster: `namespace` is the builder's home (its Lease, BentoRequests of builds
    that name no namespace); `watch_namespaces` are reconciled (empty: `namespace` only;
    `["*"]`: every namespace)."""

    watch_namespaces: list[str] = Field(default_factory=list)
    lease_name: str = "ekiben-builder"
    lease_seconds: float = Field(default=15.0, gt=1)

    @property
    def watched(self) -> list[str]:
        """Namespaces to watch; `[""]` means every namespace (one cluster-wide watch)."""
        names = self.watch_namespaces or [self.namespace]
        return [""] if "*" in names else names


class JobSettings(BaseModel):
    """The `kubernetes` backend: one Job per build, running `image` (buildah)."""

    image: str = "quay.io/buildah/stable:v1.38.1"
    # A kubernetes.io/dockerconfigjson Secret in the build's namespace, mounted for the push.
    registry_secret: str | None = None
    service_account: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    resources: dict[str, Any] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "4Gi"},
        }
    )
    # Job.spec.activeDeadlineSeconds unless the BentoRequest says `imageBuildTimeout`.
    active_deadline_seconds: int = Field(default=3600, ge=30)
    backoff_limit: int = Field(default=0, ge=0)
    ttl_seconds_after_finished: int = Field(default=3600, ge=0)
    # The presigned URL of the bento the Job downloads stays valid this long (at most the
    # registry's own expiry).
    download_url_seconds: int = Field(default=900, ge=60)


class BuilderSettings(BackendSettings):
    service_name: ClassVar[str] = "builder"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_BUILDER_")

    http: HttpSettings = HttpSettings(port=8002)
    kube: BuilderKubeSettings = BuilderKubeSettings()
    registry: TargetRegistrySettings = TargetRegistrySettings()
    containers: ContainersSettings = ContainersSettings()
    # Where builds run: `local` (buildah on this host) or `kubernetes` (a Job per build).
    backend: Literal["local", "kubernetes"] = "local"
    job: JobSettings = JobSettings()
    # What `bento.pushed` does: build at once (`on-push`), only when a deployment asks
    # (`on-deploy`, i.e. on `build.requested`), or nothing (`never`: manual builds only).
    policy: Literal["on-push", "on-deploy", "never"] = "on-push"
    # The cluster this builder serves: a `build.requested` naming another one is not ours.
    cluster_name: ClusterName = "default"
    # Whether this process runs the operator (off, without a cluster: builds are recorded
    # and wait as `pending` until a builder with a cluster runs).
    controller_enabled: bool = True
    # Kubectl-applied BentoRequests carry no organization label: they belong to this one.
    default_organization: str = "default"
    # Lines of build output kept per build (the last ones when there are more).
    log_max_lines: int = Field(default=5000, ge=100)
    # Concurrent builds (local backend: buildah processes on this host).
    max_concurrent_builds: int = Field(default=2, ge=1)
    # Extra build arguments for every build; part of the image tag, like BentoRequest buildArgs.
    build_args: dict[str, str] = Field(default_factory=dict)
