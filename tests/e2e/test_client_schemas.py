"""Every answer the bentoml client reads, structured through the client's own schema classes.

The gateway and registry run in-process on real NATS, PostgreSQL and SeaweedFS; each route
the 1.4.40 client calls is exercised and its answer decoded by the client's converter
(`tests/fixtures/client_schemas.py`). A key the client requires and the answer lacks fails
here, not in a user's terminal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.devstack.servers import S3Server
from tests.e2e.conftest import Client
from tests.fixtures.client_schemas import Answer, structure_with_client
from tests.fixtures.manifests import bento_manifest, model_manifest
from tests.fixtures.pushing import Recorder, push
from tests.fixtures.stack import running_stack

pytestmark = pytest.mark.timeout(300)


def deployment_body(bento: str, name: str | None, **service: object) -> dict[str, object]:
    """CreateDeploymentSchema as the 1.4.40 client sends it: every key, nulls included."""
    return {
        "access_authorization": False,
        "envs": [{"name": "MODE", "value": "prod"}],
        "labels": [{"key": "team", "value": "nlp"}],
        "secrets": ["hf"],
        "services": {
            "Iris": {
                "instance_type": None,
                "scaling": {"min_replicas": 1, "max_replicas": 2, "policy": None},
                "envs": None,
                "deployment_strategy": None,
                "extras": None,
                "cold_start_timeout": None,
                "config_overrides": {},
                **service,
            }
        },
        "canary": None,
        "bento": bento,
        "name": name,
        "dev": False,
    }


async def deployments(rec: Recorder) -> None:
    """Every call of `bentoml deployment ...` and the secret and cluster calls around it."""
    await rec.read("ClusterListSchema", "GET", "/api/v1/clusters")
    await rec.read(
        "ResourceInstanceSchema", "GET", "/api/v1/instance_types", params={"cluster": ""},
        many=True,
    )  # fmt: skip
    secret = {"type": "env", "items": [{"key": "HF_TOKEN", "value": "s3cr3t"}]}
    created_secret = await rec.read(
        "SecretSchema", "POST", "/api/v1/org_secrets",
        json={"name": "hf", "description": "", "content": secret},
    )  # fmt: skip
    assert "s3cr3t" not in str(created_secret)
    await rec.read("SecretSchema", "GET", "/api/v1/org_secrets/hf")
    await rec.read(
        "SecretListSchema", "GET", "/api/v1/org_secrets",
        params={"count": 10, "q": "", "search": "", "start": 0, "all": "true"},
    )  # fmt: skip
    created = await rec.read(
        "DeploymentFullSchema", "POST", "/api/v2/deployments", params={"cluster": ""},
        json=deployment_body("iris:v1", "iris", instance_type="cpu.small"), module="v2",
    )  # fmt: skip
    assert created["latest_revision"]["targets"][0]["bento"]["repository"]["name"] == "iris"
    cluster = created["cluster"]["name"]
    full = await rec.read("ClusterFullSchema", "GET", f"/api/v1/clusters/{cluster}")
    assert full["kube_config"] == ""
    assert full["config"]["default_deployment_kube_namespace"] == created["kube_namespace"]
    assert "cpu.small" in [t["name"] for t in full["resource_instances"]]
    unknown = await rec.stack.call("GET", "/api/v1/clusters/nowhere")
    assert unknown.status_code == 404
    assert "no deployer has announced it" in unknown.text
    await rec.read(
        "DeploymentFullSchema", "GET", "/api/v2/deployments/iris", params={"cluster": cluster},
        module="v2",
    )  # fmt: skip
    listing = {"cluster": "", "all": "true", "count": "", "q": "", "search": "", "start": ""}
    first = await rec.read(
        "DeploymentListSchema", "GET", "/api/v2/deployments", params=listing, module="v2"
    )
    assert first["total"] == 1
    labelled = await rec.read(
        "DeploymentListSchema", "GET", "/api/v2/deployments",
        params=listing | {"count": first["total"], "q": "label:team=nlp"}, module="v2",
    )  # fmt: skip
    assert [d["name"] for d in labelled["items"]] == ["iris"]
    update = deployment_body("iris:v1", None)
    update.pop("name")
    update.pop("dev")
    updated = await rec.read(
        "DeploymentFullSchema", "PUT", "/api/v2/deployments/iris", params={"cluster": cluster},
        json=update, module="v2",
    )  # fmt: skip
    assert updated["latest_revision"]["number"] == 2
    await rec.read(
        "DeploymentFullSchema", "PUT", "/api/v2/deployments/iris/void_update",
        params={"cluster": cluster}, module="v2",
    )  # fmt: skip
    await rec.read(
        "DeploymentFullSchema", "POST", "/api/ekiben/v1/deployments/iris/rollback",
        json={"revision": 1}, module="v2",
    )  # fmt: skip
    terminated = await rec.read(
        "DeploymentFullSchema", "POST", "/api/v2/deployments/iris/terminate",
        params={"cluster": ""}, module="v2",
    )  # fmt: skip
    assert terminated["status"] == "terminating"
    await rec.read(
        "DeploymentFullSchema", "DELETE", "/api/v2/deployments/iris", params={"cluster": ""},
        module="v2",
    )  # fmt: skip
    gone = await rec.stack.call("GET", "/api/v2/deployments/iris", params={"cluster": ""})
    assert gone.status_code == 404


async def test_every_answer_the_client_reads_decodes_with_its_own_schemas(
    bentoml_client: Client, nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> None:
    async with running_stack(
        nats_url, pg_dsn, s3_server, tmp_path / "token", deployer=True
    ) as stack:
        rec = Recorder(stack)
        await rec.read("UserSchema", "GET", "/api/v1/auth/current")
        await rec.read("OrganizationSchema", "GET", "/api/v1/current_org")
        await push(rec, "model", "clf", "m1", model_manifest())
        await push(rec, "bento", "iris", "v1", bento_manifest(models=["clf:m1"]))
        # Latest by listing (bento.get(name) and models pull NAME): items[0].
        models = await stack.call(
            "GET", "/api/v1/model_repositories/clf/models", params={"start": 0, "count": 10}
        )
        assert models.status_code == 200
        rec.answers.append(Answer("model latest", "ModelSchema", models.json()["items"][0]))
        # The Python API's listings (bento.list(), model.list()), with no parameters. (The
        # client also defines get_bento_repositories_list, decoding a list of repositories
        # as bento versions; no command or SDK call of 1.4.40 uses it, and a repository
        # list answers repositories, as Yatai's does.)
        await rec.read("BentoWithRepositoryListSchema", "GET", "/api/v1/bentos")
        await rec.read("ModelWithRepositoryListSchema", "GET", "/api/v1/models")
        # API tokens.
        issued = await rec.read(
            "ApiTokenSchema", "POST", "/api/v1/api_tokens",
            json={"name": "ci", "description": None, "scopes": None, "expired_at": None},
        )  # fmt: skip
        assert issued["token"].startswith("ekb_")
        await rec.read("ApiTokenListSchema", "GET", "/api/v1/api_tokens",
                       params={"start": 0, "count": 100})  # fmt: skip
        await rec.read("ApiTokenSchema", "GET", f"/api/v1/api_tokens/{issued['uid']}")
        await deployments(rec)

    schemas = {answer.schema for answer in rec.answers}
    assert {
        "BentoWithRepositoryListSchema",
        "ModelWithRepositoryListSchema",
        "ModelRepositorySchema",
        "BentoListSchema",
        "ApiTokenListSchema",
        "DeploymentFullSchema",
        "DeploymentListSchema",
        "ClusterListSchema",
        "ResourceInstanceSchema",
        "SecretSchema",
        "SecretListSchema",
    } <= schemas
    failures = structure_with_client(bentoml_client.python, rec.answers)
    assert not failures, "\n".join(failures)
