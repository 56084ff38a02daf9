"""The deployment API the real `bentoml deployment ...` commands speak (v2), plus clusters.

Each route authenticates the caller, checks the bento with the registry, turns the
request into a deployer command (`shared.contracts.deployer`, NATS request/reply) and
shapes the answer the client decodes (see ../shared/docs/bentoml-client-protocol.md §9):
`?cluster=` arrives empty when not given, every success is a 200 with JSON (DELETE too,
with the deleted deployment), an unknown deployment is a 404 (which `apply` turns into a
create). Beyond the client: rollback to an earlier revision and the revision history under
`/api/ekiben/v1/deployments`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError

from services.gateway import calls
from services.gateway.artifacts.schemas import (
    BentoWithRepositorySchema,
    version_with_repository_schema,
)
from services.gateway.audit.service import audit
from services.gateway.deployments import service as svc
from services.gateway.deployments.schemas import (
    ClusterFullSchema,
    ClusterSchema,
    CreateDeploymentBody,
    CreateSecretBody,
    DeploymentFullSchema,
    InstanceTypeSchema,
    KubeEventListSchema,
    RevisionListSchema,
    RollbackBody,
    SecretSchema,
    UpdateDeploymentBody,
    UpdateSecretBody,
)
from services.gateway.guard import GatewayRoute
from services.gateway.identity.auth import Principal, Role, current_principal, require_role
from services.gateway.identity.schemas import organization_schema
from services.gateway.schemas import ListSchema, parse_page
from shared.contracts import deployer as dep
from shared.contracts import registry as reg
from shared.errors import InvalidInput, NotFound
from shared.http import error_responses

Reader = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(require_role(Role.DEVELOPER))]
ClusterParam = Annotated[
    str, Query(description="The cluster; empty: the only one, or the one named default.")
]
DeploymentName = Annotated[str, Path(description="The deployment's name.", max_length=253)]

deployments = APIRouter(tags=["deployments"], route_class=GatewayRoute)
clusters = APIRouter(tags=["clusters"], route_class=GatewayRoute)
secrets = APIRouter(tags=["secrets"], route_class=GatewayRoute)


def _cluster(value: str | None) -> str | None:
    return (value or "").strip() or None


def _ref(principal: Principal, name: str, cluster: str) -> dep.DeploymentRef:
    """Deployment `name` of the caller's organization, on `cluster` (empty: the default)."""
    return calls.command(
        dep.DeploymentRef, scope=calls.scope(principal), cluster=_cluster(cluster), name=name
    )


async def _bento(request: Request, principal: Principal, tag: str) -> tuple[
    dep.BentoTarget, BentoWithRepositorySchema
]:  # fmt: skip
    """The bento a deployment is asked to run, as the registry has it (422 when unknown)."""
    name, version = svc.split_tag(tag)
    try:
        ref = reg.GetVersion(
            scope=calls.scope(principal), kind=reg.Kind.BENTO, repository=name, version=version,
            include_repository=True,
        )  # fmt: skip
    except ValidationError as exc:
        raise InvalidInput(f"bento {tag!r} is not a valid bento tag") from exc
    try:
        found = await calls.rpc(request).call(reg.GET_VERSION, ref)
    except NotFound:
        raise InvalidInput(f"unknown bento {tag}: push it first (bentoml push {tag})") from None
    if found.upload_status is not reg.UploadStatus.SUCCESS:
        raise InvalidInput(f"bento {tag} is not uploaded (it is {found.upload_status.value})")
    manifest = found.manifest or {}
    services = [
        str(s["name"])
        for s in manifest.get("services") or []
        if isinstance(s, dict) and isinstance(s.get("name"), str)
    ]
    entry = manifest.get("entry_service")
    target = dep.BentoTarget(
        name=found.repository, version=found.version, services=services,
        entry_service=str(entry) if entry else None,
    )  # fmt: skip
    assert found.repository_detail is not None  # asked for with include_repository
    schema = version_with_repository_schema(found, found.repository_detail, calls.strategy(request))
    assert isinstance(schema, BentoWithRepositorySchema)
    return target, schema


async def _bento_of(
    request: Request, principal: Principal, deployment: dep.Deployment
) -> BentoWithRepositorySchema | None:
    bento = deployment.latest_revision.bento
    try:
        _, schema = await _bento(request, principal, bento.tag)
    except (InvalidInput, NotFound):
        return None  # deleted from the registry since: the revision's record stands in
    return schema


async def _clusters(request: Request, principal: Principal) -> dict[str, dep.Cluster]:
    listed = await calls.rpc(request).call(
        dep.LIST_CLUSTERS, dep.ListClusters(scope=calls.scope(principal))
    )
    return {cluster.name: cluster for cluster in listed.items}


async def _answer(
    request: Request,
    principal: Principal,
    deployment: dep.Deployment,
    *,
    bento: BentoWithRepositorySchema | None = None,
    known: dict[str, dep.Cluster] | None = None,
) -> DeploymentFullSchema:
    if known is None:
        known = await _clusters(request, principal)
    if bento is None:
        bento = await _bento_of(request, principal, deployment)
    return svc.deployment_schema(deployment, known.get(deployment.cluster), bento)


# --- deployments (v2) ----------------------------------------------------------------------


@deployments.post(
    "/api/v2/deployments", response_model=DeploymentFullSchema, responses=error_responses(409)
)
async def create_deployment(
    request: Request, principal: Writer, body: CreateDeploymentBody, cluster: ClusterParam = ""
) -> DeploymentFullSchema:
    bento, bento_schema = await _bento(request, principal, body.bento)
    command = calls.command(
        dep.CreateDeployment, scope=calls.scope(principal), cluster=_cluster(cluster),
        name=body.name or None, bento=bento, config=svc.config_from_body(body),
    )  # fmt: skip
    created = await calls.rpc(request).call(dep.CREATE_DEPLOYMENT, command)
    await audit(
        request, principal, "deployment.create", "deployment", created.name,
        {"cluster": created.cluster, "bento": bento.tag, "revision": 1},
    )  # fmt: skip
    return await _answer(request, principal, created, bento=bento_schema)


@deployments.get("/api/v2/deployments", response_model=ListSchema[DeploymentFullSchema])
async def list_deployments(
    request: Request,
    principal: Reader,
    cluster: ClusterParam = "",
    all: Annotated[str, Query(description="Every cluster (the client's default).")] = "",
    start: str = "",
    count: str = "",
    q: Annotated[str, Query(description="`label:k=v` terms and words in the name.")] = "",
    search: str = "",
) -> ListSchema[DeploymentFullSchema]:
    page = parse_page(start, count, "", default_count=20)
    command = calls.command(
        dep.ListDeployments, scope=calls.scope(principal), cluster=_cluster(cluster),
        labels=svc.label_filters(q), search=svc.search_words(q, search),
        start=page.start, count=page.count,
    )  # fmt: skip
    listed = await calls.rpc(request).call(dep.LIST_DEPLOYMENTS, command)
    known = await _clusters(request, principal)
    bentos = await asyncio.gather(*(_bento_of(request, principal, d) for d in listed.items))
    items = [
        svc.deployment_schema(d, known.get(d.cluster), bento)
        for d, bento in zip(listed.items, bentos, strict=True)
    ]
    return ListSchema[DeploymentFullSchema](
        start=listed.start, count=listed.count, total=listed.total, items=items
    )


@deployments.get("/api/v2/deployments/{name}", response_model=DeploymentFullSchema)
async def get_deployment(
    request: Request, principal: Reader, name: DeploymentName, cluster: ClusterParam = ""
) -> DeploymentFullSchema:
    ref = _ref(principal, name, cluster)
    found = await calls.rpc(request).call(dep.GET_DEPLOYMENT, ref)
    return await _answer(request, principal, found)


@deployments.put("/api/v2/deployments/{name}", response_model=DeploymentFullSchema)
async def update_deployment(
    request: Request,
    principal: Writer,
    name: DeploymentName,
    body: UpdateDeploymentBody,
    cluster: ClusterParam = "",
) -> DeploymentFullSchema:
    bento, bento_schema = await _bento(request, principal, body.bento)
    command = calls.command(
        dep.UpdateDeployment, scope=calls.scope(principal), cluster=_cluster(cluster), name=name,
        bento=bento, config=svc.config_from_body(body),
    )  # fmt: skip
    updated = await calls.rpc(request).call(dep.UPDATE_DEPLOYMENT, command)
    await audit(
        request, principal, "deployment.update", "deployment", name,
        {"bento": bento.tag, "revision": updated.latest_revision.number},
    )  # fmt: skip
    return await _answer(request, principal, updated, bento=bento_schema)


@deployments.put("/api/v2/deployments/{name}/void_update", response_model=DeploymentFullSchema)
async def void_update_deployment(
    request: Request, principal: Writer, name: DeploymentName, cluster: ClusterParam = ""
) -> DeploymentFullSchema:
    """Code sessions' "nothing changed, look again": the deployment as it is."""
    ref = _ref(principal, name, cluster)
    found = await calls.rpc(request).call(dep.GET_DEPLOYMENT, ref)
    return await _answer(request, principal, found)


@deployments.post("/api/v2/deployments/{name}/terminate", response_model=DeploymentFullSchema)
async def terminate_deployment(
    request: Request, principal: Writer, name: DeploymentName, cluster: ClusterParam = ""
) -> DeploymentFullSchema:
    ref = _ref(principal, name, cluster)
    terminated = await calls.rpc(request).call(dep.TERMINATE_DEPLOYMENT, ref)
    await audit(request, principal, "deployment.terminate", "deployment", name, {})
    return await _answer(request, principal, terminated)


@deployments.delete("/api/v2/deployments/{name}", response_model=DeploymentFullSchema)
async def delete_deployment(
    request: Request, principal: Writer, name: DeploymentName, cluster: ClusterParam = ""
) -> DeploymentFullSchema:
    ref = _ref(principal, name, cluster)
    deleted = await calls.rpc(request).call(dep.DELETE_DEPLOYMENT, ref)
    await audit(request, principal, "deployment.delete", "deployment", name, {})
    # The client needs the deleted deployment back, with a 200.
    return await _answer(request, principal, deleted)


@deployments.post("/api/ekiben/v1/deployments/{name}/rollback", response_model=DeploymentFullSchema)
async def rollback_deployment(
    request: Request,
    principal: Writer,
    name: DeploymentName,
    body: RollbackBody,
    cluster: ClusterParam = "",
) -> DeploymentFullSchema:
    command = calls.command(
        dep.Rollback, scope=calls.scope(principal), cluster=_cluster(cluster), name=name,
        revision=body.revision,
    )  # fmt: skip
    rolled = await calls.rpc(request).call(dep.ROLLBACK_DEPLOYMENT, command)
    await audit(
        request, principal, "deployment.rollback", "deployment", name,
        {"to_revision": body.revision, "revision": rolled.latest_revision.number},
    )  # fmt: skip
    return await _answer(request, principal, rolled)


@deployments.get("/api/ekiben/v1/deployments/{name}/revisions", response_model=RevisionListSchema)
async def list_revisions(
    request: Request, principal: Reader, name: DeploymentName, cluster: ClusterParam = ""
) -> RevisionListSchema:
    ref = calls.command(
        dep.ListRevisions, scope=calls.scope(principal), cluster=_cluster(cluster), name=name
    )
    found = await calls.rpc(request).call(dep.GET_DEPLOYMENT, dep.DeploymentRef(**ref.model_dump()))
    revisions = await calls.rpc(request).call(dep.LIST_REVISIONS, ref)
    return RevisionListSchema(items=[svc.revision_schema(found, r, None) for r in revisions.items])


@deployments.get(
    "/api/ekiben/v1/deployments/{name}/events",
    response_model=KubeEventListSchema,
    responses=error_responses(503),
)
async def list_kube_events(
    request: Request,
    principal: Reader,
    name: DeploymentName,
    cluster: ClusterParam = "",
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> KubeEventListSchema:
    """The Kubernetes Events of the deployment's BentoDeployment and of the objects it made
    (Deployments, Pods, Services, autoscalers, Ingresses), the most recently seen first.
    Only a deployer of the deployment's cluster can read them: 503 when none answers."""
    ref = _ref(principal, name, cluster)
    found = await calls.rpc(request).call(dep.GET_DEPLOYMENT, ref)
    command = calls.command(
        dep.ListDeploymentEvents, scope=calls.scope(principal), cluster=found.cluster, name=name,
        limit=limit,
    )  # fmt: skip
    listed = await calls.rpc(request).call(dep.deployment_events_command(found.cluster), command)
    return KubeEventListSchema(items=[svc.kube_event_schema(e) for e in listed.items])


# --- clusters and instance types -----------------------------------------------------------


@clusters.get("/api/v1/clusters", response_model=ListSchema[ClusterSchema])
async def list_clusters(request: Request, principal: Reader) -> ListSchema[ClusterSchema]:
    known = await _clusters(request, principal)
    items = [svc.cluster_schema(c, c.name, principal.organization) for c in known.values()]
    return ListSchema[ClusterSchema](start=0, count=len(items), total=len(items), items=items)


@clusters.get(
    "/api/v1/clusters/{name}", response_model=ClusterFullSchema, responses=error_responses(404)
)
async def get_cluster(
    request: Request,
    principal: Reader,
    name: Annotated[str, Path(description="The cluster's name.", max_length=63)],
) -> ClusterFullSchema:
    """A cluster its deployer has announced, with its namespace and instance types (never
    its credentials: `kube_config` is empty)."""
    cluster = (await _clusters(request, principal)).get(name)
    if cluster is None:
        raise NotFound(f"no cluster {name!r}: no deployer has announced it")
    return svc.cluster_full_schema(cluster, organization_schema(principal.org))


@clusters.get("/api/v1/instance_types", response_model=list[InstanceTypeSchema])
async def list_instance_types(
    request: Request, principal: Reader, cluster: ClusterParam = ""
) -> list[InstanceTypeSchema]:
    ref = calls.command(dep.ClusterRef, scope=calls.scope(principal), cluster=_cluster(cluster))
    found = await calls.rpc(request).call(dep.LIST_INSTANCE_TYPES, ref)
    return [svc.instance_type_schema(item, found.cluster) for item in found.items]


# --- organization secrets ------------------------------------------------------------------


async def _secret_cluster(request: Request, principal: Principal) -> ClusterSchema:
    known = await _clusters(request, principal)
    first = next(iter(known.values()), None)
    name = first.name if first else "default"
    return svc.cluster_schema(first, name, principal.organization)


def _items(content: Any) -> list[dict[str, str]]:
    return [{"key": i.key, "value": i.value or ""} for i in content.items]


@secrets.get("/api/v1/org_secrets", response_model=ListSchema[SecretSchema])
async def list_secrets(
    request: Request, principal: Reader, start: str = "", count: str = "", search: str = ""
) -> ListSchema[SecretSchema]:
    page = parse_page(start, count, search, default_count=20)
    command = calls.command(
        dep.ListSecrets, scope=calls.scope(principal), search=page.search, start=page.start,
        count=page.count,
    )  # fmt: skip
    listed = await calls.rpc(request).call(dep.LIST_SECRETS, command)
    cluster = await _secret_cluster(request, principal)
    items = [svc.secret_schema(s, cluster) for s in listed.items]
    return ListSchema[SecretSchema](
        start=listed.start, count=listed.count, total=listed.total, items=items
    )


@secrets.post("/api/v1/org_secrets", response_model=SecretSchema, responses=error_responses(409))
async def create_secret(
    request: Request, principal: Writer, body: CreateSecretBody
) -> SecretSchema:
    command = calls.command(
        dep.CreateSecret, scope=calls.scope(principal), name=body.name,
        description=body.description or "", items=_items(body.content),
    )  # fmt: skip
    created = await calls.rpc(request).call(dep.CREATE_SECRET, command)
    await audit(request, principal, "secret.create", "secret", created.name, {"keys": created.keys})
    return svc.secret_schema(created, await _secret_cluster(request, principal))


@secrets.get("/api/v1/org_secrets/{name}", response_model=SecretSchema)
async def get_secret(
    request: Request, principal: Reader, name: Annotated[str, Path(max_length=253)]
) -> SecretSchema:
    ref = calls.command(dep.SecretRef, scope=calls.scope(principal), name=name)
    found = await calls.rpc(request).call(dep.GET_SECRET, ref)
    return svc.secret_schema(found, await _secret_cluster(request, principal))


@secrets.patch("/api/v1/org_secrets/{name}", response_model=SecretSchema)
async def update_secret(
    request: Request,
    principal: Writer,
    name: Annotated[str, Path(max_length=253)],
    body: UpdateSecretBody,
) -> SecretSchema:
    command = calls.command(
        dep.UpdateSecret, scope=calls.scope(principal), name=name, description=body.description,
        items=None if body.content is None else _items(body.content),
    )  # fmt: skip
    updated = await calls.rpc(request).call(dep.UPDATE_SECRET, command)
    await audit(request, principal, "secret.update", "secret", name, {"keys": updated.keys})
    return svc.secret_schema(updated, await _secret_cluster(request, principal))


@secrets.delete(
    "/api/v1/org_secrets/{name}", response_model=SecretSchema, responses=error_responses(409)
)
async def delete_secret(
    request: Request, principal: Writer, name: Annotated[str, Path(max_length=253)]
) -> SecretSchema:
    ref = calls.command(dep.SecretRef, scope=calls.scope(principal), name=name)
    deleted = await calls.rpc(request).call(dep.DELETE_SECRET, ref)
    await audit(request, principal, "secret.delete", "secret", name, {})
    return svc.secret_schema(deleted, await _secret_cluster(request, principal))
