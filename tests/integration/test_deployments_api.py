"""The v2 deployment API through the gateway: bad input is a clear 4xx and leaves nothing.

The gateway, the registry and a deployer (without its controller) run in-process on real
NATS, PostgreSQL and SeaweedFS. A refused create must leave no deployment, revision,
outbox event or audit record behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.devstack.servers import S3Server
from tests.e2e.test_client_schemas import deployment_body
from tests.fixtures.manifests import bento_manifest
from tests.fixtures.pushing import Recorder, push
from tests.fixtures.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(180)


async def state(stack: Stack) -> tuple[int, int, int, int]:
    assert stack.deployer is not None
    pool = stack.deployer.runtime.pool
    return (
        await pool.fetchval("SELECT count(*) FROM deployments"),
        await pool.fetchval("SELECT count(*) FROM revisions"),
        await pool.fetchval("SELECT count(*) FROM outbox"),
        await stack.gateway.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'deployment.%'"
        ),
    )


def with_service(**changes: Any) -> dict[str, Any]:
    body = deployment_body("iris:v1", "iris")
    body["secrets"] = None
    body["services"]["Iris"].update(changes)  # type: ignore[index]
    return body


BAD: list[tuple[str, dict[str, Any], dict[str, str], int, str]] = [
    ("unknown bento", deployment_body("ghost:v9", "iris") | {"secrets": None}, {}, 422,
     "unknown bento ghost:v9"),
    ("min above max",
     with_service(scaling={"min_replicas": 3, "max_replicas": 1, "policy": None}), {}, 422,
     "min_replicas (3) is above max_replicas (1)"),
    ("unknown instance type", with_service(instance_type="gpu.h200"), {}, 422,
     "unknown instance type 'gpu.h200'"),
    ("unknown cluster", with_service(), {"cluster": "mars"}, 422, "unknown cluster 'mars'"),
    ("invalid env name", with_service() | {"envs": [{"name": "1-BAD", "value": "x"}]}, {}, 422,
     "not a valid environment variable name"),
    ("missing secret", with_service() | {"secrets": ["nope"]}, {}, 422,
     "unknown secret(s): nope"),
    ("invalid name", with_service() | {"name": "Not_A_Name"}, {}, 422,
     "not a valid deployment name"),
]  # fmt: skip


async def test_bad_input_is_a_clear_4xx_with_nothing_created(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> None:
    async with running_stack(
        nats_url, pg_dsn, s3_server, tmp_path / "token", deployer=True
    ) as stack:
        await push(Recorder(stack), "bento", "iris", "v1", bento_manifest())
        before = await state(stack)
        for what, body, params, status, message in BAD:
            response = await stack.call(
                "POST", "/api/v2/deployments", params={"cluster": ""} | params, json=body
            )
            assert response.status_code == status, (what, response.text)
            error = response.json()["error"]
            assert message in error["message"], (what, error)
            assert await state(stack) == before, what

        ok = await stack.call(
            "POST", "/api/v2/deployments", params={"cluster": ""}, json=with_service()
        )
        assert ok.status_code == 200, ok.text
        after = await state(stack)
        assert after[0] == before[0] + 1
        assert after[3] == before[3] + 1  # audited
        taken = await stack.call(
            "POST", "/api/v2/deployments", params={"cluster": ""}, json=with_service()
        )
        assert taken.status_code == 409
        assert "already exists" in taken.json()["error"]["message"]
        assert await state(stack) == after

        # Unknown deployments are 404s (the client's `apply` turns that into a create).
        for method, path in [
            ("GET", "/api/v2/deployments/ghost"),
            ("POST", "/api/v2/deployments/ghost/terminate"),
            ("DELETE", "/api/v2/deployments/ghost"),
        ]:
            missing = await stack.call(method, path, params={"cluster": ""})
            assert missing.status_code == 404, (method, path)
        # A guest reads but cannot deploy; no token at all is a 401, never a 404.
        anonymous = await stack.client.get("/api/v2/deployments/iris")
        assert anonymous.status_code == 401
        rollback = await stack.call(
            "POST", "/api/ekiben/v1/deployments/iris/rollback", json={"revision": 7}
        )
        assert rollback.status_code == 422
        assert "no revision 7" in rollback.json()["error"]["message"]

        revisions = await stack.call("GET", "/api/ekiben/v1/deployments/iris/revisions")
        assert revisions.status_code == 200
        assert [r["number"] for r in revisions.json()["items"]] == [1]
        audit = await stack.call("GET", "/api/ekiben/v1/audit")
        actions = [r["action"] for r in audit.json()["items"]]
        assert "deployment.create" in actions
