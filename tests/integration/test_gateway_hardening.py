"""What a fuzzer, a race and a kill found (issue 8), each pinned down through the HTTP API.

The gateway and the registry run in this process against real NATS, PostgreSQL and
SeaweedFS (`tests.fixtures.stack`). Where an in-process transport cannot show the fault,
the same app is served by uvicorn and spoken to over a socket: a client that hangs up in
the middle of a body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.gateway.guard import JSON_BODY_BYTES, MANIFEST_BODY_BYTES, MAX_JSON_DEPTH
from services.gateway.identity import auth
from shared.devstack.servers import S3Server
from tests.fixtures.stack import Stack, registry_settings, running_stack, wait_until
from tests.integration.test_artifacts_api import (
    create_version,
    ensure_repository,
    item,
    ok,
    refused,
    repositories,
    version_body,
)

MiB = 1024 * 1024
PROXY_LIMIT = 4 * MiB


@pytest.fixture
async def stack(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with running_stack(nats_url, pg_dsn, s3_server, tmp_path / "admin-token") as running:
        yield running


@pytest.fixture
async def proxy_stack(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Proxied transfers, the gateway also served over HTTP by uvicorn."""
    async with running_stack(
        nats_url,
        pg_dsn,
        s3_server,
        tmp_path / "admin-token",
        transfer_strategy="proxy",
        max_upload_bytes=PROXY_LIMIT,
        serve_http=True,
    ) as running:
        yield running


JSON = {"Content-Type": "application/json"}


# --- 1. a NUL anywhere is a 422, by one rule -----------------------------------------------


async def test_a_nul_in_any_query_path_or_body_string_is_a_422_that_writes_nothing(
    stack: Stack,
) -> None:
    await create_version(stack, "bento", "iris", "v1")
    before = await stack.snapshot()

    for path in (
        "/api/v1/models?search=%00",
        "/api/v1/bentos?q=a%00b",
        "/api/v1/bento_repositories?search=x%00",
        "/api/v1/bento_repositories/iris/bentos?q=%00",
        "/api/v1/api_tokens?search=%00",
        "/api/v1/users?search=%00",
        "/api/ekiben/v1/audit?action=%00",
        "/api/v1/bento_repositories/ir%00is",
        "/api/v1/auth/current?unused=%00",
    ):
        message = refused(await stack.call("GET", path), 422, "NUL")
        assert message.startswith(("query.", "path:")), message

    # Bodies: keys and values at any depth, every route, one rule. The JSON is sent as
    # written, so the NUL arrives as the `\u0000` escape a client would send.
    version_path = f"{repositories('bento', 'iris')}/bentos"
    manifest = version_body("bento", "iris", "v2")
    manifest["manifest"]["metadata"] = {"deep": [{"ok": "x", "k\x00": 1}]}
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", repositories("bento"), {"name": "r", "description": "a\x00"}, "description"),
        (
            "POST",
            repositories("bento"),
            {"name": "r", "labels": [{"key": "k", "value": "v\x00"}]},
            "body.labels.0.value",
        ),
        ("POST", version_path, manifest, "body.manifest.metadata.deep.0"),
        (
            "POST",
            version_path,
            {**version_body("bento", "iris", "v3"), "description": "d\x00"},
            "body.description",
        ),
        ("PATCH", item("bento", "iris", "v1"), {"labels": [{"key": "\x00", "value": ""}]}, "key"),
        ("POST", "/api/v1/api_tokens", {"name": "laptop\x00"}, "body.name"),
        ("POST", "/api/v1/users", {"name": "bob", "email": "b\x00@x"}, "body.email"),
        ("POST", "/api/v1/users", {"name": "b\x00b"}, "body.name"),
        ("POST", "/api/v1/members", {"usernames": ["\x00"], "role": "admin"}, "body.usernames.0"),
    ]
    for method, path, body, where in cases:
        response = await stack.call(method, path, json=body)
        message = refused(response, 422, "NUL characters", where)
        assert "\x00" not in message
    # A lone surrogate (`\ud800`) is no text PostgreSQL can store either.
    surrogate = b'{"name": "r", "description": "\\ud800"}'
    response = await stack.call("POST", repositories("bento"), content=surrogate, headers=JSON)
    refused(response, 422, "body.description", "surrogate")
    assert await stack.snapshot() == before


async def test_a_nul_finish_upload_reason_is_a_422_and_fails_the_upload(stack: Stack) -> None:
    await create_version(stack, "bento", "iris", "v1")
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    body = {"status": "failed", "reason": "tar: broken\x00pipe"}
    response = await stack.call("PATCH", item("bento", "iris", "v1", "finish_upload"), json=body)
    refused(response, 422, "body.reason", "NUL characters")
    # The client takes any refusal of finish_upload as a failed push; so does the registry.
    version = ok(await stack.call("GET", item("bento", "iris", "v1")))
    assert version["upload_status"] == "failed"
    assert version["upload_finished_reason"].startswith("finish_upload refused: body.reason")


# --- 2. paging beyond 64 bits ---------------------------------------------------------------


async def test_a_start_of_2_to_the_63_is_a_422_on_every_list_route(stack: Stack) -> None:
    await ensure_repository(stack, "bento", "iris")
    await ensure_repository(stack, "model", "clf")
    for path in (
        "/api/v1/bentos",
        "/api/v1/models",
        "/api/v1/bento_repositories",
        "/api/v1/model_repositories",
        "/api/v1/bento_repositories/iris/bentos",
        "/api/v1/model_repositories/clf/models",
        "/api/v1/api_tokens",
        "/api/v1/users",
        "/api/ekiben/v1/audit",
    ):
        for start in (str(2**63), str(2**64 + 1), "-1"):
            response = await stack.call("GET", path, params={"start": start})
            refused(response, 422, "start: must be between 0 and")


# --- 3. racing creates ----------------------------------------------------------------------


async def test_racing_creates_of_one_version_give_one_200_and_one_409_every_time(
    stack: Stack,
) -> None:
    await ensure_repository(stack, "bento", "iris")
    path = f"{repositories('bento', 'iris')}/bentos"
    for race in range(60):
        body = version_body("bento", "iris", f"v{race}")
        first, second = await asyncio.gather(
            stack.call("POST", path, json=body), stack.call("POST", path, json=body)
        )
        assert sorted((first.status_code, second.status_code)) == [200, 409], (
            race,
            first.text,
            second.text,
        )
        loser = first if first.status_code == 409 else second
        refused(loser, 409, f"bento iris:v{race} already exists")
    page = ok(await stack.call("GET", path, params={"count": "100"}))
    assert page["total"] == 60
    # Racing repository creates both get the repository (the client's lock is per process).
    made = await asyncio.gather(
        *(stack.call("POST", repositories("model"), json={"name": "clf"}) for _ in range(4))
    )
    assert [r.status_code for r in made] == [200] * 4


# --- 4. authenticate first, bound the body before reading it --------------------------------


class CountingBody:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            size = min(self.chunk, self.total - self.pulled)
            self.pulled += size
            yield b" " * size


async def test_a_body_is_read_only_after_the_token_and_never_past_the_limit(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = 80 * MiB
    path = repositories("bento")

    # No token, or a bad one: 401 before a byte of the body is read.
    for token in ("", "ekb_" + "x" * 43):
        body = CountingBody(big)
        headers = {**JSON, "Content-Length": str(big)}
        response = await stack.call("POST", path, token, content=body, headers=headers)
        refused(response, 401, "API token")
        assert body.pulled == 0

    # A token, but a Content-Length over the route's limit: 413, nothing read.
    body = CountingBody(big)
    headers = {**JSON, "Content-Length": str(big)}
    response = await stack.call("POST", path, content=body, headers=headers)
    refused(response, 413, f"exceeds the limit of {MANIFEST_BODY_BYTES} bytes")
    assert body.pulled == 0

    # Chunked, with no Content-Length: refused as soon as it passes the limit.
    body = CountingBody(big)
    response = await stack.call("POST", "/api/v1/api_tokens", content=body, headers=JSON)
    refused(response, 413, f"exceeds the limit of {JSON_BODY_BYTES} bytes")
    assert JSON_BODY_BYTES < body.pulled <= JSON_BODY_BYTES + body.chunk

    # One token check per request, though both the route class and the route ask for it.
    checks = 0
    verify = auth._verified_token

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal checks
        checks += 1
        return await verify(*args, **kwargs)

    monkeypatch.setattr(auth, "_verified_token", counted)
    ok(await stack.call("POST", repositories("bento"), json={"name": "iris"}))
    assert checks == 1


async def test_a_proxied_upload_over_the_limit_is_refused_before_its_bytes(
    proxy_stack: Stack,
) -> None:
    await create_version(proxy_stack, "bento", "iris", "v1")
    ok(await proxy_stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    body = CountingBody(PROXY_LIMIT + 1)
    headers = {"Content-Length": str(PROXY_LIMIT + 1)}
    path = item("bento", "iris", "v1", "upload")
    response = await proxy_stack.call("PUT", path, content=body, headers=headers)
    refused(response, 413, f"exceeds the limit of {PROXY_LIMIT} bytes")
    assert body.pulled == 0
    unauthenticated = CountingBody(PROXY_LIMIT + 1)
    response = await proxy_stack.call("PUT", path, "", content=unauthenticated, headers=headers)
    refused(response, 401)
    assert unauthenticated.pulled == 0


# --- 5. an interrupted proxied upload fails ---------------------------------------------------


def send_and_hang_up(url: str, request: bytes) -> None:
    """Send `request` on a fresh connection and close it without reading an answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)


def exchange(url: str, request: bytes) -> bytes:
    """Send `request` on a fresh connection; the first bytes of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def upload_request(stack: Stack, path: str, head: dict[str, str], body: bytes) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: gateway", f"X-YATAI-API-TOKEN: {stack.admin_token}"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def version_of(stack: Stack, name: str, version: str) -> dict[str, Any]:
    return ok(await stack.call("GET", item("bento", name, version)))


async def failed_with(stack: Stack, name: str, version: str, *fragments: str) -> dict[str, Any]:
    """Wait for the version to be failed; its reason holds `fragments`."""

    async def failed() -> bool:
        return bool((await version_of(stack, name, version))["upload_status"] == "failed")

    await wait_until(failed, timeout=30.0)
    found = await version_of(stack, name, version)
    for fragment in fragments:
        assert fragment in found["upload_finished_reason"], found["upload_finished_reason"]
    return found


async def test_a_client_that_hangs_up_mid_body_leaves_a_failed_version_and_no_object(
    proxy_stack: Stack,
) -> None:
    stack = proxy_stack
    await create_version(stack, "bento", "iris", "v1")
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    path = item("bento", "iris", "v1", "upload")
    request = upload_request(stack, path, {"Content-Length": "1000"}, b"0123456789")
    await asyncio.to_thread(send_and_hang_up, stack.url, request)

    # (uvicorn drops what it buffered when the peer is gone: the count may be below 10.)
    await failed_with(stack, "iris", "v1", "the client disconnected after", "of its 1000 bytes")
    # Nothing counts as uploaded: a success now is refused, there is nothing to pull,
    # and the partial object is removed.
    finish = {"status": "success", "reason": ""}
    response = await stack.call("PATCH", item("bento", "iris", "v1", "finish_upload"), json=finish)
    refused(response, 422, "no upload of bento iris:v1 is in progress (it is failed)")
    refused(await stack.call("PATCH", item("bento", "iris", "v1", "presign_download_url")), 404)
    refused(await stack.call("GET", item("bento", "iris", "v1", "download")), 404)

    async def no_objects() -> bool:
        return await stack.objects() == []

    await wait_until(no_objects, timeout=30.0)
    # A retry of the whole push works.
    data = os.urandom(5000)
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    pushed = ok(await stack.call("PUT", path, content=data))
    assert pushed["upload_status"] == "success"
    pulled = await stack.call("GET", item("bento", "iris", "v1", "download"))
    assert pulled.content == data


async def test_a_body_longer_than_its_content_length_fails_the_upload(proxy_stack: Stack) -> None:
    stack = proxy_stack
    await create_version(stack, "bento", "iris", "v1")
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    path = item("bento", "iris", "v1", "upload")
    # In process, the body can run past its Content-Length (a server's framing would cut
    # it; a proxy in front might not).
    response = await stack.call(
        "PUT", path, content=CountingBody(20), headers={"Content-Length": "10"}
    )
    refused(response, 400, "longer than its Content-Length of 10 bytes")
    await failed_with(stack, "iris", "v1", "longer than its Content-Length")

    async def no_objects() -> bool:
        return await stack.objects() == []

    await wait_until(no_objects, timeout=30.0)

    # Over a socket, framing that says both (Content-Length and chunked) is refused by the
    # server itself before the gateway sees it: nothing is stored, the upload goes on.
    ok(await stack.call("PATCH", item("bento", "iris", "v1", "start_upload")))
    chunked = b"14\r\n" + b"x" * 20 + b"\r\n0\r\n\r\n"
    head = {"Content-Length": "10", "Transfer-Encoding": "chunked"}
    answer = await asyncio.to_thread(
        exchange, stack.url, upload_request(stack, path, head, chunked)
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert (await version_of(stack, "iris", "v1"))["upload_status"] == "uploading"
    assert await stack.objects() == []
    pushed = ok(await stack.call("PUT", path, content=b"y" * 10))
    assert pushed["upload_status"] == "success"


async def test_a_proxied_upload_succeeds_only_when_its_declared_checksums_match(
    proxy_stack: Stack,
) -> None:
    stack = proxy_stack
    data = os.urandom(64 * 1024)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    cases = [
        ({"Content-MD5": wrong_md5}, "MD5"),
        ({"Repr-Digest": f"sha-256=:{wrong}:"}, "Repr-Digest"),
        ({"Digest": f"sha-256={wrong}"}, "Digest"),
    ]
    for number, (headers, named) in enumerate(cases):
        version = f"bad{number}"
        await create_version(stack, "bento", "iris", version)
        ok(await stack.call("PATCH", item("bento", "iris", version, "start_upload")))
        path = item("bento", "iris", version, "upload")
        response = await stack.call("PUT", path, content=data, headers=headers)
        refused(response, 422, named, "declares")
        await failed_with(stack, "iris", version, named)

    # A malformed digest is refused before any byte moves; the upload stays in progress.
    await create_version(stack, "bento", "iris", "malformed")
    ok(await stack.call("PATCH", item("bento", "iris", "malformed", "start_upload")))
    path = item("bento", "iris", "malformed", "upload")
    response = await stack.call("PUT", path, content=data, headers={"Content-MD5": "nope"})
    refused(response, 422, "Content-MD5: the md5 value must be the base64 of 16 bytes")
    assert (await version_of(stack, "iris", "malformed"))["upload_status"] == "uploading"

    await create_version(stack, "bento", "iris", "good")
    ok(await stack.call("PATCH", item("bento", "iris", "good", "start_upload")))
    headers = {"Content-MD5": md5, "Repr-Digest": f"sha-256=:{sha}:, sha-512=:AAAA:"}
    path = item("bento", "iris", "good", "upload")
    pushed = ok(await stack.call("PUT", path, content=data, headers=headers))
    assert pushed["upload_status"] == "success"
    events = await stack.events("bento.pushed")
    assert [e["data"]["sha256"] for e in events] == [hashlib.sha256(data).hexdigest()]


# --- 6. one error shape ---------------------------------------------------------------------


async def test_unreadable_bodies_unknown_routes_and_methods_answer_in_the_one_error_shape(
    stack: Stack,
) -> None:
    path = repositories("bento")
    invalid_utf8 = b'{"name": "\xff\xfe"}'
    response = await stack.call("POST", path, content=invalid_utf8, headers=JSON)
    refused(response, 400, "not valid UTF-8")
    for depth in (MAX_JSON_DEPTH + 1, 5000):
        deep = ('{"name": "iris", "labels": ' + "[" * depth + "]" * depth + "}").encode()
        response = await stack.call("POST", path, content=deep, headers=JSON)
        refused(response, 400, "nested too deeply")
    manifest = version_body("bento", "iris", "v1")
    nested: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH):
        nested = {"n": nested}
    manifest["manifest"]["metadata"] = nested
    await ensure_repository(stack, "bento", "iris")
    response = await stack.call("POST", f"{path}/iris/bentos", json=manifest)
    refused(response, 400, "nested too deeply")
    response = await stack.call("POST", path, content=b'{"name": ', headers=JSON)
    refused(response, 422, "body: not valid JSON")

    unknown = await stack.call("GET", "/api/v1/nothing_here")
    refused(unknown, 404, "no such route: GET /api/v1/nothing_here")
    wrong_method = await stack.call("PUT", "/api/v1/auth/current")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET"
    assert wrong_method.json() == {
        "error": {
            "code": "method_not_allowed",
            "message": "method PUT is not allowed on /api/v1/auth/current; allowed: GET",
        }
    }


async def test_the_openapi_document_declares_every_answer_with_its_schema(stack: Stack) -> None:
    document = ok(await stack.client.get("/openapi.json"))
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's `{"detail": ...}` is never sent
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert "422" in responses, where
            for status, response in responses.items():
                content = response.get("content", {})
                if status.startswith(("4", "5")):
                    assert content["application/json"]["schema"] == error_ref, where
                else:
                    schema = next(iter(content.values()))["schema"]
                    assert schema != {}, where  # a typed answer, not a free-form object
            if operation.get("security"):
                assert {"401", "403", "503"} <= responses.keys(), where
            if "{" in path:
                assert "404" in responses, where
            if "requestBody" in operation:
                assert {"400", "413"} <= responses.keys(), where
    upload = document["paths"]["/api/v1/bento_repositories/{name}/bentos/{version}/upload"]
    assert "application/octet-stream" in upload["put"]["requestBody"]["content"]
    creates = ("/api/v1/bento_repositories/{name}/bentos", "/api/v1/api_tokens")
    for path in creates:
        assert "409" in document["paths"][path]["post"]["responses"], path


# --- 7. an abandoned upload fails on its own --------------------------------------------------


async def test_an_upload_not_finished_while_its_urls_are_valid_is_failed_by_the_sweep(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> None:
    settings = registry_settings(
        nats_url, pg_dsn, s3_server, url_expiry=2, upload_grace=1, janitor_poll=0.2
    )
    async with running_stack(
        nats_url, pg_dsn, s3_server, tmp_path / "admin-token", registry=settings
    ) as stack:
        await create_version(stack, "bento", "iris", "v1")
        await create_version(stack, "bento", "iris", "v2")
        for version in ("v1", "v2"):
            ok(await stack.call("PATCH", item("bento", "iris", version, "start_upload")))
        started = await stack.call("PATCH", item("bento", "iris", "v1", "start_multipart_upload"))
        upload_id = ok(started)["upload_id"]
        # v2's upload finishes in time; v1's client went away after starting it.
        signed = ok(await stack.call("PATCH", item("bento", "iris", "v2", "presign_upload_url")))
        assert (await stack.http.put(signed["presigned_upload_url"], content=b"x" * 100)).is_success
        finish = {"status": "success", "reason": ""}
        path = item("bento", "iris", "v2", "finish_upload")
        assert ok(await stack.call("PATCH", path, json=finish))["upload_status"] == "success"

        failed = await failed_with(
            stack, "iris", "v1", "upload abandoned", "while its upload URLs were valid"
        )
        assert failed["upload_id"] is None
        assert (await version_of(stack, "iris", "v2"))["upload_status"] == "success"

        async def aborted() -> bool:
            uploads = await stack.blobs.client.list_multipart_uploads(Bucket=stack.blobs.bucket)
            return upload_id not in {u["UploadId"] for u in uploads.get("Uploads", [])}

        await wait_until(aborted, timeout=30.0)


# --- 8. the last way in -----------------------------------------------------------------------


async def test_the_last_admin_token_cannot_be_revoked_nor_its_admin_demoted(
    stack: Stack,
) -> None:
    tokens = ok(await stack.call("GET", "/api/v1/api_tokens"))["items"]
    (bootstrap,) = tokens
    refusal = refused(
        await stack.call("DELETE", f"/api/v1/api_tokens/{bootstrap['uid']}"),
        409,
        "revoking API token 'bootstrap' would leave organization 'default' with no way in",
    )
    assert "Issue another admin such a token first" in refusal
    demote = {"usernames": ["admin"], "role": "developer"}
    refused(await stack.call("POST", "/api/v1/members", json=demote), 409, "at least one admin")
    # Another admin without a token, or with a read-only token, is no way in either.
    ok(await stack.call("POST", "/api/v1/users", json={"name": "ops", "role": "admin"}))
    refused(await stack.call("POST", "/api/v1/members", json=demote), 409, "no way in")
    body = {"name": "viewer", "scopes": ["read_organization"]}
    ok(await stack.call("POST", "/api/ekiben/v1/users/ops/api_tokens", json=body))
    refused(await stack.call("DELETE", f"/api/v1/api_tokens/{bootstrap['uid']}"), 409)
    # The bootstrap token still works.
    assert ok(await stack.call("GET", "/api/v1/auth/current"))["name"] == "admin"

    # With a second live admin token, either may go, but not both, even at once.
    second = ok(await stack.call("POST", "/api/v1/api_tokens", json={"name": "second"}))
    results = await asyncio.gather(
        stack.call("DELETE", f"/api/v1/api_tokens/{bootstrap['uid']}", second["token"]),
        stack.call("DELETE", f"/api/v1/api_tokens/{second['uid']}"),
    )
    assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
    survivor = second["token"] if results[0].status_code == 200 else stack.admin_token
    assert ok(await stack.call("GET", "/api/v1/auth/current", survivor))["name"] == "admin"
