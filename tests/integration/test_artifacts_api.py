"""The Yatai-compatible bento and model API, through the gateway, with the registry running.

Both runtimes run in this process against the session's NATS, one fresh PostgreSQL
database (a schema each) and SeaweedFS; the gateway app is driven over
`httpx.ASGITransport` the way the `bentoml` client drives it (see
shared/docs/bentoml-client-protocol.md), and presigned URLs are used with a real HTTP
client. Every success is a 200 with the keys the client decodes; every refusal is a clear
4xx JSON error that leaves the registry, the audit log and the object store as they were.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.identity import models
from services.gateway.identity import service as identity
from shared.contracts.registry import MAX_LABELS, MAX_MANIFEST_BYTES
from shared.devstack.servers import S3Server
from tests.fixtures.manifests import bento_manifest, model_manifest
from tests.fixtures.stack import Stack, running_stack, wait_until

MiB = 1024 * 1024
ORG = "default"
ADMIN = "admin"

VERSION_KEYS = frozenset(
    {
        "uid",
        "created_at",
        "updated_at",
        "deleted_at",
        "name",
        "resource_type",
        "labels",
        "description",
        "version",
        "image_build_status",
        "upload_status",
        "upload_finished_reason",
        "presigned_upload_url",
        "presigned_download_url",
    }
)
REPOSITORY_KEYS = frozenset(
    {"uid", "created_at", "updated_at", "deleted_at", "name", "resource_type", "labels"}
)
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "invalid",
}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def stack(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Presigned transfers (the gateway's default)."""
    async with running_stack(nats_url, pg_dsn, s3_server, tmp_path / "admin-token") as running:
        yield running


PROXY_LIMIT = 4 * MiB


@pytest.fixture
async def proxy_stack(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Proxied transfers through `PUT .../upload` and `GET .../download`."""
    async with running_stack(
        nats_url,
        pg_dsn,
        s3_server,
        tmp_path / "admin-token",
        transfer_strategy="proxy",
        max_upload_bytes=PROXY_LIMIT,
    ) as running:
        yield running


# --- checks --------------------------------------------------------------------------------


def aware(value: Any) -> datetime:
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def ok(response: httpx.Response) -> dict[str, Any]:
    request = response.request
    assert response.status_code == 200, (
        f"{request.method} {request.url.path}: {response.status_code} {response.text[:500]}"
    )
    body: dict[str, Any] = response.json()
    return body


def refused(response: httpx.Response, status: int, *fragments: str) -> str:
    """A clear JSON error: the status, its code, and a message saying why."""
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {request.url.path}: {response.status_code} {response.text[:500]}"
    )
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == ERROR_CODES[status], error
    message: str = error["message"]
    assert message
    for fragment in fragments:
        assert fragment in message, message
    return message


def check_labels(labels: Any) -> dict[str, str]:
    assert isinstance(labels, list), labels
    for label in labels:
        assert set(label) == {"key", "value"}, label
        assert isinstance(label["key"], str)
        assert isinstance(label["value"], str)
    return {label["key"]: label["value"] for label in labels}


def check_version(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The keys and types the client's BentoSchema / ModelSchema decoding needs."""
    assert body.keys() >= VERSION_KEYS, sorted(VERSION_KEYS - body.keys())
    assert isinstance(body["uid"], str)
    assert body["uid"]
    aware(body["created_at"])
    if body["updated_at"] is not None:
        aware(body["updated_at"])
    assert body["deleted_at"] is None
    assert body["name"] == body["version"]
    assert isinstance(body["version"], str)
    assert body["resource_type"] == kind
    check_labels(body["labels"])
    for key in (
        "description",
        "image_build_status",
        "upload_finished_reason",
        "presigned_upload_url",
        "presigned_download_url",
    ):
        assert isinstance(body[key], str), (key, body[key])  # "" for none, never null
    assert body["upload_status"] in {"pending", "uploading", "success", "failed"}
    aware(body["build_at"])
    if kind == "model":
        manifest = body["manifest"]
        assert isinstance(manifest, dict), manifest
        for key in ("module", "api_version", "bentoml_version"):
            assert isinstance(manifest[key], str), (key, manifest)
        assert isinstance(manifest["size_bytes"], int)
    else:
        assert body["manifest"] is None or isinstance(body["manifest"], dict)
    return body


def check_repository(body: dict[str, Any], kind: str) -> dict[str, Any]:
    assert REPOSITORY_KEYS | {"description", f"latest_{kind}"} <= body.keys(), body.keys()
    assert isinstance(body["uid"], str)
    assert body["uid"]
    aware(body["created_at"])
    assert body["deleted_at"] is None
    assert body["resource_type"] == f"{kind}_repository"
    assert isinstance(body["description"], str)
    check_labels(body["labels"])
    latest = body[f"latest_{kind}"]
    if latest is not None:
        check_version(latest, kind)
    return body


def check_page(body: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("start", "count", "total"):
        assert isinstance(body[key], int), (key, body)
    items: list[dict[str, Any]] = body["items"]
    assert isinstance(items, list)
    assert body["count"] == len(items)
    return items


def tags(page: dict[str, Any], kind: str = "bento") -> list[str]:
    """The listed versions as `repository:version`, in the order listed."""
    found = []
    for item in check_page(page):
        check_version(item, kind)
        found.append(f"{item['repository']['name']}:{item['version']}")
    return found


# --- what a client sends -------------------------------------------------------------------


def repositories(kind: str, name: str | None = None) -> str:
    base = f"/api/v1/{kind}_repositories"
    return base if name is None else f"{base}/{name}"


def item(kind: str, name: str, version: str, action: str | None = None) -> str:
    path = f"{repositories(kind, name)}/{kind}s/{version}"
    return path if action is None else f"{path}/{action}"


def version_body(
    kind: str,
    name: str,
    version: str,
    *,
    size: int = 100,
    labels: dict[str, str] | None = None,
    build_at: datetime | None = None,
    models: list[str] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """CreateBentoSchema / CreateModelSchema as bentoml 1.4.40 sends it (naive UTC build_at)."""
    manifest = bento_manifest(name, size=size, models=models) if kind == "bento" else None
    build = build_at or datetime.now(UTC)
    return {
        "description": description,
        "version": version,
        "manifest": manifest if manifest is not None else model_manifest(size),
        "build_at": build.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "labels": [{"key": k, "value": v} for k, v in (labels or {}).items()],
    }


async def ensure_repository(
    stack: Stack,
    kind: str,
    name: str,
    token: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What the client does: GET the repository, POST it on 404."""
    found = await stack.call("GET", repositories(kind, name), token)
    if found.status_code == 404:
        body = {
            "name": name,
            "description": "",
            "labels": [{"key": k, "value": v} for k, v in (labels or {}).items()],
        }
        created = ok(await stack.call("POST", repositories(kind), token, json=body))
        assert created["name"] == name  # the client puts the returned name in every URL
        return check_repository(created, kind)
    return check_repository(ok(found), kind)


async def create_version(
    stack: Stack, kind: str, name: str, version: str, token: str | None = None, **fields: Any
) -> dict[str, Any]:
    await ensure_repository(stack, kind, name, token)
    body = version_body(kind, name, version, **fields)
    response = await stack.call("POST", f"{repositories(kind, name)}/{kind}s", token, json=body)
    created = check_version(ok(response), kind)
    assert created["version"] == version
    assert created["upload_status"] == "pending"
    return created


async def push_presigned(
    stack: Stack, kind: str, name: str, version: str, data: bytes, token: str | None = None
) -> dict[str, Any]:
    """A single presigned PUT: presign_upload_url, start_upload, PUT, finish_upload."""
    signed = check_version(
        ok(await stack.call("PATCH", item(kind, name, version, "presign_upload_url"), token)), kind
    )
    ok(await stack.call("PATCH", item(kind, name, version, "start_upload"), token))
    put = await stack.http.put(signed["presigned_upload_url"], content=data)
    assert put.status_code == 200, put.text
    finish = {"status": "success", "reason": ""}
    path = item(kind, name, version, "finish_upload")
    return check_version(ok(await stack.call("PATCH", path, token, json=finish)), kind)


async def new_member_token(stack: Stack, name: str, role: str) -> str:
    user = await stack.call("POST", "/api/v1/users", json={"name": name, "role": role})
    assert user.status_code == 200, user.text
    issued = await stack.call(
        "POST", f"/api/ekiben/v1/users/{name}/api_tokens", json={"name": f"{name}-laptop"}
    )
    secret: str = ok(issued)["token"]
    return secret


def artifact(event: dict[str, Any]) -> str:
    ref = event["data"]["artifact"]
    assert ref["organization"] == ORG
    return f"{ref['name']}:{ref['version']}"


async def audit_records(stack: Stack) -> list[dict[str, Any]]:
    page = ok(await stack.call("GET", "/api/ekiben/v1/audit", params={"count": "1000"}))
    records: list[dict[str, Any]] = page["items"]
    return records


# --- pushes and pulls ----------------------------------------------------------------------


async def test_presigned_single_put_push_then_presigned_pull(stack: Stack) -> None:
    # Lookups before anything exists are 404s, which the client takes as "create it".
    refused(await stack.call("GET", repositories("bento", "iris")), 404, "bento repository iris")
    repository = await ensure_repository(stack, "bento", "iris")
    assert repository["latest_bento"] is None
    assert repository["labels"] == []
    assert repository["updated_at"] is None
    refused(await stack.call("GET", item("bento", "iris", "v1")), 404, "bento iris:v1 not found")

    build_at = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    created = await create_version(
        stack, "bento", "iris", "v1", labels={"stage": "dev"}, build_at=build_at, size=4321
    )
    assert created["name"] == "v1"
    assert created["labels"] == [{"key": "stage", "value": "dev"}]
    assert created["presigned_upload_url"] == ""
    assert created["presigned_download_url"] == ""
    assert created["upload_finished_reason"] == ""
    assert created["transmission_strategy"] == "presigned_url"
    assert aware(created["build_at"]) == build_at  # naive UTC in, aware out
    assert created["manifest"] == bento_manifest("iris", size=4321)

    signed = check_version(
        ok(await stack.call("PATCH", item("bento", "iris", "v1", "presign_upload_url"))), "bento"
    )
    url = signed["presigned_upload_url"]
    assert url.startswith("http://")
    assert "Signature" in url  # it authorizes itself: the client sends no token with it
    started = check_version(
        ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload"))), "bento"
    )
    assert started["upload_status"] == "uploading"
    aware(started["upload_started_at"])

    data = os.urandom(256 * 1024)
    put = await stack.http.put(url, content=data)  # no token, no Content-Type
    assert put.status_code == 200
    # Bytes in the store are not a push yet: nothing is announced before finish_upload.
    assert await stack.events("bento.pushed") == []
    current = ok(await stack.call("GET", item("bento", "iris", "v1")))
    assert current["upload_status"] == "uploading"

    finished = check_version(
        ok(
            await stack.call(
                "PATCH",
                item("bento", "iris", "v1", "finish_upload"),
                json={"status": "success", "reason": ""},
            )
        ),
        "bento",
    )
    assert finished["upload_status"] == "success"
    aware(finished["upload_finished_at"])
    pushed = await stack.events("bento.pushed")
    assert [artifact(e) for e in pushed] == ["iris:v1"]
    assert pushed[0]["data"]["size_bytes"] == len(data)
    assert pushed[0]["data"]["pushed_by"] == ADMIN
    assert pushed[0]["data"]["labels"] == {"stage": "dev"}
    # A retried finish changes nothing and announces nothing twice.
    again = await stack.call(
        "PATCH",
        item("bento", "iris", "v1", "finish_upload"),
        json={"status": "success", "reason": ""},
    )
    assert ok(again)["upload_status"] == "success"
    assert len(await stack.events("bento.pushed")) == 1

    fetched = check_version(ok(await stack.call("GET", item("bento", "iris", "v1"))), "bento")
    assert fetched["uid"] == created["uid"]
    assert fetched["repository"]["name"] == "iris"
    repository = check_repository(
        ok(await stack.call("GET", repositories("bento", "iris"))), "bento"
    )
    assert repository["latest_bento"]["version"] == "v1"

    # Pull: presign_download_url, then a GET of the URL with no token.
    download = check_version(
        ok(await stack.call("PATCH", item("bento", "iris", "v1", "presign_download_url"))), "bento"
    )
    assert download["presigned_upload_url"] == ""
    pulled = await stack.http.get(download["presigned_download_url"])
    assert pulled.status_code == 200
    assert pulled.content == data


async def test_multipart_push_with_two_parts_then_presigned_pull(stack: Stack) -> None:
    await create_version(stack, "model", "clf", "m1", labels={"framework": "sklearn"}, size=77)
    started = ok(await stack.call("PATCH", item("model", "clf", "m1", "start_upload")))
    assert started["upload_status"] == "uploading"
    multipart = check_version(
        ok(await stack.call("PATCH", item("model", "clf", "m1", "start_multipart_upload"))),
        "model",
    )
    upload_id = multipart["upload_id"]
    assert isinstance(upload_id, str)
    assert upload_id

    # Every part but the last is at least 5 MiB on S3; the last may be tiny.
    chunks = [os.urandom(5 * MiB), b"the tail of the archive"]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        signed = check_version(
            ok(
                await stack.call(
                    "PATCH",
                    item("model", "clf", "m1", "presign_multipart_upload_url"),
                    json={"upload_id": upload_id, "part_number": number},
                )
            ),
            "model",
        )
        put = await stack.http.put(signed["presigned_upload_url"], content=chunk)
        assert put.status_code == 200, put.text
        assert put.headers["ETag"]  # the client keeps it as it is, quotes included
        parts.append({"part_number": number, "etag": put.headers["ETag"]})

    completed = check_version(
        ok(
            await stack.call(
                "PATCH",
                item("model", "clf", "m1", "complete_multipart_upload"),
                json={"parts": parts, "upload_id": upload_id},
            )
        ),
        "model",
    )
    # Assembled, but only finish_upload says the push worked.
    assert completed["upload_status"] == "uploading"
    assert await stack.events("model.pushed") == []

    finished = ok(
        await stack.call(
            "PATCH",
            item("model", "clf", "m1", "finish_upload"),
            json={"status": "success", "reason": ""},
        )
    )
    assert finished["upload_status"] == "success"
    assert finished["manifest"]["metadata"] == {"accuracy": 0.9, "nested": {"k": [1, 2]}}
    assert finished["manifest"]["size_bytes"] == 77
    pushed = await stack.events("model.pushed")
    assert [artifact(e) for e in pushed] == ["clf:m1"]
    assert pushed[0]["data"]["size_bytes"] == sum(len(c) for c in chunks)
    assert await stack.events("bento.pushed") == []

    signed = check_version(
        ok(await stack.call("PATCH", item("model", "clf", "m1", "presign_download_url"))), "model"
    )
    pulled = await stack.http.get(signed["presigned_download_url"])
    assert pulled.status_code == 200
    assert hashlib.sha256(pulled.content).digest() == hashlib.sha256(b"".join(chunks)).digest()


async def test_proxied_push_and_pull_are_byte_exact(proxy_stack: Stack) -> None:
    stack = proxy_stack
    created = await create_version(stack, "bento", "iris", "v1")
    assert created["transmission_strategy"] == "proxy"
    await create_version(stack, "bento", "iris", "v2")
    upload = item("bento", "iris", "v1", "upload")
    data = os.urandom(3 * MiB + 17)
    headers = {"Content-Type": "application/octet-stream"}

    # A PUT before start_upload (the client always starts first) writes nothing.
    before = await stack.snapshot()
    refused(await stack.call("PUT", upload, content=data, headers=headers), 422, "never started")
    assert await stack.snapshot() == before

    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    before = await stack.snapshot()
    too_big = os.urandom(PROXY_LIMIT + 1)
    refused(
        await stack.call("PUT", upload, content=too_big, headers=headers),
        413,
        f"exceeds the limit of {PROXY_LIMIT} bytes",
    )

    async def chunked() -> AsyncIterator[bytes]:
        yield data[:1000]
        yield data[1000:2000]

    refused(
        await stack.call("PUT", upload, content=chunked(), headers=headers),
        422,
        "needs a Content-Length header",
    )
    assert await stack.snapshot() == before
    assert await stack.events("bento.pushed") == []

    # The proxied PUT is the whole push: no finish_upload follows it.
    pushed = check_version(
        ok(await stack.call("PUT", upload, content=data, headers=headers)), "bento"
    )
    assert pushed["upload_status"] == "success"
    aware(pushed["upload_finished_at"])
    events = await stack.events("bento.pushed")
    assert [artifact(e) for e in events] == ["iris:v1"]
    assert events[0]["data"]["size_bytes"] == len(data)
    # Another PUT without a new start_upload may not replace the uploaded archive.
    uploaded = await stack.snapshot()
    refused(
        await stack.call("PUT", upload, content=b"not the archive", headers=headers),
        422,
        "no upload of bento iris:v1 is in progress (it is success)",
    )
    assert await stack.snapshot() == uploaded
    assert (await stack.blobs.head("bentos/default/iris/v1.tar")) == len(data)

    # Pull: the client still asks for a download URL and gets "" with strategy proxy.
    signed = check_version(
        ok(await stack.call("PATCH", item("bento", "iris", "v1", "presign_download_url"))), "bento"
    )
    assert signed["presigned_download_url"] == ""
    assert signed["transmission_strategy"] == "proxy"
    for version in ("v1", "latest"):
        async with stack.client.stream(
            "GET",
            item("bento", "iris", version, "download"),
            headers={"X-YATAI-API-TOKEN": stack.admin_token},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-tar"
            assert response.headers["content-length"] == str(len(data))
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()

    # A version with no finished upload is a JSON 404 on both calls, never a broken stream.
    refused(
        await stack.call("PATCH", item("bento", "iris", "v2", "presign_download_url")),
        404,
        "has no uploaded archive",
    )
    refused(
        await stack.call("GET", item("bento", "iris", "v2", "download")),
        404,
        "no uploaded archive",
    )
    records = await audit_records(stack)
    proxied = [r for r in records if r["action"] == "bento.upload.proxy"]
    assert [(r["resource"], r["details"]) for r in proxied] == [("iris:v1", {"bytes": len(data)})]


async def test_latest_names_the_newest_successful_upload(stack: Stack) -> None:
    await create_version(stack, "bento", "iris", "v1")
    refused(
        await stack.call("GET", item("bento", "iris", "latest")),
        404,
        "no version of iris has been uploaded",
    )
    await push_presigned(stack, "bento", "iris", "v1", b"first")
    await create_version(stack, "bento", "iris", "v2")
    await push_presigned(stack, "bento", "iris", "v2", b"second")
    await create_version(stack, "bento", "iris", "v3")  # never uploaded

    latest = check_version(ok(await stack.call("GET", item("bento", "iris", "latest"))), "bento")
    assert latest["version"] == "v2"
    assert latest["name"] == "v2"
    signed = ok(await stack.call("PATCH", item("bento", "iris", "latest", "presign_download_url")))
    assert signed["version"] == "v2"
    assert (await stack.http.get(signed["presigned_download_url"])).content == b"second"
    repository = ok(await stack.call("GET", repositories("bento", "iris")))
    assert repository["latest_bento"]["version"] == "v2"
    assert repository["n_bentos"] == 3
    # `bento.get(name)` takes items[0] of ?count=1: the newest version, uploaded or not.
    newest = ok(await stack.call("GET", f"{repositories('bento', 'iris')}/bentos?count=1"))
    assert tags(newest) == ["iris:v3"]
    assert newest["total"] == 3

    before = await stack.snapshot()
    refused(
        await stack.call(
            "POST",
            f"{repositories('bento', 'iris')}/bentos",
            json=version_body("bento", "iris", "latest"),
        ),
        422,
        "'latest' is reserved",
    )
    assert await stack.snapshot() == before


# --- listing and search --------------------------------------------------------------------


async def test_listing_filters_search_sorting_and_pagination(stack: Stack) -> None:
    dev = await new_member_token(stack, "dev", "developer")
    await ensure_repository(stack, "bento", "iris", labels={"team": "ml"})
    await ensure_repository(stack, "bento", "mnist", dev, labels={"team": "cv"})
    await ensure_repository(stack, "bento", "fraud-detector", labels={"team": "ml"})

    def day(n: int) -> datetime:
        return datetime(2025, 1, n, 12, tzinfo=UTC)

    # In creation order, with build days and sizes in other orders.
    made = [
        ("iris", "v1", None, "dev", 3, 300),
        ("iris", "v2", dev, "prod", 1, 100),
        ("mnist", "a1", dev, "prod", 2, 200),
        ("fraud-detector", "v1", None, "dev", 5, 500),
        ("iris", "v3", None, "prod", 4, 400),
    ]
    for name, version, token, stage, build, size in made:
        await create_version(
            stack,
            "bento",
            name,
            version,
            token,
            labels={"stage": stage},
            build_at=day(build),
            size=size,
        )
    await push_presigned(stack, "bento", "iris", "v3", b"uploaded")
    await create_version(stack, "model", "clf", "m1")
    newest_first = ["iris:v3", "fraud-detector:v1", "mnist:a1", "iris:v2", "iris:v1"]

    async def listed(path: str = "/api/v1/bentos", **params: str) -> dict[str, Any]:
        return ok(await stack.call("GET", path, params=params))

    # The client's bento.list(): no parameters, newest first, each with its repository.
    everything = await listed()
    assert tags(everything) == newest_first
    assert (everything["start"], everything["total"]) == (0, 5)
    # Empty parameters mean "not given".
    blank = await listed(start="", count="", q="", search="", sort="")
    assert tags(blank) == newest_first

    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"q": "label:stage=prod"}, ["iris:v3", "mnist:a1", "iris:v2"]),
        ({"q": "creator:dev"}, ["mnist:a1", "iris:v2"]),
        ({"q": f"creator:{ADMIN}"}, ["iris:v3", "fraud-detector:v1", "iris:v1"]),
        ({"q": "label:stage=prod creator:dev"}, ["mnist:a1", "iris:v2"]),
        ({"q": "label:stage=prod label:team=ml"}, []),  # version labels, not the repository's
        ({"q": "status:success"}, ["iris:v3"]),
        ({"q": "status:pending creator:admin"}, ["fraud-detector:v1", "iris:v1"]),
        ({"q": "iris"}, ["iris:v3", "iris:v2", "iris:v1"]),
        ({"search": "v1"}, ["fraud-detector:v1", "iris:v1"]),
        ({"search": "iris:v1"}, ["iris:v1"]),
        ({"search": "IRIS"}, ["iris:v3", "iris:v2", "iris:v1"]),
        ({"search": "iris", "q": "label:stage=dev"}, ["iris:v1"]),
        ({"search": "%"}, []),  # a literal, not a wildcard
        ({"q": "nothing-like-this"}, []),
        (
            {"q": "sort:build_at-desc"},
            ["fraud-detector:v1", "iris:v3", "iris:v1", "mnist:a1", "iris:v2"],
        ),
        (
            {"sort": "size-asc"},
            ["iris:v2", "mnist:a1", "iris:v1", "iris:v3", "fraud-detector:v1"],
        ),
        ({"q": "sort:created_at-asc"}, newest_first[::-1]),
        (
            {"q": "sort:version-asc"},
            ["mnist:a1", "iris:v1", "fraud-detector:v1", "iris:v2", "iris:v3"],
        ),
        (
            {"q": "sort:name-asc"},
            ["fraud-detector:v1", "iris:v1", "iris:v2", "iris:v3", "mnist:a1"],
        ),
        ({"q": "sort:name-desc label:stage=prod"}, ["mnist:a1", "iris:v3", "iris:v2"]),
    ]
    for params, expected in cases:
        page = await listed(**params)
        assert tags(page) == expected, params
        assert page["total"] == len(expected), params

    # Pages: disjoint, in order, with the total of the whole listing.
    by_name = ["fraud-detector:v1", "iris:v1", "iris:v2", "iris:v3", "mnist:a1"]
    pages = []
    for start in (0, 2, 4):
        page = await listed(q="sort:name-asc", start=str(start), count="2")
        assert (page["start"], page["total"]) == (start, 5)
        pages.append(tags(page))
    assert pages == [by_name[0:2], by_name[2:4], by_name[4:]]
    beyond = await listed(q="sort:name-asc", start="10", count="2")
    assert (beyond["items"], beyond["count"], beyond["total"]) == ([], 0, 5)
    filtered_page = await listed(q="label:stage=prod", start="1", count="1")
    assert tags(filtered_page) == ["mnist:a1"]
    assert filtered_page["total"] == 3

    # Inside one repository; the client's `get latest` is ?count=1.
    iris = repositories("bento", "iris") + "/bentos"
    assert tags(await listed(iris)) == ["iris:v3", "iris:v2", "iris:v1"]
    assert tags(await listed(iris, count="1")) == ["iris:v3"]
    assert tags(await listed(iris, q="label:stage=prod creator:dev")) == ["iris:v2"]
    assert tags(await listed(iris, q="sort:build_at-asc", start="1", count="5")) == [
        "iris:v1",
        "iris:v3",
    ]

    # Models are listed apart, with their manifest.
    models = await listed("/api/v1/models")
    assert tags(models, "model") == ["clf:m1"]
    assert models["items"][0]["manifest"]["module"] == "bentoml.sklearn"
    assert models["items"][0]["repository"]["name"] == "clf"

    # Repositories.
    def names(page: dict[str, Any]) -> list[str]:
        return [check_repository(r, "bento")["name"] for r in check_page(page)]

    repos = await listed(repositories("bento"))
    assert names(repos) == ["fraud-detector", "mnist", "iris"]
    by_repo = {r["name"]: r for r in repos["items"]}
    assert by_repo["iris"]["latest_bento"]["version"] == "v3"
    assert by_repo["iris"]["n_bentos"] == 3
    assert by_repo["mnist"]["latest_bento"]["version"] == "a1"  # none uploaded: the newest
    assert check_labels(by_repo["mnist"]["labels"]) == {"team": "cv"}
    assert names(await listed(repositories("bento"), q="label:team=ml")) == [
        "fraud-detector",
        "iris",
    ]
    assert names(await listed(repositories("bento"), q="creator:dev")) == ["mnist"]
    assert names(await listed(repositories("bento"), search="ir")) == ["iris"]
    assert names(await listed(repositories("bento"), q="status:success")) == ["iris"]
    sorted_page = await listed(repositories("bento"), q="sort:name-asc", start="1", count="1")
    assert names(sorted_page) == ["iris"]
    assert sorted_page["total"] == 3
    model_repos = await listed(repositories("model"))
    assert [r["name"] for r in model_repos["items"]] == ["clf"]

    # Bad listing parameters are 422s that say what is wrong; an unknown repository is a 404.
    bad: list[tuple[str, dict[str, str], str]] = [
        ("/api/v1/bentos", {"q": "color:red"}, "unknown filter 'color' in q"),
        ("/api/v1/bentos", {"q": "iris:v1"}, "unknown filter 'iris' in q"),
        ("/api/v1/bentos", {"sort": "popularity"}, "unknown sort 'popularity'"),
        ("/api/v1/bentos", {"q": "sort:size-up"}, "unknown sort 'size-up'"),
        ("/api/v1/bentos", {"q": "status:done"}, "upload_status"),
        ("/api/v1/bentos", {"count": "0"}, "count: must be between 1 and 1000"),
        ("/api/v1/bentos", {"count": "1001"}, "count: must be between 1 and 1000"),
        ("/api/v1/bentos", {"start": "-1"}, "start: must be between 0 and"),
        # Beyond a 64-bit OFFSET: refused by rule, not by the database driver.
        ("/api/v1/bentos", {"start": str(2**63)}, "start: must be between 0 and"),
        ("/api/v1/models", {"start": str(2**64)}, "start: must be between 0 and"),
        ("/api/v1/bentos", {"count": "ten"}, "count: expected an integer"),
        ("/api/v1/bentos", {"search": "x" * 256}, "search"),
        (repositories("bento"), {"q": "owner:me"}, "unknown filter 'owner'"),
        (repositories("bento"), {"start": "x"}, "start: expected an integer"),
        (iris, {"sort": "name-sideways"}, "unknown sort"),
    ]
    for path, params, fragment in bad:
        refused(await stack.call("GET", path, params=params), 422, fragment)
    refused(
        await stack.call("GET", repositories("bento", "nope") + "/bentos"), 404, "nope not found"
    )
    refused(await stack.call("GET", repositories("bento", "clf") + "/bentos"), 404, "clf not found")


# --- bad input -----------------------------------------------------------------------------


async def test_bad_names_versions_manifests_and_unknown_repositories_write_nothing(
    stack: Stack,
) -> None:
    await create_version(stack, "bento", "iris", "v1", description="readme")
    await ensure_repository(stack, "model", "clf")
    before = await stack.snapshot()
    versions = f"{repositories('bento', 'iris')}/bentos"

    async def post(path: str, body: Any) -> httpx.Response:
        return await stack.call("POST", path, json=body)

    def named(name: str) -> dict[str, Any]:
        return {"name": name, "description": ""}

    refusals: list[tuple[httpx.Response, int, str]] = [
        # Names and versions: BentoML's tag rules (the client lowercases; we do not guess).
        (await post(repositories("bento"), named("Iris Classifier!")), 422, "not a valid name"),
        (await post(repositories("bento"), named("IRIS")), 422, "'IRIS' is not a valid name"),
        (await post(repositories("bento"), named("-iris")), 422, "not a valid name"),
        (await post(repositories("bento"), named("iris-")), 422, "not a valid name"),
        (await post(repositories("bento"), named("a" * 64)), 422, "at most 63 characters"),
        (await post(repositories("bento"), named("")), 422, "not a valid name"),
        (await post(repositories("bento"), {"description": ""}), 422, "body.name: Field required"),
        (await post(versions, version_body("bento", "iris", "V2")), 422, "'V2' is not a valid"),
        (await post(versions, version_body("bento", "iris", "v2!")), 422, "not a valid"),
        (await post(versions, version_body("bento", "iris", "v" * 64)), 422, "at most 63"),
        (await post(versions, version_body("bento", "iris", "")), 422, "not a valid"),
        (await post(versions, version_body("bento", "iris", "latest")), 422, "reserved"),
        (await post(versions, {"description": ""}), 422, "body.version: Field required"),
        (
            await post(
                repositories("bento", "Bad Name") + "/bentos", version_body("bento", "x", "v2")
            ),
            422,
            "'Bad Name' is not a valid",
        ),
        (await stack.call("GET", item("bento", "iris", "V1")), 422, "'V1' is not a valid"),
        (await stack.call("GET", repositories("bento", "Iris")), 422, "not a valid name"),
        # Bodies the contract refuses.
        (
            await post(versions, {**version_body("bento", "iris", "v2"), "build_at": "yesterday"}),
            422,
            "build_at",
        ),
        (
            await post(versions, {**version_body("bento", "iris", "v2"), "manifest": ["x"]}),
            422,
            "manifest",
        ),
        (
            await post(versions, {**version_body("bento", "iris", "v2"), "labels": [{"key": "k"}]}),
            422,
            "labels",
        ),
        (
            await post(
                versions,
                version_body(
                    "bento", "iris", "v2", labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)}
                ),
            ),
            422,
            "labels",
        ),
        (
            await post(
                versions,
                {
                    **version_body("bento", "iris", "v2"),
                    "manifest": {**bento_manifest(), "size_bytes": -1},
                },
            ),
            422,
            "size_bytes",
        ),
        (
            await stack.client.post(
                versions,
                content=b'{"version": "v2",',
                headers={
                    "X-YATAI-API-TOKEN": stack.admin_token,
                    "Content-Type": "application/json",
                },
            ),
            422,
            "JSON",
        ),
    ]
    # An oversized manifest: over the limit serialized, on create and on update.
    huge = bento_manifest()
    huge["schema"] = {"blob": "x" * MAX_MANIFEST_BYTES}
    refusals += [
        (
            await post(versions, {**version_body("bento", "iris", "v2"), "manifest": huge}),
            413,
            "manifest is",
        ),
        (
            await stack.call(
                "PATCH",
                item("bento", "iris", "v1"),
                json={"manifest": huge, "description": "changed"},
            ),
            413,
            f"the limit is {MAX_MANIFEST_BYTES} bytes",
        ),
    ]
    # Unknown repositories and versions (a model repository is no bento repository).
    refusals += [
        (
            await post(
                repositories("bento", "nope") + "/bentos", version_body("bento", "nope", "v1")
            ),
            404,
            "bento repository nope not found",
        ),
        (
            await post(
                repositories("bento", "clf") + "/bentos", version_body("bento", "clf", "v1")
            ),
            404,
            "bento repository clf not found",
        ),
        (
            await stack.call("GET", repositories("bento", "nope")),
            404,
            "bento repository nope not found",
        ),
        (
            await stack.call("PATCH", repositories("bento", "nope"), json={"description": "x"}),
            404,
            "not found",
        ),
        (await stack.call("DELETE", repositories("bento", "nope")), 404, "not found"),
        (await stack.call("GET", item("bento", "nope", "v1")), 404, "bento nope:v1 not found"),
        (await stack.call("GET", item("bento", "iris", "v9")), 404, "bento iris:v9 not found"),
        (await stack.call("GET", item("model", "iris", "v1")), 404, "model iris:v1 not found"),
        (
            await stack.call("PATCH", item("bento", "iris", "v9"), json={"description": "x"}),
            404,
            "not found",
        ),
        (await stack.call("DELETE", item("bento", "iris", "v9")), 404, "bento iris:v9 not found"),
        (await stack.call("PATCH", item("bento", "nope", "v1", "start_upload")), 404, "not found"),
        (
            await stack.call("PATCH", item("bento", "iris", "v9", "presign_upload_url")),
            404,
            "not found",
        ),
        (
            await stack.call(
                "PATCH", item("bento", "iris", "v9", "finish_upload"), json={"status": "success"}
            ),
            404,
            "not found",
        ),
        (
            await stack.call("PATCH", item("bento", "iris", "v9", "presign_download_url")),
            404,
            "not found",
        ),
    ]
    for response, status, fragment in refusals:
        refused(response, status, fragment)
    assert await stack.snapshot() == before
    current = ok(await stack.call("GET", item("bento", "iris", "v1")))
    assert current["description"] == "readme"
    assert current["manifest"] == bento_manifest("iris", size=100)


async def test_duplicates_and_uploads_out_of_order_are_refused_and_write_nothing(
    stack: Stack,
) -> None:
    original = await create_version(stack, "bento", "iris", "v1", description="first")
    repository = ok(await stack.call("GET", repositories("bento", "iris")))
    before = await stack.snapshot()
    versions = f"{repositories('bento', 'iris')}/bentos"

    duplicate = await stack.call(
        "POST", versions, json=version_body("bento", "iris", "v1", description="second")
    )
    refused(duplicate, 409, "bento iris:v1 already exists")
    # Two pushes racing to create a repository: the loser gets the winner's, unchanged.
    again = await stack.call(
        "POST", repositories("bento"), json={"name": "iris", "description": "other"}
    )
    assert ok(again)["uid"] == repository["uid"]
    assert again.json()["description"] == ""

    finish = item("bento", "iris", "v1", "finish_upload")
    refused(
        await stack.call("PATCH", finish, json={"status": "success", "reason": ""}),
        422,
        "upload of bento iris:v1 was never started",
    )
    refused(
        await stack.call("PATCH", finish, json={"status": "failed", "reason": "boom"}),
        422,
        "was never started",
    )
    refused(await stack.call("PATCH", finish, json={"status": "done"}), 422, "status")
    refused(await stack.call("PATCH", finish), 422, "body")
    refused(
        await stack.call("PATCH", item("bento", "iris", "v1", "start_multipart_upload")),
        422,
        "was never started",
    )
    refused(
        await stack.call(
            "PATCH",
            item("bento", "iris", "v1", "presign_multipart_upload_url"),
            json={"upload_id": "made-up", "part_number": 1},
        ),
        422,
        "was never started",
    )
    refused(
        await stack.call(
            "PATCH",
            item("bento", "iris", "v1", "complete_multipart_upload"),
            json={"upload_id": "made-up", "parts": [{"part_number": 1, "etag": '"x"'}]},
        ),
        422,
        "was never started",
    )
    assert await stack.snapshot() == before
    assert ok(await stack.call("GET", item("bento", "iris", "v1")))["description"] == "first"

    # Once started: parts and completion must name the open multipart upload.
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    opened = ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_multipart_upload")))
    upload_id = opened["upload_id"]
    started = await stack.snapshot()
    part_url = item("bento", "iris", "v1", "presign_multipart_upload_url")
    complete = item("bento", "iris", "v1", "complete_multipart_upload")
    refusals = [
        (
            await stack.call("PATCH", part_url, json={"upload_id": "made-up", "part_number": 1}),
            "is not the open multipart upload of bento iris:v1",
        ),
        (
            await stack.call("PATCH", part_url, json={"upload_id": upload_id, "part_number": 0}),
            "part_number",
        ),
        (
            await stack.call(
                "PATCH", part_url, json={"upload_id": upload_id, "part_number": 10_001}
            ),
            "part_number",
        ),
        (
            await stack.call("PATCH", complete, json={"upload_id": upload_id, "parts": []}),
            "parts",
        ),
        (
            await stack.call(
                "PATCH",
                complete,
                json={"upload_id": "made-up", "parts": [{"part_number": 1, "etag": '"x"'}]},
            ),
            "is not the open multipart upload",
        ),
        (
            await stack.call(
                "PATCH",
                complete,
                json={
                    "upload_id": upload_id,
                    "parts": [{"part_number": 1, "etag": '"x"'}, {"part_number": 1, "etag": '"y"'}],
                },
            ),
            "each part number may appear only once",
        ),
    ]
    for response, fragment in refusals:
        refused(response, 422, fragment)
    assert await stack.snapshot() == started
    assert await stack.events("bento.pushed") == []

    # A success claimed for bytes that never arrived fails the upload and announces nothing.
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    refused(
        await stack.call("PATCH", finish, json={"status": "success", "reason": ""}),
        422,
        "no archive of bento iris:v1 arrived in the object store",
    )
    failed = ok(await stack.call("GET", item("bento", "iris", "v1")))
    assert failed["upload_status"] == "failed"
    assert "no archive" in failed["upload_finished_reason"]
    assert failed["uid"] == original["uid"]
    assert await stack.events("bento.pushed") == []


# --- who may call --------------------------------------------------------------------------


async def test_missing_unknown_revoked_and_expired_tokens_get_401_never_404(
    stack: Stack,
) -> None:
    await create_version(stack, "bento", "iris", "v1")
    revoked = ok(await stack.call("POST", "/api/v1/api_tokens", json={"name": "old-laptop"}))
    ok(await stack.call("DELETE", f"/api/v1/api_tokens/{revoked['uid']}"))
    expired = ok(
        await stack.call(
            "POST",
            "/api/v1/api_tokens",
            json={"name": "ci", "expired_at": "2999-01-01 00:00:00.000000"},
        )
    )
    await stack.gateway.pool.execute(
        "UPDATE api_tokens SET expired_at = now() - interval '1 second' WHERE uid = $1",
        expired["uid"],
    )
    before = await stack.snapshot()

    calls: list[tuple[str, str, dict[str, Any]]] = [
        # Lookups of things that do not exist: a 404 would make the client create them.
        ("GET", repositories("bento", "nope"), {}),
        ("GET", item("bento", "iris", "v9"), {}),
        ("GET", item("bento", "iris", "v1"), {}),
        ("GET", repositories("bento"), {}),
        ("GET", "/api/v1/bentos", {}),
        ("GET", f"{repositories('bento', 'iris')}/bentos", {"params": {"count": "1"}}),
        ("PATCH", item("bento", "iris", "v1", "presign_download_url"), {}),
        ("GET", item("bento", "iris", "v1", "download"), {}),
        # Changes.
        ("POST", repositories("bento"), {"json": {"name": "new", "description": ""}}),
        (
            "POST",
            f"{repositories('bento', 'iris')}/bentos",
            {"json": version_body("bento", "iris", "v2")},
        ),
        ("PATCH", item("bento", "iris", "v1", "start_upload"), {}),
        ("DELETE", item("bento", "iris", "v1"), {}),
        ("DELETE", repositories("bento", "iris"), {}),
    ]
    credentials = [
        ({}, "missing API token"),
        ({"X-YATAI-API-TOKEN": ""}, "missing API token"),
        ({"X-YATAI-API-TOKEN": "nonsense"}, "invalid API token"),
        ({"X-YATAI-API-TOKEN": stack.admin_token[:-2] + "xx"}, "invalid API token"),
        ({"X-YATAI-API-TOKEN": revoked["token"]}, "API token 'old-laptop' was revoked on "),
        ({"X-YATAI-API-TOKEN": expired["token"]}, "API token 'ci' expired on "),
    ]
    for headers, reason in credentials:
        for method, path, kwargs in calls:
            response = await stack.client.request(method, path, headers=headers, **kwargs)
            refused(response, 401, reason)
    assert await stack.snapshot() == before


async def test_a_token_of_another_organization_reaches_nothing_here(stack: Stack) -> None:
    await create_version(stack, "bento", "iris", "v1")
    await push_presigned(stack, "bento", "iris", "v1", b"default's archive")
    async with stack.gateway.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO organizations (name) VALUES ('acme') RETURNING id, uid, name,"
            " description, created_at, updated_at"
        )
        assert row is not None
        acme = models.Organization(**dict(row))
        await conn.execute("INSERT INTO users (name) VALUES ('wile')")
        member = await identity.add_members(conn, acme, ["wile"], models.Role.ADMIN)
        issued = await identity.issue_token(conn, organization=acme, user=member[0].user, name="x")
    other = issued.secret
    before = await stack.snapshot()

    # Naming this organization is a 403, whatever the call.
    for method, path in (
        ("GET", item("bento", "iris", "v1")),
        ("GET", "/api/v1/bentos"),
        ("POST", f"{repositories('bento', 'iris')}/bentos"),
        ("DELETE", repositories("bento", "iris")),
    ):
        for headers, params in (
            ({"X-Yatai-Organization": ORG}, {}),
            ({}, {"organization_name": ORG}),
        ):
            response = await stack.call(
                method,
                path,
                other,
                headers=headers,
                params=params,
                json=version_body("bento", "iris", "v2"),
            )
            refused(response, 403, "API token belongs to organization 'acme', not 'default'")

    # Otherwise it acts in its own organization, where none of this exists.
    refusals = [
        await stack.call("GET", repositories("bento", "iris"), other),
        await stack.call("GET", item("bento", "iris", "v1"), other),
        await stack.call("GET", item("bento", "iris", "latest"), other),
        await stack.call("PATCH", item("bento", "iris", "v1", "presign_download_url"), other),
        await stack.call("GET", item("bento", "iris", "v1", "download"), other),
        await stack.call(
            "POST",
            f"{repositories('bento', 'iris')}/bentos",
            other,
            json=version_body("bento", "iris", "v2"),
        ),
        await stack.call("PATCH", item("bento", "iris", "v1", "start_upload"), other),
        await stack.call(
            "PATCH",
            item("bento", "iris", "v1", "finish_upload"),
            other,
            json={"status": "failed", "reason": "sabotage"},
        ),
        await stack.call("PATCH", item("bento", "iris", "v1"), other, json={"description": "x"}),
        await stack.call("DELETE", item("bento", "iris", "v1"), other),
        await stack.call("DELETE", repositories("bento", "iris"), other),
    ]
    for response in refusals:
        refused(response, 404, "iris")
    assert ok(await stack.call("GET", "/api/v1/bentos", other))["total"] == 0
    assert ok(await stack.call("GET", repositories("bento"), other))["total"] == 0
    assert await stack.snapshot() == before

    # Its own `iris` is another repository; neither organization sees the other's.
    mine = await ensure_repository(stack, "bento", "iris", other)
    assert mine["latest_bento"] is None
    theirs = ok(await stack.call("GET", repositories("bento", "iris")))
    assert theirs["uid"] != mine["uid"]
    assert theirs["latest_bento"]["version"] == "v1"
    assert ok(await stack.call("GET", repositories("bento")))["total"] == 1


async def test_a_guest_reads_everything_and_changes_nothing(stack: Stack) -> None:
    await create_version(stack, "bento", "iris", "v1")
    await push_presigned(stack, "bento", "iris", "v1", b"archive")
    await create_version(stack, "bento", "iris", "v2")
    guest = await new_member_token(stack, "gail", "guest")

    # Reads, including a pull.
    assert ok(await stack.call("GET", repositories("bento", "iris"), guest))["name"] == "iris"
    assert tags(ok(await stack.call("GET", "/api/v1/bentos", guest))) == ["iris:v2", "iris:v1"]
    assert ok(await stack.call("GET", repositories("bento"), guest))["total"] == 1
    assert ok(await stack.call("GET", item("bento", "iris", "latest"), guest))["version"] == "v1"
    signed = ok(
        await stack.call("PATCH", item("bento", "iris", "v1", "presign_download_url"), guest)
    )
    assert (await stack.http.get(signed["presigned_download_url"])).content == b"archive"
    before = await stack.snapshot()

    mutations: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", repositories("bento"), {"json": {"name": "new", "description": ""}}),
        ("PATCH", repositories("bento", "iris"), {"json": {"description": "x"}}),
        ("DELETE", repositories("bento", "iris"), {}),
        (
            "POST",
            f"{repositories('bento', 'iris')}/bentos",
            {"json": version_body("bento", "iris", "v3")},
        ),
        ("PATCH", item("bento", "iris", "v2"), {"json": {"description": "x"}}),
        ("DELETE", item("bento", "iris", "v1"), {}),
        ("PATCH", item("bento", "iris", "v2", "start_upload"), {}),
        ("PATCH", item("bento", "iris", "v2", "presign_upload_url"), {}),
        ("PATCH", item("bento", "iris", "v2", "start_multipart_upload"), {}),
        (
            "PATCH",
            item("bento", "iris", "v2", "presign_multipart_upload_url"),
            {"json": {"upload_id": "u", "part_number": 1}},
        ),
        (
            "PATCH",
            item("bento", "iris", "v2", "complete_multipart_upload"),
            {"json": {"upload_id": "u", "parts": [{"part_number": 1, "etag": "e"}]}},
        ),
        (
            "PATCH",
            item("bento", "iris", "v2", "finish_upload"),
            {"json": {"status": "failed", "reason": ""}},
        ),
        ("PUT", item("bento", "iris", "v2", "upload"), {"content": b"bytes"}),
        ("POST", repositories("model"), {"json": {"name": "clf", "description": ""}}),
    ]
    for method, path, kwargs in mutations:
        response = await stack.call(method, path, guest, **kwargs)
        refused(response, 403, "needs the developer role", "'gail' is a guest (read-only)")
    assert await stack.snapshot() == before
    assert (
        ok(await stack.call("GET", item("bento", "iris", "v1"), guest))["upload_status"]
        == "success"
    )


# --- deletions -----------------------------------------------------------------------------


async def test_deletions_emit_events_and_leave_nothing_behind(stack: Stack) -> None:
    await create_version(stack, "model", "clf", "m1")
    await push_presigned(stack, "model", "clf", "m1", b"weights")
    await create_version(stack, "bento", "iris", "v1", models=["clf:m1"])
    await push_presigned(stack, "bento", "iris", "v1", b"bento one")
    await create_version(stack, "bento", "iris", "v2")
    await create_version(stack, "bento", "other", "v1")
    assert len(await stack.objects()) == 2

    # A model a bento uses stays, and so does its repository.
    before = await stack.snapshot()
    refused(await stack.call("DELETE", item("model", "clf", "m1")), 409, "used by bento iris:v1")
    refused(await stack.call("DELETE", repositories("model", "clf")), 409, "used by bento iris:v1")
    assert await stack.snapshot() == before

    deleted = ok(await stack.call("DELETE", item("bento", "iris", "v2")))
    assert deleted == {"name": "iris", "version": "v2", "deleted_versions": 1}
    refused(await stack.call("GET", item("bento", "iris", "v2")), 404, "bento iris:v2 not found")
    refused(await stack.call("DELETE", item("bento", "iris", "v2")), 404)
    assert tags(ok(await stack.call("GET", "/api/v1/bentos"))) == ["other:v1", "iris:v1"]
    assert [artifact(e) for e in await stack.events("bento.deleted")] == ["iris:v2"]

    removed = ok(await stack.call("DELETE", repositories("bento", "iris")))
    assert removed == {"name": "iris", "deleted_versions": 1}
    refused(await stack.call("GET", repositories("bento", "iris")), 404)
    refused(await stack.call("GET", item("bento", "iris", "v1")), 404)
    refused(await stack.call("GET", item("bento", "iris", "latest")), 404)
    assert tags(ok(await stack.call("GET", "/api/v1/bentos"))) == ["other:v1"]
    assert [r["name"] for r in ok(await stack.call("GET", repositories("bento")))["items"]] == [
        "other"
    ]
    deletions = await stack.events("bento.deleted")
    assert [artifact(e) for e in deletions] == ["iris:v2", "iris:v1", "iris:*"]
    assert {e["data"]["deleted_by"] for e in deletions} == {ADMIN}

    # With the bento gone, the model may go; its archive leaves the store.
    ok(await stack.call("DELETE", item("model", "clf", "m1")))
    assert [artifact(e) for e in await stack.events("model.deleted")] == ["clf:m1"]
    assert ok(await stack.call("GET", "/api/v1/models"))["total"] == 0

    async def store_empty() -> bool:
        return await stack.objects() == []

    await wait_until(store_empty)
    # Deleting announces deletions only: the two pushes are all that was ever pushed.
    pushed = await stack.events("bento.pushed", "model.pushed")
    assert [artifact(e) for e in pushed] == ["clf:m1", "iris:v1"]
    # A name is free again after its deletion, and starts empty.
    again = await create_version(stack, "bento", "iris", "v1")
    assert again["upload_status"] == "pending"
    refused(await stack.call("PATCH", item("bento", "iris", "v1", "presign_download_url")), 404)


# --- audit ---------------------------------------------------------------------------------


async def test_every_change_leaves_an_audit_record_with_actor_and_request_id(
    stack: Stack,
) -> None:
    dev = await new_member_token(stack, "dev", "developer")
    baseline = {r["id"] for r in await audit_records(stack)}
    # request id -> (actor, action, resource type, resource)
    expected: dict[str, tuple[str, str, str, str]] = {}

    async def change(
        request_id: str,
        actor: str,
        action: str,
        resource: str,
        method: str,
        path: str,
        token: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        response = await stack.call(
            method, path, token, headers={"X-Request-Id": request_id}, **kwargs
        )
        assert response.headers["x-request-id"] == request_id
        body = ok(response)
        kind = action.split(".", 1)[0].removesuffix("_repository")
        expected[request_id] = (actor, action, kind, resource)
        return body

    b, m = "bento", "model"
    await change(
        "r-01",
        ADMIN,
        "bento_repository.create",
        "iris",
        "POST",
        repositories(b),
        json={"name": "iris", "description": ""},
    )
    await change(
        "r-02",
        ADMIN,
        "bento_repository.update",
        "iris",
        "PATCH",
        repositories(b, "iris"),
        json={"description": "the classifier"},
    )
    await change(
        "r-03",
        "dev",
        "bento.create",
        "iris:v1",
        "POST",
        f"{repositories(b, 'iris')}/bentos",
        dev,
        json=version_body(b, "iris", "v1"),
    )
    await change(
        "r-04",
        "dev",
        "bento.update",
        "iris:v1",
        "PATCH",
        item(b, "iris", "v1"),
        dev,
        json={"description": "readme"},
    )
    signed = ok(await stack.call("PATCH", item(b, "iris", "v1", "presign_upload_url"), dev))
    await change(
        "r-05",
        "dev",
        "bento.upload.start",
        "iris:v1",
        "PATCH",
        item(b, "iris", "v1", "start_upload"),
        dev,
    )
    assert (await stack.http.put(signed["presigned_upload_url"], content=b"tar")).status_code == 200
    await change(
        "r-06",
        "dev",
        "bento.upload.finish",
        "iris:v1",
        "PATCH",
        item(b, "iris", "v1", "finish_upload"),
        dev,
        json={"status": "success", "reason": ""},
    )

    # A multipart push: opening and completing the upload change the version too.
    await change(
        "r-07",
        ADMIN,
        "model_repository.create",
        "clf",
        "POST",
        repositories(m),
        json={"name": "clf", "description": ""},
    )
    await change(
        "r-08",
        ADMIN,
        "model.create",
        "clf:m1",
        "POST",
        f"{repositories(m, 'clf')}/models",
        json=version_body(m, "clf", "m1"),
    )
    await change(
        "r-09", ADMIN, "model.upload.start", "clf:m1", "PATCH", item(m, "clf", "m1", "start_upload")
    )
    opened = await change(
        "r-10",
        ADMIN,
        "model.upload.multipart.start",
        "clf:m1",
        "PATCH",
        item(m, "clf", "m1", "start_multipart_upload"),
    )
    part = ok(
        await stack.call(
            "PATCH",
            item(m, "clf", "m1", "presign_multipart_upload_url"),
            json={"upload_id": opened["upload_id"], "part_number": 1},
        )
    )
    put = await stack.http.put(part["presigned_upload_url"], content=b"weights")
    assert put.status_code == 200
    parts = [{"part_number": 1, "etag": put.headers["ETag"]}]
    await change(
        "r-11",
        ADMIN,
        "model.upload.multipart.complete",
        "clf:m1",
        "PATCH",
        item(m, "clf", "m1", "complete_multipart_upload"),
        json={"upload_id": opened["upload_id"], "parts": parts},
    )
    await change(
        "r-12",
        ADMIN,
        "model.upload.finish",
        "clf:m1",
        "PATCH",
        item(m, "clf", "m1", "finish_upload"),
        json={"status": "success", "reason": ""},
    )

    await change("r-13", "dev", "bento.delete", "iris:v1", "DELETE", item(b, "iris", "v1"), dev)
    await change(
        "r-14", ADMIN, "bento_repository.delete", "iris", "DELETE", repositories(b, "iris")
    )

    # Reads and refusals leave no record.
    ok(await stack.call("GET", "/api/v1/models", headers={"X-Request-Id": "read"}))
    ok(await stack.call("GET", item(m, "clf", "m1"), headers={"X-Request-Id": "read"}))
    refused(
        await stack.call(
            "POST",
            f"{repositories(m, 'clf')}/models",
            headers={"X-Request-Id": "dup"},
            json=version_body(m, "clf", "m1"),
        ),
        409,
    )
    refused(
        await stack.call(
            "POST", repositories(b), headers={"X-Request-Id": "bad"}, json={"name": "Bad!"}
        ),
        422,
    )
    # A repeated repository create answers 200 but changes nothing: no record either.
    ok(
        await stack.call(
            "POST",
            repositories(m),
            headers={"X-Request-Id": "race"},
            json={"name": "clf", "description": ""},
        )
    )

    records = [r for r in await audit_records(stack) if r["id"] not in baseline]
    assert [r["request_id"] for r in records] == sorted(expected, reverse=True)  # newest first
    tokens = {ADMIN: "bootstrap", "dev": "dev-laptop"}
    for record in records:
        actor, action, kind, resource = expected[record["request_id"]]
        assert (record["actor"], record["action"]) == (actor, action), record
        assert (record["resource_type"], record["resource"]) == (kind, resource), record
        assert record["organization"] == ORG
        assert record["token_name"] == tokens[actor]
        aware(record["at"])
    by_id = {r["request_id"]: r for r in records}
    assert by_id["r-06"]["details"] == {"status": "success", "reason": ""}
    assert by_id["r-14"]["details"] == {"deleted_versions": 0}
    assert by_id["r-02"]["details"] == {"description": "the classifier"}
    assert by_id["r-10"]["details"] == {"upload_id": opened["upload_id"]}
    assert by_id["r-11"]["details"] == {"upload_id": opened["upload_id"], "parts": 1}

    # Only admins read the log.
    refused(await stack.call("GET", "/api/ekiben/v1/audit", dev), 403, "needs the admin role")


async def test_bentos_are_listed_by_the_model_version_they_use(stack: Stack) -> None:
    # The model page's "bentos using it": the other direction of a manifest's model links.
    await create_version(stack, "bento", "svc", "a", models=["clf:m1"])
    await create_version(stack, "bento", "svc", "b", models=["clf:m2", "emb:e1"])
    await create_version(stack, "bento", "other", "c", models=["clf:m1", "emb:e1"])
    await create_version(stack, "bento", "plain", "d")

    async def using(q: str) -> list[str]:
        return tags(ok(await stack.call("GET", "/api/v1/bentos", params={"q": q})))

    assert await using("model:clf:m1") == ["other:c", "svc:a"]
    assert await using("model:emb:e1 svc") == ["svc:b"]
    assert await using("model:clf:m9") == []
    bad = await stack.call("GET", "/api/v1/bentos", params={"q": "model:clf"})
    refused(bad, 422, "model:<name>:<version>")
