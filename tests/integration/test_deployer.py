"""The deployer's commands end to end: NATS request/reply -> PostgreSQL, the outbox, NATS KV.

Each test runs real deployer runtimes (without their controllers: no Kubernetes here)
against the session's NATS and a fresh database, and calls them over NATS the way the
gateway does. Clusters exist because a deployer announced them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from services.deployer.app import Deployer, create_runtime
from services.deployer.settings import DeployerSettings
from shared.contracts import deployer as dep
from shared.contracts.registry import Label, Scope
from shared.contracts.vocabulary import DeploymentStatus
from shared.errors import Conflict, InvalidInput, NotFound
from shared.settings import NatsSettings, PostgresSettings
from tests.fixtures.events import stored_events

pytestmark = pytest.mark.timeout(120)

SCOPE = Scope(organization="default", actor="alice")
IRIS = dep.BentoTarget(name="iris", version="v1", services=["Iris"], entry_service="Iris")
PAIR = dep.BentoTarget(
    name="pair", version="v1", services=["Front", "Model"], entry_service="Front"
)


def deployer_settings(
    nats_url: str, pg_dsn: str, cluster: str = "default", **extra: Any
) -> DeployerSettings:
    return DeployerSettings(
        nats=NatsSettings(url=nats_url, backoff_seconds=[0.05, 0.1]),
        postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
        cluster_name=cluster,
        namespace=f"ns-{cluster}",
        controller_enabled=False,
        heartbeat_seconds=0.2,
        **extra,
    )


@contextlib.asynccontextmanager
async def running(settings: DeployerSettings) -> AsyncIterator[Deployer]:
    deployer = create_runtime(settings)
    async with deployer.runtime.running():
        yield deployer


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def counts(deployer: Deployer) -> tuple[int, int, int]:
    pool = deployer.runtime.pool
    return (
        await pool.fetchval("SELECT count(*) FROM deployments"),
        await pool.fetchval("SELECT count(*) FROM revisions"),
        await pool.fetchval("SELECT count(*) FROM outbox"),
    )


def config(min_replicas: int = 1, max_replicas: int = 2, **service: Any) -> dep.DeploymentConfig:
    return dep.DeploymentConfig(
        envs=[dep.EnvVar(name="MODE", value="prod")],
        labels=[Label(key="team", value="nlp")],
        services={
            "Iris": dep.ServiceConfig(
                scaling=dep.Scaling(min_replicas=min_replicas, max_replicas=max_replicas),
                **service,
            )
        },
    )


async def test_deployment_lifecycle_revisions_and_events(nats_url: str, pg_dsn: str) -> None:
    async with running(deployer_settings(nats_url, pg_dsn)) as deployer:
        rpc = deployer.runtime.rpc
        created = await rpc.call(
            dep.CREATE_DEPLOYMENT,
            dep.CreateDeployment(
                scope=SCOPE, name="iris", bento=IRIS,
                config=config(instance_type="cpu.small"),
            ),
        )  # fmt: skip
        assert created.cluster == "default"
        assert created.namespace == "ns-default"
        assert created.status is DeploymentStatus.NON_DEPLOYED
        assert created.created_by == "alice"
        revision = created.latest_revision
        assert revision.number == 1
        assert revision.source == "api"
        spec = revision.spec
        assert spec["bento"] == "default-iris-v1"
        assert spec["entryService"] == "Iris"
        assert spec["envs"] == [{"name": "MODE", "value": "prod"}]
        (service,) = spec["services"]
        assert service["autoscaling"] == {"minReplicas": 1, "maxReplicas": 2}
        assert service["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}

        # Listing by label; an unknown label finds nothing.
        page = await rpc.call(
            dep.LIST_DEPLOYMENTS,
            dep.ListDeployments(scope=SCOPE, labels=[Label(key="team", value="nlp")]),
        )
        assert [d.name for d in page.items] == ["iris"]
        assert page.total == 1
        none = await rpc.call(
            dep.LIST_DEPLOYMENTS,
            dep.ListDeployments(scope=SCOPE, labels=[Label(key="team", value="cv")]),
        )
        assert none.total == 0

        # An update is revision 2; a rollback to 1 is revision 3 with revision 1's spec.
        updated = await rpc.call(
            dep.UPDATE_DEPLOYMENT,
            dep.UpdateDeployment(scope=SCOPE, name="iris", bento=IRIS, config=config(2, 4)),
        )
        assert updated.latest_revision.number == 2
        assert updated.latest_revision.spec["services"][0]["autoscaling"]["minReplicas"] == 2
        rolled = await rpc.call(
            dep.ROLLBACK_DEPLOYMENT, dep.Rollback(scope=SCOPE, name="iris", revision=1)
        )
        assert rolled.latest_revision.number == 3
        assert rolled.latest_revision.source == "rollback"
        assert rolled.latest_revision.spec == spec
        revisions = await rpc.call(dep.LIST_REVISIONS, dep.ListRevisions(scope=SCOPE, name="iris"))
        assert [r.number for r in revisions.items] == [3, 2, 1]
        with pytest.raises(InvalidInput, match="no revision 9"):
            await rpc.call(
                dep.ROLLBACK_DEPLOYMENT, dep.Rollback(scope=SCOPE, name="iris", revision=9)
            )

        # Revisions are immutable, in the database itself.
        with pytest.raises(Exception, match="immutable"):
            await deployer.runtime.pool.execute("UPDATE revisions SET spec = '{}' WHERE number = 1")

        terminated = await rpc.call(
            dep.TERMINATE_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name="iris")
        )
        assert terminated.status is DeploymentStatus.TERMINATING
        # `start` is an update of a terminated deployment: it runs again.
        started = await rpc.call(
            dep.UPDATE_DEPLOYMENT,
            dep.UpdateDeployment(scope=SCOPE, name="iris", bento=IRIS, config=config()),
        )
        assert started.status is DeploymentStatus.NON_DEPLOYED

        deleted = await rpc.call(dep.DELETE_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name="iris"))
        assert deleted.name == "iris"
        with pytest.raises(NotFound):
            await rpc.call(dep.GET_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name="iris"))
        assert await counts(deployer) == (0, 0, 8)

        async def all_published() -> bool:
            return len(await stored_events(nats_url)) == 8

        await wait_until(all_published)
        events = await stored_events(nats_url)
        assert [e["type"] for e in events] == [
            "deployment.requested",
            "deployment.updated",  # revision 2
            "deployment.updated",  # the rollback, revision 3
            "deployment.status_changed",  # -> terminating
            "deployment.terminated",
            "deployment.status_changed",  # -> non-deployed: started again
            "deployment.updated",  # revision 4
            "deployment.deleted",
        ]
        assert events[3]["data"]["status"] == "terminating"
        assert events[3]["data"]["previous_status"] == "non-deployed"
        requested = events[0]["data"]
        assert requested["deployment"] == {
            "organization": "default", "cluster": "default", "namespace": "ns-default",
            "name": "iris",
        }  # fmt: skip
        assert requested["revision"] == 1
        assert requested["spec"] == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": config(3, 2)}, "min_replicas \\(3\\) is above max_replicas \\(2\\)"),
        ({"config": config(instance_type="huge")}, "unknown instance type 'huge'"),
        ({"cluster": "elsewhere"}, "unknown cluster 'elsewhere'"),
        (
            {"config": dep.DeploymentConfig(secrets=["missing"])},
            "unknown secret\\(s\\): missing",
        ),
        (
            {"config": dep.DeploymentConfig(services={"Nope": dep.ServiceConfig()})},
            "has no service 'Nope'",
        ),
        ({"config": config(0, 0)}, "at least 1"),
    ],
)
async def test_bad_input_is_refused_and_leaves_nothing(
    nats_url: str, pg_dsn: str, change: dict[str, Any], message: str
) -> None:
    async with running(deployer_settings(nats_url, pg_dsn)) as deployer:
        fields: dict[str, Any] = {"scope": SCOPE, "name": "iris", "bento": IRIS, **change}
        with pytest.raises(InvalidInput, match=message):
            await deployer.runtime.rpc.call(dep.CREATE_DEPLOYMENT, dep.CreateDeployment(**fields))
        assert await counts(deployer) == (0, 0, 0)


def test_invalid_names_are_refused_by_the_contract() -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        dep.EnvVar(name="1BAD", value="x")
    with pytest.raises(ValueError, match="not a valid deployment name"):
        dep.CreateDeployment(scope=SCOPE, name="Bad_Name", bento=IRIS)
    with pytest.raises(ValueError, match="not a valid deployment name"):
        dep.CreateDeployment(scope=SCOPE, name="x" * 41, bento=IRIS)


async def test_name_taken_is_a_conflict_and_a_name_is_made_when_none_is_given(
    nats_url: str, pg_dsn: str
) -> None:
    async with running(deployer_settings(nats_url, pg_dsn)) as deployer:
        rpc = deployer.runtime.rpc
        request = dep.CreateDeployment(scope=SCOPE, name="iris", bento=IRIS)
        await rpc.call(dep.CREATE_DEPLOYMENT, request)
        before = await counts(deployer)
        with pytest.raises(Conflict, match="already exists"):
            await rpc.call(dep.CREATE_DEPLOYMENT, request)
        assert await counts(deployer) == before
        made = await rpc.call(dep.CREATE_DEPLOYMENT, dep.CreateDeployment(scope=SCOPE, bento=PAIR))
        assert made.name.startswith("pair-")
        assert len(made.name) == len("pair-") + 6
        # Every service of the bento gets an entry, the entry service named by the client.
        assert sorted(made.latest_revision.config.services) == ["Front", "Model"]
        assert [s["name"] for s in made.latest_revision.spec["services"]] == ["Front", "Model"]


async def test_secrets_are_checked_and_never_leave_with_their_values(
    nats_url: str, pg_dsn: str
) -> None:
    async with running(deployer_settings(nats_url, pg_dsn)) as deployer:
        rpc = deployer.runtime.rpc
        secret = await rpc.call(
            dep.CREATE_SECRET,
            dep.CreateSecret(
                scope=SCOPE, name="hf", items=[dep.SecretItem(key="HF_TOKEN", value="s3cr3t")]
            ),
        )
        assert secret.keys == ["HF_TOKEN"]
        assert "s3cr3t" not in secret.model_dump_json()
        got = await rpc.call(dep.GET_SECRET, dep.SecretRef(scope=SCOPE, name="hf"))
        assert got.uid == secret.uid
        with pytest.raises(NotFound):
            await rpc.call(dep.GET_SECRET, dep.SecretRef(scope=SCOPE, name="other"))
        created = await rpc.call(
            dep.CREATE_DEPLOYMENT,
            dep.CreateDeployment(
                scope=SCOPE, name="iris", bento=IRIS, config=dep.DeploymentConfig(secrets=["hf"])
            ),
        )
        assert created.latest_revision.spec["envFrom"] == [
            {"secretRef": {"name": "ekiben-secret-hf"}}
        ]
        with pytest.raises(Conflict, match="used by deployment"):
            await rpc.call(dep.DELETE_SECRET, dep.SecretRef(scope=SCOPE, name="hf"))
        listed = await rpc.call(dep.LIST_SECRETS, dep.ListSecrets(scope=SCOPE))
        assert [s.name for s in listed.items] == ["hf"]


async def test_clusters_are_what_deployers_announce(nats_url: str, pg_dsn: str) -> None:
    east = deployer_settings(nats_url, pg_dsn, "east")
    west = deployer_settings(nats_url, pg_dsn, "west", instance_types=[
        dep.InstanceType(name="gpu.a100", group="gpu", gpu=1, cpu="8", memory="64Gi"),
    ])  # fmt: skip
    async with running(east) as a, running(west):
        rpc = a.runtime.rpc
        clusters = (await rpc.call(dep.LIST_CLUSTERS, dep.ListClusters(scope=SCOPE))).items
        assert [c.name for c in clusters] == ["east", "west"]
        first = {c.name: c.last_seen_at for c in clusters}

        async def beating() -> bool:
            now = (await rpc.call(dep.LIST_CLUSTERS, dep.ListClusters(scope=SCOPE))).items
            return all(c.last_seen_at > first[c.name] for c in now)

        await wait_until(beating)
        now = datetime.now(UTC)
        assert all(c.alive(now) for c in clusters)
        # Two clusters: a create must say which.
        with pytest.raises(InvalidInput, match="several clusters"):
            await rpc.call(dep.CREATE_DEPLOYMENT, dep.CreateDeployment(scope=SCOPE, bento=IRIS))
        types = await rpc.call(dep.LIST_INSTANCE_TYPES, dep.ClusterRef(scope=SCOPE, cluster="west"))
        assert [t.name for t in types.items] == ["gpu.a100"]
        # An instance type of another cluster is unknown here.
        with pytest.raises(InvalidInput, match=r"unknown instance type 'gpu\.a100'"):
            await rpc.call(
                dep.CREATE_DEPLOYMENT,
                dep.CreateDeployment(
                    scope=SCOPE, cluster="east", bento=IRIS,
                    config=config(instance_type="gpu.a100"),
                ),
            )  # fmt: skip
        on_west = await rpc.call(
            dep.CREATE_DEPLOYMENT,
            dep.CreateDeployment(
                scope=SCOPE, cluster="west", name="big", bento=IRIS,
                config=config(instance_type="gpu.a100"),
            ),
        )  # fmt: skip
        assert on_west.namespace == "ns-west"
        assert on_west.latest_revision.spec["services"][0]["resources"]["limits"]["gpu"] == 1
        # No cluster credential is stored: the database has no column that could hold one.
        columns = await a.runtime.pool.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'deployer'"
        )
        names = {f"{c['table_name']}.{c['column_name']}" for c in columns}
        assert "revisions.kube_generation" in names
        assert not {n for n in names if "kube" in n or "token" in n or "credential" in n} - {
            "revisions.kube_generation"
        }
