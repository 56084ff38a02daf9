"""All container tools of the builder, configured from its settings, in one call.

tools = ContainerTools.from_settings(BuilderSettings())
built = await tools.buildah.build(context, dockerfile, tag, log_sink=sink)
digest = await tools.buildah.push(tag, settings.registry.image(name, version),
                                  tls_verify=settings.registry.tls_verify,
                                  auth=tools.registry_auth)
async with tools.registry_client() as registry:
    existing = await registry.manifest_digest(settings.registry.repository(name), version)
"""

from __future__ import annotations

from dataclasses import dataclass

from services.builder.adapters.auth import Auth, auth_from_settings
from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment, write_container_config
from services.builder.adapters.podman import Podman
from services.builder.adapters.registry import RegistryClient
from services.builder.adapters.skopeo import Skopeo
from services.builder.settings import BuilderSettings, TargetRegistrySettings


@dataclass(frozen=True)
class ContainerTools:
    env: ContainerEnvironment
    registry: TargetRegistrySettings
    buildah: Buildah
    skopeo: Skopeo
    podman: Podman
    prune_on_start: bool = True
    keep_images: int = 20

    @classmethod
    def from_settings(cls, settings: BuilderSettings) -> ContainerTools:
        """Write the tools' configuration files (see containers.py) and wrap the tools."""
        containers = settings.containers
        env = write_container_config(containers, settings.registry)
        return cls(
            env=env,
            registry=settings.registry,
            buildah=Buildah(
                env,
                binary=containers.buildah,
                build_timeout=containers.build_timeout_seconds,
                push_timeout=containers.push_timeout_seconds,
                isolation=containers.isolation,
                network=containers.network,
            ),
            skopeo=Skopeo(
                env, binary=containers.skopeo, time_limit=containers.push_timeout_seconds
            ),
            podman=Podman(env, binary=containers.podman),
            prune_on_start=containers.prune_on_start,
            keep_images=containers.keep_images,
        )

    @property
    def registry_auth(self) -> Auth:
        """The target registry's credentials (or auth file) for pushes and lookups."""
        return auth_from_settings(self.registry)

    def registry_client(self) -> RegistryClient:
        """A client of the target registry; use it as an async context manager."""
        return RegistryClient.from_settings(self.registry)
