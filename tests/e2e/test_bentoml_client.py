"""The real `bentoml` client against a running Ekiben: login, push, pull, latest, errors.

Runs once with presigned transfers (the client uploads by presigned multipart straight to
S3) and once with proxied transfers (streamed through the gateway). The bento carries a
model of 200 MiB, so a presigned push of it takes the multipart path with three parts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import pytest

from tests.e2e.conftest import Client, RunningStack

# A 200 MiB push and pull, twice, plus bento builds: minutes on a busy two-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL_BYTES = 200 * 1024 * 1024 + 12345

SERVICE = """
import bentoml


@bentoml.service(resources={"cpu": "1"})
class Adder:
    weights = bentoml.models.BentoModel("e2e-weights:latest")

    @bentoml.api
    def add(self, a: int, b: int) -> int:
        return a + b  # VARIANT
"""

BENTOFILE = """
service: "service:Adder"
include: ["service.py"]
python:
  lock_packages: false
"""

CREATE_MODEL = f"""
import os, bentoml
with bentoml.models.create("e2e-weights", labels={{"stage": "test"}}) as model:
    with open(os.path.join(model.path, "weights.bin"), "wb") as out:
        chunk = os.urandom(1024 * 1024)
        for i in range({MODEL_BYTES} // len(chunk)):
            out.write(chunk[:-1] + bytes([i % 256]))
        out.write(os.urandom({MODEL_BYTES} % len(chunk)))
print(model.tag)
"""


def tree_hashes(root: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
            hashes[str(path.relative_to(root))] = digest.hexdigest()
    return hashes


def build_bento(client: Client, home: Path, project: Path, variant: str) -> str:
    project.mkdir(parents=True, exist_ok=True)
    (project / "service.py").write_text(SERVICE.replace("VARIANT", variant))
    (project / "bentofile.yaml").write_text(BENTOFILE)
    client.run(home, "build", "--output", "tag", cwd=project)
    listed = json.loads(client.run(home, "list", "-o", "json").stdout)
    newest = max(listed, key=lambda b: b["creation_time"])
    return str(newest["tag"])


def login(client: Client, home: Path, stack: RunningStack, token: str | None = None) -> Any:
    return client.run(
        home, "cloud", "login", "--endpoint", stack.gateway,
        "--api-token", token or stack.admin_token, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["presigned", "proxy"])
async def test_push_pull_round_trip_with_the_real_client(
    strategy: str, bentoml_client: Client, stack_factory: Any, tmp_path: Path
) -> None:
    stack: RunningStack = stack_factory(EKIBEN_GATEWAY_TRANSFER_STRATEGY=strategy)
    client = bentoml_client
    home, fresh = tmp_path / "home", tmp_path / "fresh"

    model_tag = client.python_run(home, CREATE_MODEL, cwd=tmp_path).strip().splitlines()[-1]
    tag = build_bento(client, home, tmp_path / "project", "v1")
    name, version = tag.split(":")

    # A wrong token is refused at login with the client's own clear message.
    refused = login(client, home, stack, token="ekb_not-a-real-token")
    assert refused.returncode == 1
    assert "401" in refused.stdout + refused.stderr

    logged_in = login(client, home, stack)
    assert logged_in.returncode == 0, logged_in.stderr
    assert "Logged in as" in logged_in.stdout + logged_in.stderr

    client.run(home, "push", tag)
    again = client.run(home, "push", tag)
    assert "already exists" in again.stdout + again.stderr  # a second push is a no-op

    # Pull into an empty BENTOML_HOME: every file arrives byte for byte.
    assert login(client, fresh, stack).returncode == 0
    client.run(fresh, "pull", tag, "--with-models")
    model_name, model_version = model_tag.split(":")
    for sub in (f"bentos/{name}/{version}", f"models/{model_name}/{model_version}"):
        pushed, pulled = tree_hashes(home / sub), tree_hashes(fresh / sub)
        assert pushed, sub
        assert pulled == pushed, sub

    headers = {"X-YATAI-API-TOKEN": stack.admin_token}
    async with httpx.AsyncClient(base_url=stack.gateway, headers=headers) as api:
        model = (
            await api.get(f"/api/v1/model_repositories/{model_name}/models/{model_version}")
        ).json()
        assert model["upload_status"] == "success"
        assert model["transmission_strategy"] == (
            "presigned_url" if strategy == "presigned" else "proxy"
        )

        # A new version becomes the latest.
        newer = build_bento(client, home, tmp_path / "project", "v2")
        assert newer != tag
        client.run(home, "push", newer)
        repository = (await api.get(f"/api/v1/bento_repositories/{name}")).json()
        assert repository["latest_bento"]["version"] == newer.split(":")[1]
        listing = (await api.get(f"/api/v1/bento_repositories/{name}/bentos?count=1")).json()
        assert [item["version"] for item in listing["items"]] == [newer.split(":")[1]]

    # The 200 MiB model: presigned pushes go multipart (an S3 multipart ETag ends in -parts).
    async with aioboto3.Session().client(
        "s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
        aws_access_key_id="ekiben", aws_secret_access_key="ekiben-secret",
    ) as s3:  # fmt: skip
        head = await s3.head_object(
            Bucket="ekiben", Key=f"models/default/{model_name}/{model_version}.tar"
        )
    assert head["ContentLength"] > MODEL_BYTES
    if strategy == "presigned":
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
