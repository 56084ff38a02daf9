"""The deployer's SQL: deployments, revisions, organization secrets.

Every function takes a connection (or the pool) from the caller, who owns the transaction.
Rows leave as typed values (`DeploymentRow` with its latest `RevisionRow`, `SecretRow`) that
turn into contract models with `.contract()`; the service never sees a column name.
Labels are stored as a JSON object, so a label filter is a GIN-indexed containment test.
"""

# Queries are assembled from this module's fixed fragments and bind-parameter names only.
# ruff: noqa: S608

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts import deployer as dep
from shared.contracts.registry import labels_from_dict, labels_to_dict
from shared.contracts.vocabulary import DeploymentStatus
from shared.db import Connection, Pool

Db = Connection | Pool


@dataclass(frozen=True)
class RevisionRow:
    id: int
    uid: str
    deployment_id: int
    number: int
    bento: dict[str, Any]
    config: dict[str, Any]
    spec: dict[str, Any]
    source: str
    created_by: str | None
    created_at: datetime
    kube_generation: int | None
    build_requested_at: datetime | None
    build_failed_reason: str | None

    def contract(self) -> dep.Revision:
        return dep.Revision(
            uid=self.uid,
            number=self.number,
            bento=dep.BentoTarget.model_validate(self.bento),
            config=dep.DeploymentConfig.model_validate(self.config),
            spec=self.spec,
            source=self.source,
            created_by=self.created_by,
            created_at=self.created_at,
        )


@dataclass(frozen=True)
class DeploymentRow:
    id: int
    uid: str
    organization: str
    name: str
    cluster: str
    namespace: str
    created_by: str | None
    status: DeploymentStatus
    status_reason: str | None
    status_message: str | None
    status_updated_at: datetime | None
    labels: dict[str, str]
    urls: list[str]
    created_at: datetime
    updated_at: datetime | None
    revision: RevisionRow

    def contract(self) -> dep.Deployment:
        return dep.Deployment(
            uid=self.uid,
            organization=self.organization,
            name=self.name,
            cluster=self.cluster,
            namespace=self.namespace,
            created_by=self.created_by,
            status=self.status,
            status_reason=self.status_reason,
            status_message=self.status_message,
            status_updated_at=self.status_updated_at,
            labels=labels_from_dict(self.labels),
            urls=list(self.urls),
            created_at=self.created_at,
            updated_at=self.updated_at,
            latest_revision=self.revision.contract(),
        )


_REVISION_COLUMNS = (
    "id, uid, deployment_id, number, bento, config, spec, source, created_by, created_at,"
    " kube_generation, build_requested_at, build_failed_reason"
)
_DEPLOYMENT_COLUMNS = (
    "d.id, d.uid, d.organization, d.name, d.cluster, d.namespace, d.created_by, d.status,"
    " d.status_reason, d.status_message, d.status_updated_at, d.labels, d.urls, d.created_at,"
    " d.updated_at"
)
# A deployment with its latest revision (r.*), one index lookup each.
_SELECT = f"""
SELECT {_DEPLOYMENT_COLUMNS}, to_jsonb(r) AS revision
  FROM deployments d
  JOIN LATERAL (SELECT {_REVISION_COLUMNS} FROM revisions
                 WHERE deployment_id = d.id ORDER BY number DESC LIMIT 1) r ON true
"""


def _revision(raw: dict[str, Any] | asyncpg.Record) -> RevisionRow:
    data = dict(raw)
    for key in ("created_at", "build_requested_at"):
        value = data.get(key)
        if isinstance(value, str):
            data[key] = datetime.fromisoformat(value)
    return RevisionRow(**{name: data[name] for name in RevisionRow.__dataclass_fields__})


def _deployment(record: asyncpg.Record) -> DeploymentRow:
    data = dict(record)
    revision = _revision(data.pop("revision"))
    data["status"] = DeploymentStatus(data["status"])
    return DeploymentRow(**data, revision=revision)


async def insert_deployment(
    conn: Connection,
    *,
    organization: str,
    name: str,
    cluster: str,
    namespace: str,
    created_by: str | None,
    status: DeploymentStatus,
    labels: dict[str, str],
) -> int | None:
    """The new deployment's id; None when the name (or the cluster object) is taken."""
    value: int | None = await conn.fetchval(
        """INSERT INTO deployments (organization, name, cluster, namespace, created_by, status,
                                    labels, status_updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp())
           ON CONFLICT DO NOTHING RETURNING id""",
        organization, name, cluster, namespace, created_by, status.value, labels,
    )  # fmt: skip
    return value


async def insert_revision(
    conn: Connection,
    deployment_id: int,
    *,
    bento: dep.BentoTarget,
    config: dep.DeploymentConfig,
    spec: dict[str, Any],
    source: str,
    created_by: str | None,
    kube_generation: int | None = None,
) -> int:
    """Append the next revision (numbered after the latest); returns its number."""
    number: int = await conn.fetchval(
        """INSERT INTO revisions (deployment_id, number, bento, config, spec, source, created_by,
                                  kube_generation)
           SELECT $1, coalesce(max(number), 0) + 1, $2, $3, $4, $5, $6, $7
             FROM revisions WHERE deployment_id = $1
           RETURNING number""",
        deployment_id, bento.model_dump(mode="json"), config.model_dump(mode="json"), spec,
        source, created_by, kube_generation,
    )  # fmt: skip
    await conn.execute(
        "UPDATE deployments SET updated_at = clock_timestamp() WHERE id = $1", deployment_id
    )
    return number


async def get_deployment(db: Db, organization: str, name: str) -> DeploymentRow | None:
    record = await db.fetchrow(
        f"{_SELECT} WHERE d.organization = $1 AND d.name = $2", organization, name
    )
    return _deployment(record) if record else None


async def get_deployment_for_update(
    conn: Connection, organization: str, name: str
) -> DeploymentRow | None:
    """The deployment, its row locked until the transaction ends (one change at a time)."""
    locked = await conn.fetchval(
        "SELECT id FROM deployments WHERE organization = $1 AND name = $2 FOR UPDATE",
        organization,
        name,
    )
    if locked is None:
        return None
    record = await conn.fetchrow(f"{_SELECT} WHERE d.id = $1", locked)
    return _deployment(record) if record else None


async def get_by_object(
    db: Db, cluster: str, namespace: str, name: str, *, lock: bool = False
) -> DeploymentRow | None:
    """The deployment that is BentoDeployment `namespace/name` on `cluster`."""
    if lock:
        found = await db.fetchval(
            "SELECT id FROM deployments WHERE cluster = $1 AND namespace = $2 AND name = $3"
            " FOR UPDATE",
            cluster, namespace, name,
        )  # fmt: skip
        if found is None:
            return None
        record = await db.fetchrow(f"{_SELECT} WHERE d.id = $1", found)
    else:
        record = await db.fetchrow(
            f"{_SELECT} WHERE d.cluster = $1 AND d.namespace = $2 AND d.name = $3",
            cluster, namespace, name,
        )  # fmt: skip
    return _deployment(record) if record else None


async def list_deployments(db: Db, flt: dep.ListDeployments) -> tuple[int, list[DeploymentRow]]:
    conditions = ["d.organization = $1"]
    params: list[Any] = [flt.scope.organization]

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if flt.cluster:
        conditions.append(f"d.cluster = {param(flt.cluster)}")
    if flt.labels:
        conditions.append(f"d.labels @> {param(labels_to_dict(flt.labels))}::jsonb")
    if flt.search:
        conditions.append(f"strpos(d.name, {param(flt.search)}) > 0")
    if flt.statuses:
        conditions.append(f"d.status = ANY({param([s.value for s in flt.statuses])}::text[])")
    if flt.creator:
        conditions.append(f"d.created_by = {param(flt.creator)}")
    where = " AND ".join(conditions)
    total: int = await db.fetchval(f"SELECT count(*) FROM deployments d WHERE {where}", *params)
    records = await db.fetch(
        f"{_SELECT} WHERE {where} ORDER BY d.created_at DESC, d.id DESC"
        f" OFFSET {param(flt.start)} LIMIT {param(flt.count)}",
        *params,
    )
    return total, [_deployment(r) for r in records]


async def list_cluster_deployments(db: Db, cluster: str) -> list[DeploymentRow]:
    records = await db.fetch(f"{_SELECT} WHERE d.cluster = $1 ORDER BY d.id", cluster)
    return [_deployment(r) for r in records]


async def list_revisions(db: Db, deployment_id: int) -> list[RevisionRow]:
    records = await db.fetch(
        f"SELECT {_REVISION_COLUMNS} FROM revisions WHERE deployment_id = $1 ORDER BY number DESC",
        deployment_id,
    )
    return [_revision(r) for r in records]


async def get_revision(db: Db, deployment_id: int, number: int) -> RevisionRow | None:
    record = await db.fetchrow(
        f"SELECT {_REVISION_COLUMNS} FROM revisions WHERE deployment_id = $1 AND number = $2",
        deployment_id,
        number,
    )
    return _revision(record) if record else None


async def set_status(
    conn: Connection,
    deployment_id: int,
    status: DeploymentStatus,
    reason: str | None,
    message: str | None,
    urls: list[str] | None = None,
) -> None:
    await conn.execute(
        """UPDATE deployments
              SET status = $2, status_reason = $3, status_message = $4,
                  status_updated_at = clock_timestamp(), urls = coalesce($5::jsonb, urls)
            WHERE id = $1""",
        deployment_id, status.value, reason, message, urls,
    )  # fmt: skip


async def set_labels(conn: Connection, deployment_id: int, labels: dict[str, str]) -> None:
    await conn.execute("UPDATE deployments SET labels = $2 WHERE id = $1", deployment_id, labels)


async def set_kube_generation(db: Db, revision_id: int, generation: int) -> None:
    await db.execute(
        "UPDATE revisions SET kube_generation = $2 WHERE id = $1 AND kube_generation IS DISTINCT"
        " FROM $2",
        revision_id,
        generation,
    )


async def claim_build_request(db: Db, revision_id: int) -> bool:
    """True the first time a build is asked for on behalf of this revision."""
    claimed = await db.fetchval(
        """UPDATE revisions SET build_requested_at = clock_timestamp()
            WHERE id = $1 AND build_requested_at IS NULL RETURNING true""",
        revision_id,
    )
    return bool(claimed)


async def fail_builds(
    db: Db, cluster: str, organization: str, name: str, version: str, reason: str
) -> list[tuple[str, str]]:
    """Mark latest revisions on `cluster` running bento name:version as failed to build.

    Returns the (namespace, name) of each deployment concerned.
    """
    records = await db.fetch(
        """UPDATE revisions r SET build_failed_reason = $5
             FROM deployments d
            WHERE r.deployment_id = d.id AND d.cluster = $1 AND d.organization = $2
              AND r.bento ->> 'name' = $3 AND r.bento ->> 'version' = $4
              AND r.number = (SELECT max(number) FROM revisions WHERE deployment_id = d.id)
              AND r.build_failed_reason IS DISTINCT FROM $5
        RETURNING d.namespace, d.name""",
        cluster, organization, name, version, reason,
    )  # fmt: skip
    return [(r["namespace"], r["name"]) for r in records]


async def delete_deployment(conn: Connection, deployment_id: int) -> None:
    await conn.execute("DELETE FROM deployments WHERE id = $1", deployment_id)


# --- organization secrets ---------------------------------------------------------------


@dataclass(frozen=True)
class SecretRow:
    id: int
    uid: str
    organization: str
    name: str
    description: str
    items: list[dict[str, str]]
    created_by: str | None
    created_at: datetime
    updated_at: datetime | None

    def contract(self) -> dep.OrgSecret:
        return dep.OrgSecret(
            uid=self.uid,
            organization=self.organization,
            name=self.name,
            description=self.description,
            keys=[item["key"] for item in self.items],
            created_by=self.created_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    @property
    def data(self) -> dict[str, str]:
        return {item["key"]: item.get("value", "") for item in self.items}


_ORG_SECRET_FIELDS = ", ".join(
    ("id", "uid", "organization", "name", "description", "items", "created_by", "created_at",
     "updated_at")
)  # fmt: skip


async def insert_secret(
    db: Db,
    organization: str,
    name: str,
    description: str,
    items: list[dep.SecretItem],
    created_by: str | None,
) -> SecretRow | None:
    record = await db.fetchrow(
        f"""INSERT INTO org_secrets (organization, name, description, items, created_by)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {_ORG_SECRET_FIELDS}""",
        organization, name, description, [i.model_dump() for i in items], created_by,
    )  # fmt: skip
    return SecretRow(**dict(record)) if record else None


async def update_secret(
    db: Db,
    organization: str,
    name: str,
    description: str | None,
    items: list[dep.SecretItem] | None,
) -> SecretRow | None:
    record = await db.fetchrow(
        f"""UPDATE org_secrets
               SET description = coalesce($3, description), items = coalesce($4::jsonb, items),
                   updated_at = clock_timestamp()
             WHERE organization = $1 AND name = $2 RETURNING {_ORG_SECRET_FIELDS}""",
        organization, name, description,
        None if items is None else [i.model_dump() for i in items],
    )  # fmt: skip
    return SecretRow(**dict(record)) if record else None


async def get_secret(db: Db, organization: str, name: str) -> SecretRow | None:
    record = await db.fetchrow(
        f"SELECT {_ORG_SECRET_FIELDS} FROM org_secrets WHERE organization = $1 AND name = $2",
        organization,
        name,
    )
    return SecretRow(**dict(record)) if record else None


async def get_secrets(db: Db, organization: str, names: list[str]) -> list[SecretRow]:
    records = await db.fetch(
        f"SELECT {_ORG_SECRET_FIELDS} FROM org_secrets WHERE organization = $1"
        " AND name = ANY($2::text[]) ORDER BY name",
        organization,
        names,
    )
    return [SecretRow(**dict(r)) for r in records]


async def list_secrets(
    db: Db, organization: str, search: str | None, start: int, count: int
) -> tuple[int, list[SecretRow]]:
    where = "organization = $1 AND ($2::text IS NULL OR strpos(name, $2) > 0)"
    total: int = await db.fetchval(
        f"SELECT count(*) FROM org_secrets WHERE {where}", organization, search
    )
    records = await db.fetch(
        f"SELECT {_ORG_SECRET_FIELDS} FROM org_secrets WHERE {where}"
        " ORDER BY created_at DESC, id DESC OFFSET $3 LIMIT $4",
        organization, search, start, count,
    )  # fmt: skip
    return total, [SecretRow(**dict(r)) for r in records]


async def delete_secret(db: Db, organization: str, name: str) -> SecretRow | None:
    record = await db.fetchrow(
        "DELETE FROM org_secrets WHERE organization = $1 AND name = $2"
        f" RETURNING {_ORG_SECRET_FIELDS}",
        organization,
        name,
    )
    return SecretRow(**dict(record)) if record else None


async def secret_in_use(db: Db, organization: str, name: str) -> list[str]:
    """Names of deployments whose latest revision uses secret `name`."""
    records = await db.fetch(
        f"{_SELECT} WHERE d.organization = $1 AND r.config -> 'secrets' ? $2",
        organization,
        name,
    )
    return [record["name"] for record in records]
