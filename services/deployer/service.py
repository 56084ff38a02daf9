"""The deployer's logic: deployments and revisions as owned data, and organization secrets.

Every command validates everything first (cluster, instance types, scaling bounds, env
names, secrets, the name) and then writes in one transaction: the deployment row, its new
revision and the event (`deployment.requested`, `.updated`, `.terminated`, `.deleted`)
through the outbox. A refused request therefore leaves nothing behind, and an accepted one
is never half-told. The cluster's deployer acts on the event (handlers.py): it writes or
removes the `BentoDeployment`; its controller then reports status back through
`record_status`, which emits `deployment.status_changed` once per change.
"""

from __future__ import annotations

import re
import secrets as random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.deployer import repository as repo
from services.deployer.adapters.clusters import ClusterDirectory
from services.deployer.repository import DeploymentRow
from services.deployer.spec import DEFAULT_SERVICE_KEY, config_from_spec, spec_from_config
from shared.contracts import deployer as dep
from shared.contracts.registry import Page, labels_to_dict
from shared.contracts.vocabulary import DeploymentStatus
from shared.db import Connection, Pool
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import Event
from shared.events.types import (
    ArtifactRef,
    BuildRequested,
    BuildRequestedData,
    DeploymentDeleted,
    DeploymentRef,
    DeploymentRequested,
    DeploymentSpecData,
    DeploymentStatusChanged,
    DeploymentStatusData,
    DeploymentStoppedData,
    DeploymentTerminated,
    DeploymentUpdated,
)
from shared.logging import get_logger
from shared.outbox import write_event

log = get_logger(__name__)

SOURCE = "ekiben/deployer"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
# Statuses after which a deployment runs nothing.
STOPPED = frozenset({DeploymentStatus.TERMINATING, DeploymentStatus.TERMINATED})


def generated_name(bento: str) -> str:
    """`<bento>-<6 random>`, a valid deployment name whatever the bento is called."""
    suffix = random.token_hex(3)
    head = _NOT_DNS.sub("-", bento.lower()).strip("-")[: dep.MAX_DEPLOYMENT_NAME - 7].rstrip("-")
    return f"{head or 'deployment'}-{suffix}"


def _ref(row: DeploymentRow) -> DeploymentRef:
    return DeploymentRef(
        organization=row.organization, cluster=row.cluster, namespace=row.namespace, name=row.name
    )


def _subject(row: DeploymentRow) -> str:
    return f"{row.organization}/{row.cluster}/{row.namespace}/{row.name}"


class DeployerService:
    def __init__(self, pool: Callable[[], Pool], clusters: ClusterDirectory) -> None:
        self._pool = pool
        self.clusters = clusters

    # --- clusters -----------------------------------------------------------------

    async def list_clusters(self, req: dep.ListClusters) -> dep.Clusters:
        return dep.Clusters(items=await self.clusters.list())

    async def _cluster(self, name: str | None) -> dep.Cluster:
        """The named cluster, or the default one: the only one, or the one called "default"."""
        if name:
            found = await self.clusters.get(name)
            if found is not None:
                return found
            known = await self.clusters.list()
            names = ", ".join(c.name for c in known) or "none"
            raise InvalidInput(f"unknown cluster {name!r} (clusters: {names})")
        known = await self.clusters.list()
        if len(known) == 1:
            return known[0]
        for cluster in known:
            if cluster.name == "default":
                return cluster
        if not known:
            raise InvalidInput("no cluster has announced itself: is a deployer running?")
        raise InvalidInput(
            "several clusters exist, name one with --cluster: " + ", ".join(c.name for c in known)
        )

    async def list_instance_types(self, req: dep.ClusterRef) -> dep.InstanceTypes:
        cluster = await self._cluster(req.cluster)
        return dep.InstanceTypes(cluster=cluster.name, items=cluster.instance_types)

    # --- validation ---------------------------------------------------------------

    async def _validate(
        self, conn: Connection, org: str, cluster: dep.Cluster, bento: dep.BentoTarget,
        config: dep.DeploymentConfig,
    ) -> dict[str, dep.InstanceType]:  # fmt: skip
        instance_types = {t.name: t for t in cluster.instance_types}
        known_services = set(bento.services)
        for key, service in config.services.items():
            where = f"services.{key}"
            if known_services and key not in known_services and key != DEFAULT_SERVICE_KEY:
                raise InvalidInput(
                    f"{where}: bento {bento.tag} has no service {key!r}"
                    f" (its services: {', '.join(sorted(known_services))})"
                )
            scaling = service.scaling
            if scaling.min_replicas > scaling.max_replicas:
                raise InvalidInput(
                    f"{where}.scaling: min_replicas ({scaling.min_replicas}) is above"
                    f" max_replicas ({scaling.max_replicas})"
                )
            if scaling.max_replicas < 1 or scaling.min_replicas < 1:
                raise InvalidInput(
                    f"{where}.scaling: replicas must be at least 1 (scaling to zero is not"
                    " supported; terminate the deployment to stop it)"
                )
            if service.instance_type and service.instance_type not in instance_types:
                raise InvalidInput(
                    f"{where}.instance_type: unknown instance type {service.instance_type!r}"
                    f" on cluster {cluster.name} (known: {', '.join(instance_types) or 'none'})"
                )
        if config.secrets:
            found = {row.name for row in await repo.get_secrets(conn, org, config.secrets)}
            missing = [name for name in config.secrets if name not in found]
            if missing:
                raise InvalidInput(f"unknown secret(s): {', '.join(missing)}")
        return instance_types

    def _with_defaults(
        self, bento: dep.BentoTarget, config: dep.DeploymentConfig
    ) -> dep.DeploymentConfig:
        """Every service of the bento gets an entry (the client sends only the entry's)."""
        services = dict(config.services)
        named = {k if k != DEFAULT_SERVICE_KEY else (bento.entry_service or k) for k in services}
        for name in bento.services:
            if name not in named:
                services[name] = dep.ServiceConfig()
        if not services:
            services[bento.entry_service or DEFAULT_SERVICE_KEY] = dep.ServiceConfig()
        return config.model_copy(update={"services": services})

    # --- deployments --------------------------------------------------------------

    async def create_deployment(self, req: dep.CreateDeployment) -> dep.Deployment:
        org, actor = req.scope.organization, req.scope.actor
        cluster = await self._cluster(req.cluster)
        name = req.name or generated_name(req.bento.name)
        config = self._with_defaults(req.bento, req.config)
        async with self._pool().acquire() as conn, conn.transaction():
            types = await self._validate(conn, org, cluster, req.bento, config)
            spec = spec_from_config(org, req.bento, config, types)
            deployment_id = await repo.insert_deployment(
                conn, organization=org, name=name, cluster=cluster.name,
                namespace=cluster.namespace, created_by=actor,
                status=DeploymentStatus.NON_DEPLOYED,
                labels=labels_to_dict(config.labels),
            )  # fmt: skip
            if deployment_id is None:
                raise Conflict(f"a deployment named {name!r} already exists")
            await repo.insert_revision(
                conn, deployment_id, bento=req.bento, config=config, spec=spec,
                source="api", created_by=actor,
            )  # fmt: skip
            row = await repo.get_deployment(conn, org, name)
            assert row is not None
            await write_event(conn, self._spec_event(DeploymentRequested, row, actor))
        log.info("deployer.deployment.created", deployment=name, cluster=cluster.name)
        return row.contract()

    async def update_deployment(self, req: dep.UpdateDeployment) -> dep.Deployment:
        org, actor = req.scope.organization, req.scope.actor
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._locked(conn, org, req.name, req.cluster)
            cluster = await self._cluster(row.cluster)
            config = self._with_defaults(req.bento, req.config)
            if config.ingress is None:  # a client that knows no ingress keeps the one set
                previous = row.revision.contract().config.ingress
                config = config.model_copy(update={"ingress": previous})
            types = await self._validate(conn, org, cluster, req.bento, config)
            spec = spec_from_config(org, req.bento, config, types)
            row = await self._new_revision(conn, row, req.bento, config, spec, "api", actor)
        return row.contract()

    async def rollback_deployment(self, req: dep.Rollback) -> dep.Deployment:
        org, actor = req.scope.organization, req.scope.actor
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._locked(conn, org, req.name, req.cluster)
            earlier = await repo.get_revision(conn, row.id, req.revision)
            if earlier is None:
                raise InvalidInput(
                    f"deployment {req.name} has no revision {req.revision}"
                    f" (latest: {row.revision.number})"
                )
            old = earlier.contract()
            row = await self._new_revision(
                conn, row, old.bento, old.config, old.spec, "rollback", actor
            )
        return row.contract()

    async def _new_revision(
        self,
        conn: Connection,
        row: DeploymentRow,
        bento: dep.BentoTarget,
        config: dep.DeploymentConfig,
        spec: dict[str, Any],
        source: str,
        actor: str | None,
        kube_generation: int | None = None,
    ) -> DeploymentRow:
        await repo.insert_revision(
            conn, row.id, bento=bento, config=config, spec=spec, source=source,
            created_by=actor, kube_generation=kube_generation,
        )  # fmt: skip
        await repo.set_labels(conn, row.id, labels_to_dict(config.labels))
        if row.status in STOPPED:
            # `start` is an update of a terminated deployment: it runs again.
            await self._set_status(conn, row, DeploymentStatus.NON_DEPLOYED, "Started", None)
        updated = await repo.get_deployment(conn, row.organization, row.name)
        assert updated is not None
        if source != "cluster":  # a cluster revision is already what the cluster runs
            await write_event(conn, self._spec_event(DeploymentUpdated, updated, actor))
        return updated

    async def get_deployment(self, ref: dep.DeploymentRef) -> dep.Deployment:
        row = await repo.get_deployment(self._pool(), ref.scope.organization, ref.name)
        if row is None or (ref.cluster and row.cluster != ref.cluster):
            raise NotFound(f"deployment {ref.name} not found")
        return row.contract()

    async def list_deployments(self, req: dep.ListDeployments) -> Page[dep.Deployment]:
        total, rows = await repo.list_deployments(self._pool(), req)
        return Page[dep.Deployment](
            start=req.start, count=len(rows), total=total, items=[r.contract() for r in rows]
        )

    async def list_revisions(self, ref: dep.ListRevisions) -> dep.Revisions:
        row = await repo.get_deployment(self._pool(), ref.scope.organization, ref.name)
        if row is None or (ref.cluster and row.cluster != ref.cluster):
            raise NotFound(f"deployment {ref.name} not found")
        revisions = await repo.list_revisions(self._pool(), row.id)
        return dep.Revisions(items=[r.contract() for r in revisions])

    async def terminate_deployment(self, ref: dep.DeploymentRef) -> dep.Deployment:
        org, actor = ref.scope.organization, ref.scope.actor
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._locked(conn, org, ref.name, ref.cluster)
            if row.status not in STOPPED:
                await self._set_status(conn, row, DeploymentStatus.TERMINATING, "Terminated",
                                       f"terminated by {actor or 'someone'}")  # fmt: skip
            data = DeploymentStoppedData(deployment=_ref(row), by=actor)
            await write_event(
                conn, DeploymentTerminated(source=SOURCE, subject=_subject(row), data=data)
            )
            updated = await repo.get_deployment(conn, org, ref.name)
        assert updated is not None
        return updated.contract()

    async def delete_deployment(self, ref: dep.DeploymentRef) -> dep.Deployment:
        org, actor = ref.scope.organization, ref.scope.actor
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._locked(conn, org, ref.name, ref.cluster)
            await repo.delete_deployment(conn, row.id)
            data = DeploymentStoppedData(deployment=_ref(row), by=actor)
            await write_event(
                conn, DeploymentDeleted(source=SOURCE, subject=_subject(row), data=data)
            )
        return row.contract()

    async def _locked(
        self, conn: Connection, org: str, name: str, cluster: str | None
    ) -> DeploymentRow:
        row = await repo.get_deployment_for_update(conn, org, name)
        if row is None or (cluster and row.cluster != cluster):
            raise NotFound(f"deployment {name} not found")
        return row

    def _spec_event(
        self, cls: type[DeploymentRequested] | type[DeploymentUpdated], row: DeploymentRow,
        actor: str | None,
    ) -> Event:  # fmt: skip
        revision = row.revision.contract()
        data = DeploymentSpecData(
            deployment=_ref(row),
            bento=ArtifactRef(
                organization=row.organization, name=revision.bento.name,
                version=revision.bento.version,
            ),
            revision=revision.number,
            spec=revision.spec,
            requested_by=actor,
        )  # fmt: skip
        return cls(source=SOURCE, subject=_subject(row), data=data)

    # --- what the cluster's controller reports -----------------------------------

    async def _set_status(
        self,
        conn: Connection,
        row: DeploymentRow,
        status: DeploymentStatus,
        reason: str | None,
        message: str | None,
        *,
        urls: list[str] | None = None,
        ready: int = 0,
        desired: int = 0,
        generation: int | None = None,
    ) -> bool:
        """Record a status; emit `deployment.status_changed` only when it changed."""
        changed = (row.status, row.status_reason) != (status, reason)
        if not changed and (urls is None or urls == row.urls):
            return False
        await repo.set_status(conn, row.id, status, reason, message, urls)
        if changed:
            data = DeploymentStatusData(
                deployment=_ref(row), status=status, previous_status=row.status,
                revision=row.revision.number, ready_replicas=ready, desired_replicas=desired,
                observed_generation=generation, reason=reason, message=message,
                observed_at=datetime.now(UTC),
            )  # fmt: skip
            await write_event(
                conn, DeploymentStatusChanged(source=SOURCE, subject=_subject(row), data=data)
            )
        return changed

    async def record_status(
        self,
        cluster: str,
        namespace: str,
        name: str,
        status: DeploymentStatus,
        reason: str | None,
        message: str | None,
        *,
        urls: list[str] | None = None,
        ready: int = 0,
        desired: int = 0,
        generation: int | None = None,
    ) -> bool:
        """The controller's report; True when the status changed (an event went out).

        A read first, a write only on a change: an idle controller costs no writes.
        """
        row = await repo.get_by_object(self._pool(), cluster, namespace, name)
        if row is None or not _differs(row, status, reason, urls) or _overtaken(row, status):
            return False
        async with self._pool().acquire() as conn, conn.transaction():
            locked = await repo.get_by_object(conn, cluster, namespace, name, lock=True)
            if locked is None or _overtaken(locked, status):
                return False
            return await self._set_status(
                conn, locked, status, reason, message, urls=urls, ready=ready,
                desired=desired, generation=generation,
            )  # fmt: skip

    async def record_cluster_spec(
        self,
        cluster: str,
        obj: dict[str, Any],
        bento: dep.BentoTarget,
        organization: str,
    ) -> DeploymentRow:
        """A BentoDeployment the API did not write (GitOps): a deployment, or a revision.

        The revision's config is the spec read back in the client's words; it is
        recorded with the object's generation, so the same spec is recorded once.
        """
        metadata = obj["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        generation = int(metadata.get("generation") or 0)
        spec = obj.get("spec") or {}
        config = config_from_spec(spec)
        async with self._pool().acquire() as conn, conn.transaction():
            row = await repo.get_by_object(conn, cluster, namespace, name, lock=True)
            if row is None:
                deployment_id = await repo.insert_deployment(
                    conn, organization=organization, name=name, cluster=cluster,
                    namespace=namespace, created_by="kubernetes",
                    status=DeploymentStatus.NON_DEPLOYED,
                    labels=labels_to_dict(config.labels),
                )  # fmt: skip
                if deployment_id is None:
                    raise Conflict(
                        f"BentoDeployment {namespace}/{name}: organization {organization}"
                        " already has a deployment of that name on another cluster"
                    )
                await repo.insert_revision(
                    conn, deployment_id, bento=bento, config=config, spec=spec,
                    source="cluster", created_by="kubernetes", kube_generation=generation,
                )  # fmt: skip
                created = await repo.get_by_object(conn, cluster, namespace, name)
                assert created is not None
                return created
            if row.revision.kube_generation == generation:
                return row
            return await self._new_revision(
                conn, row, bento, config, spec, "cluster", "kubernetes", generation
            )

    async def applied(self, row: DeploymentRow, generation: int) -> None:
        """The latest revision is what the BentoDeployment of this generation runs."""
        await repo.set_kube_generation(self._pool(), row.revision.id, generation)

    async def find(self, cluster: str, namespace: str, name: str) -> DeploymentRow | None:
        return await repo.get_by_object(self._pool(), cluster, namespace, name)

    async def request_build(self, row: DeploymentRow) -> bool:
        """Ask the builder for the image of the revision's bento, once per revision.

        `build.requested` names the cluster and namespace, where the builder of that cluster
        publishes the Bento the controller waits for.
        """
        bento = row.revision.contract().bento
        async with self._pool().acquire() as conn, conn.transaction():
            if not await repo.claim_build_request(conn, row.revision.id):
                return False
            data = BuildRequestedData(
                build_id=uuid.uuid4().hex,
                bento=ArtifactRef(
                    organization=row.organization, name=bento.name, version=bento.version
                ),
                reason="deployment",
                requested_by=row.created_by,
                cluster=row.cluster,
                namespace=row.namespace,
            )
            await write_event(conn, BuildRequested(source=SOURCE, subject=_subject(row), data=data))
        log.info("deployer.build.requested", deployment=row.name, bento=bento.tag)
        return True

    async def build_failed(
        self, cluster: str, bento: ArtifactRef, reason: str
    ) -> list[tuple[str, str]]:
        """Record a failed build; the keys of this cluster's deployments it concerns."""
        return await repo.fail_builds(
            self._pool(), cluster, bento.organization, bento.name, bento.version, reason
        )

    async def cluster_deployments(self, cluster: str) -> list[DeploymentRow]:
        return await repo.list_cluster_deployments(self._pool(), cluster)

    async def secret_data(self, organization: str, names: list[str]) -> dict[str, dict[str, str]]:
        rows = await repo.get_secrets(self._pool(), organization, names)
        return {row.name: row.data for row in rows}

    # --- organization secrets ---------------------------------------------------------

    async def create_secret(self, req: dep.CreateSecret) -> dep.OrgSecret:
        row = await repo.insert_secret(
            self._pool(), req.scope.organization, req.name, req.description, req.items,
            req.scope.actor,
        )  # fmt: skip
        if row is None:
            raise Conflict(f"a secret named {req.name!r} already exists")
        return row.contract()

    async def update_secret(self, req: dep.UpdateSecret) -> dep.OrgSecret:
        row = await repo.update_secret(
            self._pool(), req.scope.organization, req.name, req.description, req.items
        )
        if row is None:
            raise NotFound(f"secret {req.name} not found")
        return row.contract()

    async def get_secret(self, ref: dep.SecretRef) -> dep.OrgSecret:
        row = await repo.get_secret(self._pool(), ref.scope.organization, ref.name)
        if row is None:
            raise NotFound(f"secret {ref.name} not found")
        return row.contract()

    async def list_secrets(self, req: dep.ListSecrets) -> Page[dep.OrgSecret]:
        total, rows = await repo.list_secrets(
            self._pool(), req.scope.organization, req.search, req.start, req.count
        )
        return Page[dep.OrgSecret](
            start=req.start, count=len(rows), total=total, items=[r.contract() for r in rows]
        )

    async def delete_secret(self, ref: dep.SecretRef) -> dep.OrgSecret:
        users = await repo.secret_in_use(self._pool(), ref.scope.organization, ref.name)
        if users:
            raise Conflict(f"secret {ref.name} is used by deployment(s) {', '.join(users)}")
        row = await repo.delete_secret(self._pool(), ref.scope.organization, ref.name)
        if row is None:
            raise NotFound(f"secret {ref.name} not found")
        return row.contract()


def _overtaken(row: DeploymentRow, status: DeploymentStatus) -> bool:
    """A report from a pass that started before a terminate: it must not revive it."""
    return row.status in STOPPED and status not in STOPPED


def _differs(
    row: DeploymentRow, status: DeploymentStatus, reason: str | None, urls: list[str] | None
) -> bool:
    return (row.status, row.status_reason) != (status, reason) or (
        urls is not None and urls != row.urls
    )
