"""The registry end to end: RPC commands -> PostgreSQL, SeaweedFS and the event stream.

Each test runs the real registry runtime (`services.registry.app.create_runtime`) against
the session's NATS, a fresh database and its own bucket, and calls it over NATS the way
the gateway does. Bytes go straight to SeaweedFS through the presigned URLs it hands out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from services.registry import repository as repo
from services.registry.adapters.s3 import BlobStore
from services.registry.app import create_runtime
from services.registry.janitor import BlobJanitor
from services.registry.service import RegistryService
from services.registry.settings import RegistrySettings
from shared.contracts.registry import (
    COMMANDS,
    MAX_MANIFEST_BYTES,
    CompletedPart,
    CompleteMultipart,
    CreateRepository,
    CreateVersion,
    DeleteResult,
    FinishUpload,
    GetVersion,
    Kind,
    Label,
    ListRepositories,
    ListVersions,
    Page,
    PresignedUrl,
    PresignPart,
    Repository,
    RepositoryRef,
    Scope,
    UpdateRepository,
    UpdateVersion,
    UploadStatus,
    Version,
    VersionRef,
)
from shared.devstack.servers import S3Server
from shared.errors import Conflict, InvalidInput, NotFound, TooLarge
from shared.service import BackendRuntime
from shared.settings import NatsSettings, PostgresSettings, S3Settings
from tests.fixtures.events import stored_events
from tests.fixtures.manifests import bento_manifest, model_manifest

ORG = "default"
COMMANDS_BY_NAME = {command.name: command for command in COMMANDS}
SCOPE = Scope(organization=ORG, actor="alice")
MiB = 1024 * 1024


@dataclass
class Registry:
    runtime: BackendRuntime
    blobs: BlobStore
    nats_url: str

    async def call(self, command: str, request: BaseModel) -> Any:
        """The command of that name over NATS, answered with its contract's reply model."""
        return await self.runtime.rpc.call(COMMANDS_BY_NAME[command], request)

    @property
    def service(self) -> RegistryService:
        """The logic without the bus in front (for what NATS could not carry)."""
        return RegistryService(lambda: self.runtime.pool, self.blobs)

    async def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The events on the stream, oldest first."""
        types = () if event_type is None else (event_type,)
        return await stored_events(self.nats_url, *types)

    async def settled_events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The events, once the outbox has published everything committed so far."""
        await wait_until(self._outbox_empty)
        return await self.events(event_type)

    async def _outbox_empty(self) -> bool:
        unpublished = await self.runtime.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return bool(unpublished == 0)

    async def object_exists(self, key: str) -> bool:
        return await self.blobs.head(key) is not None


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def registry_settings(
    nats_url: str,
    pg_dsn: str,
    s3: S3Server,
    *,
    expiry: int | None = None,
    janitor_poll: float = 30.0,
) -> RegistrySettings:
    s3_settings = S3Settings(
        endpoint_url=s3.url,
        access_key_id=s3.access_key,
        secret_access_key=SecretStr(s3.secret_key),
        bucket=f"t-{uuid.uuid4().hex[:16]}",
    )
    if expiry is not None:
        # Below the production minimum on purpose: the URL must expire within the test.
        s3_settings = s3_settings.model_copy(update={"presigned_url_expiry_seconds": expiry})
    return RegistrySettings(
        nats=NatsSettings(url=nats_url),
        postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
        s3=s3_settings,
        janitor_poll_seconds=janitor_poll,
    )


@contextlib.asynccontextmanager
async def running_registry(settings: RegistrySettings) -> AsyncIterator[Registry]:
    runtime, blobs = create_runtime(settings)
    async with runtime.running():
        yield Registry(runtime, blobs, settings.nats.url)


@pytest.fixture
async def registry(nats_url: str, pg_dsn: str, s3_server: S3Server) -> AsyncIterator[Registry]:
    async with running_registry(registry_settings(nats_url, pg_dsn, s3_server)) as reg:
        yield reg


# --- builders ------------------------------------------------------------------------------


def vref(repository: str, version: str, kind: Kind = Kind.BENTO) -> VersionRef:
    return VersionRef(scope=SCOPE, kind=kind, repository=repository, version=version)


async def make_version(
    reg: Registry,
    repository: str,
    version: str,
    *,
    kind: Kind = Kind.BENTO,
    manifest: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    actor: str = "alice",
    build_at: datetime | None = None,
) -> Version:
    scope = Scope(organization=ORG, actor=actor)
    with contextlib.suppress(Conflict):
        await reg.call(
            "repository.create", CreateRepository(scope=scope, kind=kind, name=repository)
        )
    if manifest is None:
        manifest = bento_manifest(repository) if kind is Kind.BENTO else model_manifest()
    version_obj: Version = await reg.call(
        "version.create",
        CreateVersion(
            scope=scope,
            kind=kind,
            repository=repository,
            version=version,
            manifest=manifest,
            labels=[Label(key=k, value=v) for k, v in (labels or {}).items()],
            build_at=build_at,
        ),
    )
    return version_obj


async def upload(
    reg: Registry, repository: str, version: str, data: bytes, *, kind: Kind = Kind.BENTO
) -> Version:
    """What the client does for a single presigned PUT: presign, start, PUT, finish."""
    ref = vref(repository, version, kind)
    presigned: PresignedUrl = await reg.call("upload.presign", ref)
    await reg.call("upload.start", ref)
    async with httpx.AsyncClient() as http:
        response = await http.put(presigned.url, content=data)
    assert response.status_code == 200, response.text
    finished: Version = await reg.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE, kind=kind, repository=repository, version=version, status="success"
        ),
    )
    return finished


def key_of(repository: str, version: str, kind: Kind = Kind.BENTO) -> str:
    return f"{kind.value}s/{ORG}/{repository}/{version}.tar"


# --- repositories and versions -------------------------------------------------------------


async def test_create_get_and_conflicts(registry: Registry) -> None:
    created: Repository = await registry.call(
        "repository.create",
        CreateRepository(
            scope=SCOPE,
            kind=Kind.BENTO,
            name="iris",
            description="the iris classifier",
            labels=[Label(key="team", value="ml")],
        ),
    )
    assert created.name == "iris"
    assert created.created_by == "alice"
    assert created.labels == [Label(key="team", value="ml")]
    assert 20 <= len(created.uid) <= 32
    assert created.created_at.tzinfo is not None
    assert created.n_versions == 0
    assert created.latest is None

    with pytest.raises(Conflict, match="bento repository iris already exists"):
        await registry.call(
            "repository.create", CreateRepository(scope=SCOPE, kind=Kind.BENTO, name="iris")
        )
    # The same name is free for a model, and in another organization.
    await registry.call(
        "repository.create", CreateRepository(scope=SCOPE, kind=Kind.MODEL, name="iris")
    )
    other = Scope(organization="other", actor="bob")
    await registry.call(
        "repository.create", CreateRepository(scope=other, kind=Kind.BENTO, name="iris")
    )

    # What the client sends: naive UTC.
    naive_build = datetime(2025, 1, 2, 3, 4, 5, 123456)  # noqa: DTZ001
    manifest = bento_manifest(size=4321, models=["clf:abc", "Tok:V2"])
    version: Version = await registry.call(
        "version.create",
        CreateVersion(
            scope=SCOPE,
            kind=Kind.BENTO,
            repository="iris",
            version="v1",
            description="readme",
            manifest=manifest,
            labels=[Label(key="stage", value="dev")],
            build_at=naive_build,
        ),
    )
    assert version.repository == "iris"
    assert version.version == "v1"
    assert version.size_bytes == 4321
    assert version.bentoml_version == "1.4.40"
    assert version.build_at == naive_build.replace(tzinfo=UTC)
    assert version.build_at.tzinfo is not None
    assert version.created_at.tzinfo is not None
    assert version.upload_status is UploadStatus.PENDING
    assert version.upload_finished_reason == ""
    assert version.manifest == manifest
    assert version.models == ["clf:abc", "tok:v2"]
    assert version.created_by == "alice"

    fetched: Version = await registry.call("version.get", vref("iris", "v1"))
    assert fetched == version

    with pytest.raises(Conflict, match="bento iris:v1 already exists"):
        await registry.call(
            "version.create",
            CreateVersion(scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1"),
        )
    with pytest.raises(NotFound, match=r"^bento iris:v9 not found$"):
        await registry.call("version.get", vref("iris", "v9"))
    with pytest.raises(NotFound, match=r"^model iris:v1 not found$"):
        await registry.call("version.get", vref("iris", "v1", Kind.MODEL))
    with pytest.raises(NotFound, match="bento repository nope not found"):
        await registry.call(
            "repository.get", RepositoryRef(scope=SCOPE, kind=Kind.BENTO, name="nope")
        )
    with pytest.raises(NotFound, match="bento repository nope not found"):
        await registry.call(
            "version.create",
            CreateVersion(scope=SCOPE, kind=Kind.BENTO, repository="nope", version="v1"),
        )
    with pytest.raises(InvalidInput, match="'latest' is reserved"):
        await registry.call(
            "version.create",
            CreateVersion(scope=SCOPE, kind=Kind.BENTO, repository="iris", version="latest"),
        )

    repository: Repository = await registry.call(
        "repository.get", RepositoryRef(scope=SCOPE, kind=Kind.BENTO, name="iris")
    )
    assert repository.n_versions == 1
    assert repository.latest == version  # no success yet: the newest version

    updated: Repository = await registry.call(
        "repository.update",
        UpdateRepository(scope=SCOPE, kind=Kind.BENTO, name="iris", description="new"),
    )
    assert updated.description == "new"
    assert updated.labels == [Label(key="team", value="ml")]
    assert updated.updated_at is not None

    changed: Version = await registry.call(
        "version.update",
        UpdateVersion(
            scope=SCOPE,
            kind=Kind.BENTO,
            repository="iris",
            version="v1",
            manifest=bento_manifest(size=99, models=["clf:def"]),
            labels=[Label(key="stage", value="prod")],
        ),
    )
    assert changed.size_bytes == 99
    assert changed.models == ["clf:def"]
    assert changed.labels == [Label(key="stage", value="prod")]
    assert changed.description == "readme"


async def test_invalid_names_are_refused_with_a_clear_message(registry: Registry) -> None:
    # Built without validation, as a caller that skipped the contract would send it.
    bad = CreateRepository.model_construct(
        scope=SCOPE, kind=Kind.BENTO, name="Iris Classifier!", description="", labels=[]
    )
    with pytest.raises(InvalidInput, match=r"name: 'Iris Classifier!' is not a valid name"):
        await registry.call("repository.create", bad)
    too_long = VersionRef.model_construct(
        scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v" * 64
    )
    with pytest.raises(InvalidInput, match="at most 63 characters"):
        await registry.call("version.get", too_long)


async def test_oversized_manifest_is_too_large(registry: Registry) -> None:
    # NATS carries 1 MiB by default, so the limit is checked on the service itself.
    await make_version(registry, "iris", "v1")
    huge = bento_manifest()
    huge["schema"] = {"blob": "x" * MAX_MANIFEST_BYTES}
    service = registry.service
    with pytest.raises(TooLarge, match=r"manifest is .* bytes serialized"):
        await service.create_version(
            CreateVersion(
                scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v2", manifest=huge
            )
        )
    with pytest.raises(TooLarge):
        await service.update_version(
            UpdateVersion(
                scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", manifest=huge
            )
        )
    with pytest.raises(NotFound):
        await registry.call("version.get", vref("iris", "v2"))


# --- uploads -------------------------------------------------------------------------------


async def test_single_presigned_put_then_finish_emits_one_pushed_event(
    registry: Registry,
) -> None:
    await make_version(registry, "clf", "m1", kind=Kind.MODEL)
    await make_version(
        registry,
        "iris",
        "v1",
        manifest=bento_manifest(size=777, models=["clf:m1"]),
        labels={"team": "ml"},
    )
    ref = vref("iris", "v1")
    presigned: PresignedUrl = await registry.call("upload.presign", ref)
    assert presigned.url.startswith(registry.blobs.settings.endpoint_url or "")
    assert presigned.expires_at > datetime.now(UTC) + timedelta(minutes=50)
    started: Version = await registry.call("upload.start", ref)
    assert started.upload_status is UploadStatus.UPLOADING
    assert started.upload_started_at is not None

    data = b"bento archive " * 1000
    async with httpx.AsyncClient() as http:
        put = await http.put(presigned.url, content=data)  # no token, no Content-Type
    assert put.status_code == 200
    # Bytes in the store are not an upload yet: nothing is announced before finish.
    assert await registry.settled_events("bento.pushed") == []
    assert (await registry.call("version.get", ref)).upload_status is UploadStatus.UPLOADING

    finished: Version = await registry.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", status="success"
        ),
    )
    assert finished.upload_status is UploadStatus.SUCCESS
    assert finished.upload_finished_at is not None
    assert finished.upload_finished_at.tzinfo is not None

    await wait_until(lambda: _has_events(registry, "bento.pushed", 1))
    [event] = await registry.settled_events("bento.pushed")
    assert event["source"] == "/ekiben/registry"
    assert event["subject"] == "bentos/default/iris:v1"
    assert event["data"] == {
        "artifact": {"organization": ORG, "name": "iris", "version": "v1"},
        "size_bytes": len(data),
        "sha256": None,
        "object_key": "bentos/default/iris/v1.tar",
        "bentoml_version": "1.4.40",
        "labels": {"team": "ml"},
        "pushed_by": "alice",
        "services": ["Iris"],
        "models": [{"organization": ORG, "name": "clf", "version": "m1"}],
    }

    # A retried finish changes nothing and announces nothing twice.
    again: Version = await registry.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", status="success"
        ),
    )
    assert again == finished
    assert len(await registry.settled_events("bento.pushed")) == 1

    download: PresignedUrl = await registry.call("download.presign", ref)
    async with httpx.AsyncClient() as http:
        got = await http.get(download.url)
    assert got.status_code == 200
    assert got.content == data


async def _has_events(registry: Registry, event_type: str, count: int) -> bool:
    return len(await registry.events(event_type)) >= count


async def test_multipart_upload_with_presigned_parts(registry: Registry) -> None:
    await make_version(registry, "llm", "w1", kind=Kind.MODEL)
    ref = vref("llm", "w1", Kind.MODEL)
    with pytest.raises(InvalidInput, match="upload of model llm:w1 was never started"):
        await registry.call("upload.multipart.start", ref)
    await registry.call("upload.start", ref)
    started: Version = await registry.call("upload.multipart.start", ref)
    assert started.upload_id
    upload_id = started.upload_id

    with pytest.raises(InvalidInput, match="is not the open multipart upload of model llm:w1"):
        await registry.call(
            "upload.multipart.presign_part",
            PresignPart(
                scope=SCOPE,
                kind=Kind.MODEL,
                repository="llm",
                version="w1",
                upload_id="bogus",
                part_number=1,
            ),
        )

    parts_data = [b"a" * (5 * MiB), b"tail of the archive"]
    parts: list[CompletedPart] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for number, chunk in enumerate(parts_data, start=1):
            presigned: PresignedUrl = await registry.call(
                "upload.multipart.presign_part",
                PresignPart(
                    scope=SCOPE,
                    kind=Kind.MODEL,
                    repository="llm",
                    version="w1",
                    upload_id=upload_id,
                    part_number=number,
                ),
            )
            put = await http.put(presigned.url, content=chunk)
            assert put.status_code == 200, put.text
            parts.append(CompletedPart(part_number=number, etag=put.headers["ETag"]))

    completed: Version = await registry.call(
        "upload.multipart.complete",
        CompleteMultipart(
            scope=SCOPE,
            kind=Kind.MODEL,
            repository="llm",
            version="w1",
            upload_id=upload_id,
            parts=list(reversed(parts)),  # the registry sorts them
        ),
    )
    assert completed.upload_status is UploadStatus.UPLOADING  # only finish decides
    assert completed.upload_id is None
    assert await registry.blobs.head(key_of("llm", "w1", Kind.MODEL)) == sum(map(len, parts_data))
    assert await registry.settled_events("model.pushed") == []

    finished: Version = await registry.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE,
            kind=Kind.MODEL,
            repository="llm",
            version="w1",
            status="success",
            expected_size=sum(map(len, parts_data)),
        ),
    )
    assert finished.upload_status is UploadStatus.SUCCESS
    await wait_until(lambda: _has_events(registry, "model.pushed", 1))
    [event] = await registry.settled_events("model.pushed")
    assert event["subject"] == "models/default/llm:w1"
    assert event["data"]["size_bytes"] == 5 * MiB + len(b"tail of the archive")
    assert "services" not in event["data"]

    download: PresignedUrl = await registry.call("download.presign", ref)
    async with httpx.AsyncClient(timeout=60) as http:
        got = await http.get(download.url)
    assert got.content == b"".join(parts_data)


async def test_partial_multipart_then_failed_leaves_nothing(registry: Registry) -> None:
    """The client completes the parts that made it, then reports failure."""
    await make_version(registry, "llm", "w2", kind=Kind.MODEL)
    ref = vref("llm", "w2", Kind.MODEL)
    await registry.call("upload.start", ref)
    started: Version = await registry.call("upload.multipart.start", ref)
    assert started.upload_id is not None
    request = PresignPart(
        scope=SCOPE,
        kind=Kind.MODEL,
        repository="llm",
        version="w2",
        upload_id=started.upload_id,
        part_number=1,
    )
    presigned: PresignedUrl = await registry.call("upload.multipart.presign_part", request)
    async with httpx.AsyncClient(timeout=60) as http:
        put = await http.put(presigned.url, content=b"b" * (5 * MiB))
    await registry.call(
        "upload.multipart.complete",
        CompleteMultipart(
            scope=SCOPE,
            kind=Kind.MODEL,
            repository="llm",
            version="w2",
            upload_id=started.upload_id,
            parts=[CompletedPart(part_number=1, etag=put.headers["ETag"])],
        ),
    )
    assert (await registry.call("version.get", ref)).upload_status is UploadStatus.UPLOADING
    failed: Version = await registry.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE,
            kind=Kind.MODEL,
            repository="llm",
            version="w2",
            status="failed",
            reason="part 2: boom",
        ),
    )
    assert failed.upload_status is UploadStatus.FAILED
    assert failed.upload_finished_reason == "part 2: boom"
    key = key_of("llm", "w2", Kind.MODEL)
    await wait_until(lambda: _gone(registry, key))
    assert await registry.settled_events("model.pushed") == []


async def _gone(registry: Registry, key: str) -> bool:
    return not await registry.object_exists(key)


async def test_failed_upload_aborts_open_multipart_and_deletes_object(registry: Registry) -> None:
    await make_version(registry, "iris", "v1")
    ref = vref("iris", "v1")
    await registry.call("upload.start", ref)
    started: Version = await registry.call("upload.multipart.start", ref)
    upload_id = started.upload_id
    assert upload_id is not None
    await registry.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE,
            kind=Kind.BENTO,
            repository="iris",
            version="v1",
            status="failed",
            reason="x",
        ),
    )

    async def queue_drained() -> bool:
        return bool(
            await registry.runtime.pool.fetchval("SELECT count(*) FROM blob_deletions") == 0
        )

    await wait_until(queue_drained)
    uploads = await registry.blobs.client.list_multipart_uploads(Bucket=registry.blobs.bucket)
    assert [u.get("UploadId") for u in uploads.get("Uploads", [])] == []


async def test_finish_without_start_is_refused_and_changes_nothing(registry: Registry) -> None:
    before = await make_version(registry, "iris", "v1")
    for status in ("success", "failed"):
        with pytest.raises(InvalidInput, match=r"^upload of bento iris:v1 was never started$"):
            await registry.call(
                "upload.finish",
                FinishUpload(
                    scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", status=status
                ),
            )
    after: Version = await registry.call("version.get", vref("iris", "v1"))
    assert after == before
    assert await registry.runtime.pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await registry.runtime.pool.fetchval("SELECT count(*) FROM blob_deletions") == 0


async def test_finish_failed_deletes_the_partial_object_and_emits_nothing(
    registry: Registry,
) -> None:
    await make_version(registry, "iris", "v1")
    ref = vref("iris", "v1")
    presigned: PresignedUrl = await registry.call("upload.presign", ref)
    await registry.call("upload.start", ref)
    async with httpx.AsyncClient() as http:
        await http.put(presigned.url, content=b"half an archive")
    assert await registry.object_exists(key_of("iris", "v1"))
    failed: Version = await registry.call(
        "upload.finish",
        FinishUpload(
            scope=SCOPE,
            kind=Kind.BENTO,
            repository="iris",
            version="v1",
            status="failed",
            reason="network down",
        ),
    )
    assert failed.upload_status is UploadStatus.FAILED
    assert failed.upload_finished_reason == "network down"
    await wait_until(lambda: _gone(registry, key_of("iris", "v1")))
    assert await registry.settled_events() == []
    with pytest.raises(NotFound, match="has no uploaded archive"):
        await registry.call("download.presign", ref)
    with pytest.raises(InvalidInput, match="no upload of bento iris:v1 is in progress"):
        await registry.call(
            "upload.finish",
            FinishUpload(
                scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", status="success"
            ),
        )

    # A new start is allowed after a failure, and this time it works.
    finished = await upload(registry, "iris", "v1", b"the whole archive")
    assert finished.upload_status is UploadStatus.SUCCESS
    assert finished.upload_finished_reason == ""
    assert len(await registry.settled_events("bento.pushed")) == 1


async def test_finish_success_checks_what_arrived(registry: Registry) -> None:
    await make_version(registry, "iris", "v1")
    await make_version(registry, "iris", "v2")
    # Nothing was uploaded.
    await registry.call("upload.start", vref("iris", "v1"))
    with pytest.raises(InvalidInput, match="no archive of bento iris:v1 arrived"):
        await registry.call(
            "upload.finish",
            FinishUpload(
                scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", status="success"
            ),
        )
    assert (
        await registry.call("version.get", vref("iris", "v1"))
    ).upload_status is UploadStatus.FAILED

    # The gateway streamed 10 bytes, the store holds 5.
    ref = vref("iris", "v2")
    presigned: PresignedUrl = await registry.call("upload.presign", ref)
    await registry.call("upload.start", ref)
    async with httpx.AsyncClient() as http:
        await http.put(presigned.url, content=b"12345")
    with pytest.raises(InvalidInput, match="holds 5 bytes, but 10 were sent"):
        await registry.call(
            "upload.finish",
            FinishUpload(
                scope=SCOPE,
                kind=Kind.BENTO,
                repository="iris",
                version="v2",
                status="success",
                expected_size=10,
            ),
        )
    version: Version = await registry.call("version.get", ref)
    assert version.upload_status is UploadStatus.FAILED
    assert "holds 5 bytes" in version.upload_finished_reason
    await wait_until(lambda: _gone(registry, key_of("iris", "v2")))
    assert await registry.settled_events() == []


async def test_forced_re_upload_of_a_successful_version(registry: Registry) -> None:
    """`bentoml push -f`: start again on a success, upload, finish: a second pushed event."""
    await make_version(registry, "iris", "v1")
    await upload(registry, "iris", "v1", b"first")
    again = await upload(registry, "iris", "v1", b"second, longer")
    assert again.upload_status is UploadStatus.SUCCESS
    await wait_until(lambda: _has_events(registry, "bento.pushed", 2))
    sizes = [e["data"]["size_bytes"] for e in await registry.settled_events("bento.pushed")]
    assert sizes == [5, 14]


async def test_latest_alias(registry: Registry) -> None:
    await make_version(registry, "iris", "v1")
    with pytest.raises(NotFound, match="bento iris:latest not found"):
        await registry.call("version.get", vref("iris", "latest"))
    with pytest.raises(NotFound, match="bento iris:latest not found"):
        await registry.call("download.presign", vref("iris", "latest"))
    await upload(registry, "iris", "v1", b"one")
    await make_version(registry, "iris", "v2")
    await upload(registry, "iris", "v2", b"two")
    await make_version(registry, "iris", "v3")  # newer, but never uploaded

    latest: Version = await registry.call("version.get", vref("iris", "latest"))
    assert latest.version == "v2"
    assert latest.repository_detail is None  # only when asked for
    for name in ("latest", "v3"):
        ask = GetVersion(**vref("iris", name).model_dump(), include_repository=True)
        both: Version = await registry.call("version.get", ask)
        assert both.version == {"latest": "v2", "v3": "v3"}[name]
        assert both.repository_detail is not None
        assert both.repository_detail.model_dump(exclude={"n_versions", "latest"}) == (
            (await registry.call("repository.get", RepositoryRef(
                scope=SCOPE, kind=Kind.BENTO, name="iris"
            ))).model_dump(exclude={"n_versions", "latest"})
        )  # fmt: skip
    download: PresignedUrl = await registry.call("download.presign", vref("iris", "latest"))
    assert download.version.version == "v2"
    async with httpx.AsyncClient() as http:
        assert (await http.get(download.url)).content == b"two"

    repository: Repository = await registry.call(
        "repository.get", RepositoryRef(scope=SCOPE, kind=Kind.BENTO, name="iris")
    )
    assert repository.n_versions == 3
    assert repository.latest is not None
    assert repository.latest.version == "v2"  # the newest successful one, not v3

    with pytest.raises(NotFound):
        await registry.call("download.presign", vref("iris", "v3"))


# --- listing -------------------------------------------------------------------------------


def list_versions(**kwargs: Any) -> ListVersions:
    return ListVersions(scope=SCOPE, kind=kwargs.pop("kind", Kind.BENTO), **kwargs)


def names(page: Page[Version]) -> list[str]:
    return [f"{v.repository}:{v.version}" for v in page.items]


async def test_list_filters_sort_and_pages(registry: Registry) -> None:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    specs = [
        # repository, version, size, labels, creator, build day
        ("iris", "v1", 300, {"stage": "prod", "team": "ml"}, "alice", 3),
        ("iris", "v2", 100, {"stage": "dev", "team": "ml"}, "bob", 1),
        ("iris", "v3", 200, {"stage": "prod"}, "alice", 2),
        ("fraud", "a1", 50, {"team": "risk"}, "bob", 5),
        ("fraud-detector", "b1", 999, {}, "carol", 4),
    ]
    for repository, version, size, labels, creator, day in specs:
        await make_version(
            registry,
            repository,
            version,
            manifest=bento_manifest(repository, size=size),
            labels=labels,
            actor=creator,
            build_at=base + timedelta(days=day),
        )
    await upload(registry, "iris", "v1", b"x")

    # Newest first by default, across the organization.
    page: Page[Version] = await registry.call("version.list", list_versions())
    assert names(page) == ["fraud-detector:b1", "fraud:a1", "iris:v3", "iris:v2", "iris:v1"]
    assert (page.total, page.start, page.count) == (5, 0, 5)

    page = await registry.call("version.list", list_versions(repository="iris"))
    assert names(page) == ["iris:v3", "iris:v2", "iris:v1"]
    page = await registry.call("version.list", list_versions(repository="iris", descending=False))
    assert names(page) == ["iris:v1", "iris:v2", "iris:v3"]
    with pytest.raises(NotFound, match="bento repository nope not found"):
        await registry.call("version.list", list_versions(repository="nope"))

    # Sorts.
    page = await registry.call("version.list", list_versions(sort="size"))
    assert names(page) == ["fraud-detector:b1", "iris:v1", "iris:v3", "iris:v2", "fraud:a1"]
    page = await registry.call("version.list", list_versions(sort="build_at", descending=False))
    assert names(page) == ["iris:v2", "iris:v3", "iris:v1", "fraud-detector:b1", "fraud:a1"]
    page = await registry.call("version.list", list_versions(sort="name", descending=False))
    assert names(page) == ["fraud:a1", "fraud-detector:b1", "iris:v1", "iris:v2", "iris:v3"]

    # Filters.
    prod = [Label(key="stage", value="prod")]
    page = await registry.call("version.list", list_versions(labels=prod))
    assert names(page) == ["iris:v3", "iris:v1"]
    both = [Label(key="stage", value="prod"), Label(key="team", value="ml")]
    page = await registry.call("version.list", list_versions(labels=both))
    assert names(page) == ["iris:v1"]
    page = await registry.call("version.list", list_versions(creator="bob"))
    assert names(page) == ["fraud:a1", "iris:v2"]
    page = await registry.call("version.list", list_versions(search="fraud"))
    assert names(page) == ["fraud-detector:b1", "fraud:a1"]
    page = await registry.call("version.list", list_versions(search="IRIS:V"))
    assert names(page) == ["iris:v3", "iris:v2", "iris:v1"]
    page = await registry.call("version.list", list_versions(search="%"))
    assert page.total == 0  # a wildcard is a literal character
    page = await registry.call("version.list", list_versions(upload_status=UploadStatus.SUCCESS))
    assert names(page) == ["iris:v1"]
    page = await registry.call("version.list", list_versions(kind=Kind.MODEL))
    assert page.total == 0

    # Pages.
    first: Page[Version] = await registry.call("version.list", list_versions(count=2))
    second: Page[Version] = await registry.call("version.list", list_versions(start=2, count=2))
    last: Page[Version] = await registry.call("version.list", list_versions(start=4, count=2))
    assert names(first) + names(second) + names(last) == names(
        await registry.call("version.list", list_versions())
    )
    assert (second.total, second.start, second.count) == (5, 2, 2)
    assert (last.total, last.count) == (5, 1)

    # Repositories: counts, latest (successful first), filters, sorts.
    repos: Page[Repository] = await registry.call(
        "repository.list", ListRepositories(scope=SCOPE, kind=Kind.BENTO)
    )
    assert [r.name for r in repos.items] == ["fraud-detector", "fraud", "iris"]
    by_name = {r.name: r for r in repos.items}
    assert by_name["iris"].n_versions == 3
    assert by_name["iris"].latest is not None
    assert by_name["iris"].latest.version == "v1"  # the only successful one
    assert by_name["fraud"].latest is not None
    assert by_name["fraud"].latest.version == "a1"
    repos = await registry.call(
        "repository.list", ListRepositories(scope=SCOPE, kind=Kind.BENTO, search="fraud", count=1)
    )
    assert (repos.total, [r.name for r in repos.items]) == (2, ["fraud-detector"])
    repos = await registry.call(
        "repository.list", ListRepositories(scope=SCOPE, kind=Kind.BENTO, sort="size")
    )
    assert [r.name for r in repos.items] == ["fraud-detector", "iris", "fraud"]
    repos = await registry.call(
        "repository.list",
        ListRepositories(scope=SCOPE, kind=Kind.BENTO, sort="name", descending=False),
    )
    assert [r.name for r in repos.items] == ["fraud", "fraud-detector", "iris"]
    repos = await registry.call(
        "repository.list",
        ListRepositories(scope=SCOPE, kind=Kind.BENTO, upload_status=UploadStatus.SUCCESS),
    )
    assert [r.name for r in repos.items] == ["iris"]
    await registry.call(
        "repository.update",
        UpdateRepository(
            scope=SCOPE, kind=Kind.BENTO, name="fraud", labels=[Label(key="team", value="risk")]
        ),
    )
    repos = await registry.call(
        "repository.list",
        ListRepositories(scope=SCOPE, kind=Kind.BENTO, labels=[Label(key="team", value="risk")]),
    )
    assert [r.name for r in repos.items] == ["fraud"]
    repos = await registry.call(
        "repository.list", ListRepositories(scope=SCOPE, kind=Kind.BENTO, creator="carol")
    )
    assert [r.name for r in repos.items] == ["fraud-detector"]


# --- deletion ------------------------------------------------------------------------------


async def test_delete_version_and_repository(registry: Registry) -> None:
    await make_version(registry, "clf", "m1", kind=Kind.MODEL)
    await upload(registry, "clf", "m1", b"model", kind=Kind.MODEL)
    await make_version(registry, "iris", "v1", manifest=bento_manifest(models=["clf:m1"]))
    await upload(registry, "iris", "v1", b"bento one")
    await make_version(registry, "iris", "v2")
    await upload(registry, "iris", "v2", b"bento two")
    await make_version(registry, "iris", "v3")  # never uploaded

    # A model a bento uses stays.
    with pytest.raises(Conflict, match="model clf:m1 is used by bento iris:v1"):
        await registry.call("version.delete", vref("clf", "m1", Kind.MODEL))
    with pytest.raises(Conflict, match="model repository clf is used by bento iris:v1"):
        await registry.call(
            "repository.delete", RepositoryRef(scope=SCOPE, kind=Kind.MODEL, name="clf")
        )

    result: DeleteResult = await registry.call("version.delete", vref("iris", "v2"))
    assert result.deleted_versions == 1
    with pytest.raises(NotFound, match="bento iris:v2 not found"):
        await registry.call("version.get", vref("iris", "v2"))
    await wait_until(lambda: _gone(registry, key_of("iris", "v2")))
    assert await registry.object_exists(key_of("iris", "v1"))
    with pytest.raises(NotFound):
        await registry.call("version.delete", vref("iris", "v2"))

    result = await registry.call(
        "repository.delete", RepositoryRef(scope=SCOPE, kind=Kind.BENTO, name="iris")
    )
    assert result.deleted_versions == 2
    await wait_until(lambda: _gone(registry, key_of("iris", "v1")))
    with pytest.raises(NotFound):
        await registry.call(
            "repository.get", RepositoryRef(scope=SCOPE, kind=Kind.BENTO, name="iris")
        )
    pool = registry.runtime.pool
    assert await pool.fetchval("SELECT count(*) FROM versions WHERE kind = 'bento'") == 0
    assert await pool.fetchval("SELECT count(*) FROM bento_models") == 0

    # Now nothing uses the model.
    await registry.call("version.delete", vref("clf", "m1", Kind.MODEL))
    await wait_until(lambda: _gone(registry, key_of("clf", "m1", Kind.MODEL)))
    await wait_until(lambda: _queue_empty(registry))

    deleted = [
        (e["type"], e["subject"], e["data"]["deleted_by"])
        for e in await registry.settled_events()
        if e["type"].endswith(".deleted")
    ]
    assert deleted == [
        ("bento.deleted", "bentos/default/iris:v2", "alice"),
        ("bento.deleted", "bentos/default/iris:v1", "alice"),
        ("bento.deleted", "bentos/default/iris:v3", "alice"),
        ("bento.deleted", "bentos/default/iris:*", "alice"),
        ("model.deleted", "models/default/clf:m1", "alice"),
    ]


async def _queue_empty(registry: Registry) -> bool:
    return bool(await registry.runtime.pool.fetchval("SELECT count(*) FROM blob_deletions") == 0)


async def test_a_new_upload_cancels_a_queued_deletion_of_its_key(
    nats_url: str, pg_dsn: str, s3_server: S3Server
) -> None:
    """An old deletion must never remove the archive of a new upload to the same key."""
    settings = registry_settings(nats_url, pg_dsn, s3_server, janitor_poll=0.2)
    async with running_registry(settings) as registry:
        await _new_upload_cancels_deletion(registry)


async def _new_upload_cancels_deletion(registry: Registry) -> None:
    pool = registry.runtime.pool
    await make_version(registry, "iris", "v1")
    key = key_of("iris", "v1")
    # As a version.delete + version.create of the same tag would leave them, held back.
    await pool.execute(
        """INSERT INTO blob_deletions (object_key, upload_id, reason, not_before)
           VALUES ($1, NULL, 'old', now() + interval '1 hour'),
                  ($1, 'an-old-multipart-upload', 'old', now() + interval '1 hour')""",
        key,
    )
    await upload(registry, "iris", "v1", b"new archive")
    rows = await pool.fetch("SELECT upload_id FROM blob_deletions")
    assert [r["upload_id"] for r in rows] == ["an-old-multipart-upload"]  # aborts stay
    await pool.execute("UPDATE blob_deletions SET not_before = now()")
    await wait_until(lambda: _queue_empty(registry))  # the janitor's next poll
    assert await registry.blobs.head(key) == len(b"new archive")

    # Deleted and created again: the old archive still goes, the new version starts empty.
    await registry.call("version.delete", vref("iris", "v1"))
    await make_version(registry, "iris", "v1")
    await wait_until(lambda: _gone(registry, key))


async def test_janitor_postpones_a_failed_deletion_and_retries_it(
    registry: Registry, s3_server: S3Server
) -> None:
    pool = registry.runtime.pool
    await make_version(registry, "iris", "v1")
    await upload(registry, "iris", "v1", b"archive")
    key = key_of("iris", "v1")
    # The registry's own janitor is idle (nothing queued through it); this one runs by hand.
    await pool.execute("INSERT INTO blob_deletions (object_key, reason) VALUES ($1, 'test')", key)
    broken = BlobStore(
        registry.blobs.settings.model_copy(
            update={"bucket": "no-such-bucket-" + uuid.uuid4().hex[:8]}
        )
    )
    async with broken:
        assert await BlobJanitor(lambda: pool, broken).run_once() == 0
    row = await pool.fetchrow(
        "SELECT attempts, last_error, not_before > now() AS later FROM blob_deletions"
    )
    assert row is not None
    assert row["attempts"] == 1
    assert "NoSuchBucket" in row["last_error"]
    assert row["later"]
    assert await registry.object_exists(key)

    await pool.execute("UPDATE blob_deletions SET not_before = now()")
    assert await BlobJanitor(lambda: pool, registry.blobs).run_once() == 1
    assert await pool.fetchval("SELECT count(*) FROM blob_deletions") == 0
    assert not await registry.object_exists(key)


async def test_abandoned_uploads_are_failed_and_cleaned(registry: Registry) -> None:
    await make_version(registry, "iris", "v1")
    ref = vref("iris", "v1")
    await registry.call("upload.start", ref)
    started: Version = await registry.call("upload.multipart.start", ref)
    assert started.upload_id is not None
    # Within the lifetime of its URLs (one hour and the grace): not abandoned yet.
    soon = datetime.now(UTC) + timedelta(minutes=30)
    assert await registry.service.fail_abandoned_uploads(soon) == 0
    later = datetime.now(UTC) + timedelta(hours=1, minutes=6)
    assert await registry.service.fail_abandoned_uploads(later) == 1
    version: Version = await registry.call("version.get", ref)
    assert version.upload_status is UploadStatus.FAILED
    assert version.upload_finished_reason.startswith("upload abandoned")
    assert version.upload_id is None
    rows = await registry.runtime.pool.fetch("SELECT object_key, upload_id FROM blob_deletions")
    assert sorted((r["object_key"], r["upload_id"] or "") for r in rows) == [
        (key_of("iris", "v1"), ""),
        (key_of("iris", "v1"), started.upload_id),
    ]


# --- presigned URLs ------------------------------------------------------------------------


async def test_expired_or_tampered_presigned_urls_are_refused(
    nats_url: str, pg_dsn: str, s3_server: S3Server
) -> None:
    settings = registry_settings(nats_url, pg_dsn, s3_server, expiry=2)
    async with running_registry(settings) as reg:
        await make_version(reg, "iris", "v1")
        ref = vref("iris", "v1")
        put_url: PresignedUrl = await reg.call("upload.presign", ref)
        await reg.call("upload.start", ref)
        async with httpx.AsyncClient() as http:
            # Another key under the same signature.
            tampered = put_url.url.replace("/v1.tar?", "/v2.tar?")
            assert tampered != put_url.url
            assert (await http.put(tampered, content=b"evil")).status_code == 403
            # A changed signature.
            signature = put_url.url.split("X-Amz-Signature=")[1][:64]
            forged = put_url.url.replace(signature, "0" * 64)
            assert (await http.put(forged, content=b"evil")).status_code == 403
            assert (await http.put(put_url.url, content=b"good")).status_code == 200
        await reg.call(
            "upload.finish",
            FinishUpload(
                scope=SCOPE, kind=Kind.BENTO, repository="iris", version="v1", status="success"
            ),
        )
        get_url: PresignedUrl = await reg.call("download.presign", ref)
        async with httpx.AsyncClient() as http:
            assert (await http.get(get_url.url)).content == b"good"
            longer = get_url.url.replace("X-Amz-Expires=2", "X-Amz-Expires=3600")
            assert (await http.get(longer)).status_code == 403
            await asyncio.sleep(3.5)
            assert (await http.get(get_url.url)).status_code == 403
            assert (await http.put(put_url.url, content=b"late")).status_code == 403
        assert await reg.blobs.head(key_of("iris", "v1")) == len(b"good")


# --- scale ---------------------------------------------------------------------------------


async def seed(registry: Registry, repositories: int, per_repository: int) -> None:
    """`repositories` x `per_repository` versions straight into the tables."""
    pool = registry.runtime.pool
    await pool.execute(
        """INSERT INTO repositories (kind, organization, name, labels, created_by, created_at)
           SELECT 'bento', $1, 'repo-' || r, jsonb_build_object('team', 'team-' || (r % 10)),
                  'user-' || (r % 7), now() - make_interval(secs => 100000 - r)
           FROM generate_series(1, $2) AS r""",
        ORG,
        repositories,
    )
    await pool.execute(
        """INSERT INTO versions (repository_id, kind, organization, repository, version,
                                 manifest, labels, size_bytes, bentoml_version, build_at,
                                 created_by, created_at, upload_status, object_key)
           SELECT r.id, 'bento', r.organization, r.name, 'v' || n, '{"spec": 2}'::jsonb,
                  jsonb_build_object('stage', CASE WHEN n % 3 = 0 THEN 'prod' ELSE 'dev' END,
                                     'batch', 'b' || (n % 50)),
                  (n * 7919) % 100000, '1.4.40', now() - make_interval(secs => n),
                  'user-' || (n % 13), now() - make_interval(secs => 10000 - n),
                  CASE WHEN n % 4 = 0 THEN 'failed' ELSE 'success' END,
                  'bentos/' || r.organization || '/' || r.name || '/v' || n || '.tar'
           FROM repositories r CROSS JOIN generate_series(1, $1) AS n""",
        per_repository,
    )
    await pool.execute("ANALYZE")


class RecordingConnection:
    """Runs queries on a connection and keeps their text, to EXPLAIN them afterwards."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.queries: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.queries.append((sql, args))
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.queries.append((sql, args))
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.queries.append((sql, args))
        return await self.conn.fetchval(sql, *args)


async def test_reads_stay_fast_with_10000_versions(registry: Registry) -> None:
    await seed(registry, repositories=100, per_repository=100)
    assert await registry.runtime.pool.fetchval("SELECT count(*) FROM versions") == 10_000
    prod = [Label(key="stage", value="prod")]

    # Every page query is an index scan in the requested order (no scan of all versions
    # and sort); only the totals count the matching rows.
    async with registry.runtime.pool.acquire() as conn:
        recorder = RecordingConnection(conn)
        db = cast(Any, recorder)
        await repo.get_version(db, Kind.BENTO, ORG, "repo-42", "v17")
        await repo.latest_successful_version(db, Kind.BENTO, ORG, "repo-42")
        await repo.list_versions(db, list_versions(), repository_id=None)
        await repo.list_versions(db, list_versions(labels=prod, count=50), repository_id=None)
        await repo.list_versions(db, list_versions(creator="user-3"), repository_id=None)
        await repo.list_versions(db, list_versions(sort="size", start=500), repository_id=None)
        await repo.list_versions(db, list_versions(sort="build_at"), repository_id=None)
        repository_id = await conn.fetchval("SELECT id FROM repositories WHERE name = 'repo-9'")
        await repo.list_versions(db, list_versions(sort="size"), repository_id=repository_id)
        await repo.list_versions(db, list_versions(descending=False), repository_id=repository_id)
        _, rows = await repo.list_repositories(db, ListRepositories(scope=SCOPE, kind=Kind.BENTO))
        await repo.latest_versions(db, [row.id for row in rows])
        for sql, args in recorder.queries:
            if sql.lstrip().startswith("SELECT count(*)"):
                continue
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            assert "Seq Scan on versions" not in plan, f"{sql}\n{plan}"
            assert "Index Scan" in plan, f"{sql}\n{plan}"

    # And through the bus, end to end (generous bounds: CI machines are busy).
    calls: list[tuple[str, str, BaseModel]] = [
        ("get one version", "version.get", vref("repo-42", "v17")),
        ("get latest", "version.get", vref("repo-42", "latest")),
        ("list a repository", "version.list", list_versions(repository="repo-42")),
        ("list the organization", "version.list", list_versions()),
        ("label filter", "version.list", list_versions(labels=prod, count=50)),
        ("name substring", "version.list", list_versions(search="repo-7:v1")),
        ("creator", "version.list", list_versions(creator="user-3")),
        ("by size", "version.list", list_versions(sort="size", start=500)),
        ("by build", "version.list", list_versions(repository="repo-9", sort="build_at")),
        ("repositories", "repository.list", ListRepositories(scope=SCOPE, kind=Kind.BENTO)),
        (
            "repositories by size",
            "repository.list",
            ListRepositories(scope=SCOPE, kind=Kind.BENTO, sort="size"),
        ),
    ]
    timings: dict[str, float] = {}
    for label, command, request in calls:
        await registry.call(command, request)  # warm
        begin = time.perf_counter()
        for _ in range(5):
            result = await registry.call(command, request)
        timings[label] = (time.perf_counter() - begin) / 5
        if isinstance(result, Page):
            assert result.items, label
    print("registry timings:", {k: f"{v * 1000:.1f} ms" for k, v in timings.items()})
    assert max(timings.values()) < 0.5, timings

    latest: Version = await registry.call("version.get", vref("repo-42", "latest"))
    assert latest.version == "v99"  # v100 failed; the newest success
    repos: Page[Repository] = await registry.call(
        "repository.list", ListRepositories(scope=SCOPE, kind=Kind.BENTO, count=3)
    )
    assert repos.total == 100
    assert [r.name for r in repos.items] == ["repo-100", "repo-99", "repo-98"]
    assert all(r.n_versions == 100 for r in repos.items)
    assert [r.latest.version for r in repos.items if r.latest] == ["v99", "v99", "v99"]


async def test_presigned_urls_name_the_public_endpoint(s3_server: S3Server) -> None:
    """Behind an ingress: the URL names the public host, and its signature covers it."""
    public = "http://s3.ekiben.example:9000"
    settings = S3Settings(
        endpoint_url=s3_server.url,
        public_endpoint_url=public,
        access_key_id=s3_server.access_key,
        secret_access_key=SecretStr(s3_server.secret_key),
        bucket=f"t-{uuid.uuid4().hex[:16]}",
    )
    async with BlobStore(settings) as blobs:
        await blobs.ensure_bucket()
        presigned = await blobs.presign_put("bentos/default/iris/v1.tar")
        assert presigned.url.startswith(f"{public}/{settings.bucket}/bentos/default/iris/v1.tar?")
        # What the ingress does: forward to the store, keeping the Host the client used.
        direct = presigned.url.replace(public, s3_server.url)
        async with httpx.AsyncClient() as http:
            ok = await http.put(direct, content=b"x", headers={"Host": "s3.ekiben.example:9000"})
            assert ok.status_code == 200, ok.text
            wrong_host = await http.put(direct, content=b"x")
            assert wrong_host.status_code == 403
        assert await blobs.head("bentos/default/iris/v1.tar") == 1
