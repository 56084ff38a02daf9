"""Every answer the bentoml client reads, structured through the client's own schema classes.

The gateway and registry run in-process on real NATS, PostgreSQL and SeaweedFS; each route
the 1.4.40 client calls is exercised and its answer decoded by the client's converter
(`tests/fixtures/client_schemas.py`). A key the client requires and the answer lacks fails
here, not in a user's terminal.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from shared.devstack.servers import S3Server
from tests.e2e.conftest import Client
from tests.fixtures.client_schemas import Answer, structure_with_client
from tests.fixtures.manifests import bento_manifest, model_manifest
from tests.fixtures.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(300)


def archive(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = f"{name}\n".encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Recorder:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.answers: list[Answer] = []

    async def read(
        self, schema: str, method: str, path: str, *, many: bool = False, **kwargs: Any
    ) -> Any:
        response = await self.stack.call(method, path, **kwargs)
        assert response.status_code == 200, f"{method} {path}: {response.text}"
        body = response.json()
        self.answers.append(Answer(f"{method} {path}", schema, body, many=many))
        return body


async def push(rec: Recorder, kind: str, name: str, version: str, manifest: dict[str, Any]) -> None:
    """The client's push, step by step, recording each answer as the client decodes it."""
    Kind = kind.capitalize()  # noqa: N806
    base = f"/api/v1/{kind}_repositories"
    item = f"{base}/{name}/{kind}s/{version}"
    await rec.read(f"{Kind}RepositorySchema", "POST", base, json={"name": name, "description": ""})
    await rec.read(f"{Kind}RepositorySchema", "GET", f"{base}/{name}")
    created = await rec.read(
        f"{Kind}Schema", "POST", f"{base}/{name}/{kind}s",
        json={"description": "", "version": version, "manifest": manifest,
              "build_at": "2026-01-01 12:00:00.000000", "labels": [{"key": "k", "value": "v"}]},
    )  # fmt: skip
    assert created["transmission_strategy"] == "presigned_url"
    await rec.read(f"{Kind}Schema", "PATCH", f"{item}/presign_upload_url")
    await rec.read(f"{Kind}Schema", "PATCH", f"{item}/start_upload")
    started = await rec.read(f"{Kind}Schema", "PATCH", f"{item}/start_multipart_upload")
    part = await rec.read(
        f"{Kind}Schema", "PATCH", f"{item}/presign_multipart_upload_url",
        json={"upload_id": started["upload_id"], "part_number": 1},
    )  # fmt: skip
    sent = await rec.stack.http.put(part["presigned_upload_url"], content=archive(name))
    assert sent.status_code == 200
    await rec.read(
        f"{Kind}Schema", "PATCH", f"{item}/complete_multipart_upload",
        json={"upload_id": started["upload_id"],
              "parts": [{"part_number": 1, "etag": sent.headers["etag"]}]},
    )  # fmt: skip
    await rec.read(
        f"{Kind}Schema", "PATCH", f"{item}/finish_upload", json={"status": "success", "reason": ""}
    )
    await rec.read(f"{Kind}Schema", "GET", item)
    await rec.read(f"{Kind}WithRepositorySchema", "GET", item)
    await rec.read(f"{Kind}Schema", "PATCH", f"{item}/presign_download_url")
    await rec.read(
        f"{Kind}Schema", "PATCH", item, json={"labels": [{"key": "stage", "value": "prod"}]}
    )
    if kind == "bento":  # bento.get(name): the newest of a repository's versions
        await rec.read("BentoListSchema", "GET", f"{base}/{name}/bentos", params={"count": 1})


async def test_every_answer_the_client_reads_decodes_with_its_own_schemas(
    bentoml_client: Client, nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> None:
    async with running_stack(nats_url, pg_dsn, s3_server, tmp_path / "token") as stack:
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

    schemas = {answer.schema for answer in rec.answers}
    assert {
        "BentoWithRepositoryListSchema",
        "ModelWithRepositoryListSchema",
        "ModelRepositorySchema",
        "BentoListSchema",
        "ApiTokenListSchema",
    } <= schemas
    failures = structure_with_client(bentoml_client.python, rec.answers)
    assert not failures, "\n".join(failures)
