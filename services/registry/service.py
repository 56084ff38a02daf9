"""The registry's logic: repositories, versions and the upload state machine.

A version is a row plus, once uploaded, one archive in the object store at
`bentos/{org}/{name}/{version}.tar` (or `models/...`). Its upload moves through

    pending --start--> uploading --finish(success)--> success
                           |  ^---------start--------- success | failed
                           +--finish(failed) / bad finish--> failed

`start` may come again at any point: after a failure, after a crash, and on a successful
version when the client pushes with `-f`. Only `finish(success)` makes a version
`success`, after a HEAD shows the archive is there (and, when the gateway streamed it, has
the size it sent); the `bento.pushed`/`model.pushed` event commits in that same
transaction through the outbox. Completing a multipart upload assembles the object but
decides nothing: the client completes even a partial part list before it reports failure.

Blobs are never deleted inline. A transaction that drops a version, fails an upload or
replaces an open multipart upload queues the object-store work in `blob_deletions`; the
janitor (`services.registry.janitor`) does it after the commit and retries until it
succeeds. `start` cancels a queued deletion of its key, waiting for one in progress, so an
old deletion (of a failed upload, or of a deleted namesake) never removes a new archive.

Decisions:
- `latest` in `version.get` and `download.presign` names the newest (by creation)
  successfully uploaded version; it is therefore reserved and cannot be created.
- A model version that a bento's manifest names cannot be deleted (Conflict), nor can its
  repository: delete the bentos first.
- Deleting a repository emits one deleted event per version, then one with version `*`
  for the repository itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from services.registry import repository as repo
from services.registry.adapters.s3 import BlobStore, Presigned
from services.registry.repository import BlobDeletion, RepositoryRow, VersionRow
from shared.contracts.registry import (
    MAX_MANIFEST_BYTES,
    TAG_PART,
    CompleteMultipart,
    CreateRepository,
    CreateVersion,
    DeleteResult,
    FinishUpload,
    GetVersion,
    Kind,
    ListRepositories,
    ListVersions,
    Page,
    PresignDownload,
    PresignedUrl,
    PresignPart,
    Repository,
    RepositoryRef,
    UpdateRepository,
    UpdateVersion,
    UploadStatus,
    Version,
    VersionRef,
    labels_to_dict,
)
from shared.db import Connection, Pool
from shared.errors import Conflict, EkibenError, InvalidInput, NotFound, TooLarge
from shared.events import ArtifactRef, BentoDeleted, BentoPushed, Event, ModelDeleted, ModelPushed
from shared.events.types import ArtifactDeletedData, ArtifactPushedData, BentoPushedData
from shared.logging import get_logger
from shared.outbox import write_event, write_events

log = get_logger(__name__)

SOURCE = "/ekiben/registry"
LATEST = "latest"


def object_key(kind: Kind, organization: str, name: str, version: str) -> str:
    return f"{kind.value}s/{organization}/{name}/{version}.tar"


def _tag(name: str, version: str) -> str:
    return f"{name}:{version}"


def _event_subject(kind: Kind, organization: str, name: str, version: str) -> str:
    return f"{kind.value}s/{organization}/{name}:{version}"


# --- the manifest ------------------------------------------------------------------------


def check_manifest_size(manifest: dict[str, Any] | None) -> None:
    if manifest is None:
        return
    size = len(json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_MANIFEST_BYTES:
        raise TooLarge(
            f"manifest is {size} bytes serialized; the limit is {MAX_MANIFEST_BYTES} bytes"
        )


def _size_bytes(manifest: dict[str, Any]) -> int:
    value = manifest.get("size_bytes")
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidInput("manifest.size_bytes must be a non-negative integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise InvalidInput("manifest.size_bytes must be a non-negative integer")
    return value


def _parse_tag(value: object) -> tuple[str, str] | None:
    if isinstance(value, dict):
        value = value.get("tag")
    if not isinstance(value, str) or ":" not in value:
        return None
    name, version = value.strip().lower().split(":", 1)
    if not (TAG_PART.match(name) and TAG_PART.match(version)):
        return None
    return name, version


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def manifest_models(manifest: dict[str, Any] | None) -> set[tuple[str, str]]:
    """The model tags a bento manifest names: `models` and `services[].models[].tag`."""
    if manifest is None:
        return set()
    found: set[tuple[str, str]] = set()
    models = manifest.get("models")
    for item in models if isinstance(models, list) else []:
        if (tag := _parse_tag(item)) is not None:
            found.add(tag)
    for service in _dicts(manifest.get("services")):
        for model in _dicts(service.get("models")):
            if (tag := _parse_tag(model)) is not None:
                found.add(tag)
    return found


def manifest_services(manifest: dict[str, Any] | None) -> list[str]:
    if manifest is None:
        return []
    return [s["name"] for s in _dicts(manifest.get("services")) if isinstance(s.get("name"), str)]


def _bentoml_version(manifest: dict[str, Any]) -> str | None:
    value = manifest.get("bentoml_version")
    return None if value is None else str(value)


def _utc(value: datetime | None) -> datetime:
    """The client sends naive UTC (`YYYY-MM-DD HH:MM:SS.ffffff`); store it aware."""
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# --- the service ---------------------------------------------------------------------------


class RegistryService:
    """One method per command in `shared.contracts.registry.COMMANDS`."""

    def __init__(
        self,
        pool: Callable[[], Pool],
        blobs: BlobStore,
        *,
        on_blobs_queued: Callable[[], None] = lambda: None,
        upload_grace_seconds: float = 300.0,
    ) -> None:
        self._pool = pool
        self._blobs = blobs
        self._blobs_queued = on_blobs_queued
        self._grace = timedelta(seconds=upload_grace_seconds)

    def _deadline(self, url_expires_at: datetime) -> datetime:
        """When an upload whose last URL expires at `url_expires_at` counts as abandoned."""
        return url_expires_at + self._grace

    async def _extend_deadline(self, row: VersionRow, presigned: Presigned) -> None:
        if row.upload_status is UploadStatus.UPLOADING:
            async with self._pool().acquire() as conn:
                await repo.extend_upload_deadline(
                    conn, row.id, self._deadline(presigned.expires_at)
                )

    # --- repositories ----------------------------------------------------------------------

    async def _repository(self, conn: Connection, row: RepositoryRow) -> Repository:
        counts = await repo.version_counts(conn, [row.id])
        latest = await repo.latest_versions(conn, [row.id])
        return row.contract(n_versions=counts.get(row.id, 0), latest=latest.get(row.id))

    async def get_repository(self, ref: RepositoryRef) -> Repository:
        async with self._pool().acquire() as conn:
            row = await repo.get_repository(conn, ref.kind, ref.scope.organization, ref.name)
            if row is None:
                raise NotFound(f"{ref.kind} repository {ref.name} not found")
            return await self._repository(conn, row)

    async def create_repository(self, req: CreateRepository) -> Repository:
        async with self._pool().acquire() as conn:
            row = await repo.insert_repository(
                conn,
                kind=req.kind,
                organization=req.scope.organization,
                name=req.name,
                description=req.description,
                labels=labels_to_dict(req.labels),
                created_by=req.scope.actor,
            )
        if row is None:
            raise Conflict(f"{req.kind} repository {req.name} already exists")
        return row.contract(n_versions=0)

    async def update_repository(self, req: UpdateRepository) -> Repository:
        labels = labels_to_dict(req.labels) if req.labels is not None else None
        async with self._pool().acquire() as conn, conn.transaction():
            row = await repo.get_repository(
                conn, req.kind, req.scope.organization, req.name, lock="update"
            )
            if row is None:
                raise NotFound(f"{req.kind} repository {req.name} not found")
            row = await repo.update_repository(
                conn, row.id, description=req.description, labels=labels
            )
            return await self._repository(conn, row)

    async def list_repositories(self, req: ListRepositories) -> Page[Repository]:
        async with self._pool().acquire() as conn:
            total, rows = await repo.list_repositories(conn, req)
            ids = [row.id for row in rows]
            counts = await repo.version_counts(conn, ids)
            latest = await repo.latest_versions(conn, ids)
        items = [r.contract(n_versions=counts.get(r.id, 0), latest=latest.get(r.id)) for r in rows]
        return Page[Repository](start=req.start, count=len(items), total=total, items=items)

    async def delete_repository(self, ref: RepositoryRef) -> DeleteResult:
        org = ref.scope.organization
        async with self._pool().acquire() as conn, conn.transaction():
            row = await repo.get_repository(conn, ref.kind, org, ref.name, lock="update")
            if row is None:
                raise NotFound(f"{ref.kind} repository {ref.name} not found")
            if ref.kind is Kind.MODEL:
                users = await repo.bentos_using(conn, org, ref.name, None)
                if users:
                    raise Conflict(
                        f"model repository {ref.name} is used by bento {', '.join(users)}:"
                        " delete those bentos first"
                    )
            versions = await repo.versions_of_repository(conn, row.id)
            deletions = [
                d
                for v in versions
                for d in _blob_work(v.object_key, v.upload_id, "repository deleted")
            ]
            await repo.queue_blob_deletions(conn, deletions)
            await repo.delete_repository(conn, row.id)
            names = [v.version for v in versions] + ["*"]
            await write_events(conn, [_deleted(ref.kind, org, ref.name, n, ref) for n in names])
        self._after_queue(deletions)
        log.info(
            "registry.repository.deleted", kind=ref.kind, name=ref.name, versions=len(versions)
        )
        return DeleteResult(deleted_versions=len(versions))

    # --- versions --------------------------------------------------------------------------

    async def _version_row(
        self,
        conn: Connection,
        ref: VersionRef,
        *,
        for_update: bool = False,
        with_repository: bool = False,
    ) -> VersionRow:
        row = await repo.get_version(
            conn,
            ref.kind,
            ref.scope.organization,
            ref.repository,
            ref.version,
            for_update=for_update,
            with_repository=with_repository,
        )
        if row is None:
            raise NotFound(f"{ref.kind} {_tag(ref.repository, ref.version)} not found")
        return row

    async def _resolve(
        self, conn: Connection, ref: VersionRef, *, with_repository: bool = False
    ) -> VersionRow:
        """The version, with `latest` naming the newest successfully uploaded one."""
        if ref.version != LATEST:
            return await self._version_row(conn, ref, with_repository=with_repository)
        row = await repo.latest_successful_version(
            conn,
            ref.kind,
            ref.scope.organization,
            ref.repository,
            with_repository=with_repository,
        )
        if row is None:
            raise NotFound(
                f"{ref.kind} {_tag(ref.repository, LATEST)} not found:"
                f" no version of {ref.repository} has been uploaded"
            )
        return row

    async def get_version(self, ref: GetVersion) -> Version:
        async with self._pool().acquire() as conn:
            row = await self._resolve(conn, ref, with_repository=ref.include_repository)
        return row.contract()

    async def create_version(self, req: CreateVersion) -> Version:
        if req.version == LATEST:
            raise InvalidInput(
                f"version {LATEST!r} is reserved: it names the newest uploaded version"
            )
        check_manifest_size(req.manifest)
        manifest = req.manifest
        size = _size_bytes(manifest) if manifest is not None else 0
        bentoml_version = _bentoml_version(manifest) if manifest is not None else None
        org = req.scope.organization
        key = object_key(req.kind, org, req.repository, req.version)
        async with self._pool().acquire() as conn, conn.transaction():
            repository = await repo.get_repository(
                conn, req.kind, org, req.repository, lock="key share"
            )
            if repository is None:
                raise NotFound(f"{req.kind} repository {req.repository} not found")
            version_id = await repo.insert_version(
                conn,
                repository=repository,
                version=req.version,
                description=req.description,
                manifest=manifest,
                labels=labels_to_dict(req.labels),
                size_bytes=size,
                bentoml_version=bentoml_version,
                build_at=_utc(req.build_at),
                created_by=req.scope.actor,
                object_key=key,
            )
            if version_id is None:
                raise Conflict(f"{req.kind} {_tag(req.repository, req.version)} already exists")
            if req.kind is Kind.BENTO:
                await repo.replace_bento_models(conn, version_id, org, manifest_models(manifest))
            # A deleted namesake's archive may still be queued for deletion: it goes on, so
            # the new version never shows old bytes; `start` cancels it before an upload.
            row = await repo.get_version_by_id(conn, version_id)
        return row.contract()

    async def update_version(self, req: UpdateVersion) -> Version:
        check_manifest_size(req.manifest)
        labels = labels_to_dict(req.labels) if req.labels is not None else None
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._version_row(conn, req, for_update=True)
            manifest = req.manifest
            await repo.update_version(
                conn,
                row.id,
                description=req.description,
                manifest=manifest,
                size_bytes=_size_bytes(manifest) if manifest is not None else None,
                bentoml_version=_bentoml_version(manifest) if manifest is not None else None,
                labels=labels,
            )
            if manifest is not None and req.kind is Kind.BENTO:
                await repo.replace_bento_models(
                    conn, row.id, req.scope.organization, manifest_models(manifest)
                )
            return (await repo.get_version_by_id(conn, row.id)).contract()

    async def list_versions(self, req: ListVersions) -> Page[Version]:
        async with self._pool().acquire() as conn:
            repository_id = None
            if req.repository is not None:
                repository = await repo.get_repository(
                    conn, req.kind, req.scope.organization, req.repository
                )
                if repository is None:
                    raise NotFound(f"{req.kind} repository {req.repository} not found")
                repository_id = repository.id
            total, rows = await repo.list_versions(
                conn, req, repository_id=repository_id, with_repository=req.include_repository
            )
            latest: dict[int, VersionRow] = {}
            if req.include_repository:
                latest = await repo.latest_versions(conn, sorted({r.repository_id for r in rows}))
        items = [_with_latest(row, latest) for row in rows]
        return Page[Version](start=req.start, count=len(items), total=total, items=items)

    async def delete_version(self, ref: VersionRef) -> DeleteResult:
        org, tag = ref.scope.organization, _tag(ref.repository, ref.version)
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._version_row(conn, ref, for_update=True)
            if ref.kind is Kind.MODEL:
                users = await repo.bentos_using(conn, org, ref.repository, ref.version)
                if users:
                    raise Conflict(
                        f"model {tag} is used by bento {', '.join(users)}:"
                        " delete those bentos first"
                    )
            deletions = _blob_work(row.object_key, row.upload_id, "version deleted")
            await repo.queue_blob_deletions(conn, deletions)
            await repo.delete_version(conn, row.id)
            await write_event(conn, _deleted(ref.kind, org, ref.repository, ref.version, ref))
        self._after_queue(deletions)
        log.info("registry.version.deleted", kind=ref.kind, tag=tag)
        return DeleteResult(deleted_versions=1)

    # --- uploads ---------------------------------------------------------------------------

    async def start_upload(self, ref: VersionRef) -> Version:
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._version_row(conn, ref, for_update=True)
            await repo.cancel_object_deletion(conn, row.object_key)
            deletions = _abort_work(row, "superseded by a new upload")
            await repo.queue_blob_deletions(conn, deletions)
            # The client asks for its URLs next: each one signed extends the deadline.
            expires = datetime.now(UTC) + timedelta(seconds=self._blobs.expiry_seconds)
            await repo.start_upload(conn, row.id, self._deadline(expires))
            result = await repo.get_version_by_id(conn, row.id)
        self._after_queue(deletions)
        return result.contract()

    async def presign_upload(self, ref: VersionRef) -> PresignedUrl:
        # Any state: the client asks for the URL before it starts the upload.
        async with self._pool().acquire() as conn:
            row = await self._version_row(conn, ref)
        presigned = await self._blobs.presign_put(row.object_key)
        await self._extend_deadline(row, presigned)
        return _presigned(presigned, row)

    async def presign_proxy_upload(self, ref: VersionRef) -> PresignedUrl:
        """Where the gateway streams a proxied upload: only while one is in progress, so
        no byte reaches the store for a version whose finish would then refuse it (or,
        on an uploaded version, keep the replaced bytes)."""
        async with self._pool().acquire() as conn:
            row = await self._version_row(conn, ref)
        _require_uploading(ref, row, hint="send start_upload first")
        presigned = await self._blobs.presign_put(row.object_key)
        await self._extend_deadline(row, presigned)
        return _presigned(presigned, row)

    async def start_multipart(self, ref: VersionRef) -> Version:
        async with self._pool().acquire() as conn:
            row = await self._version_row(conn, ref)
        _require_uploading(ref, row)
        upload_id = await self._blobs.create_multipart_upload(row.object_key)
        try:
            async with self._pool().acquire() as conn, conn.transaction():
                row = await self._version_row(conn, ref, for_update=True)
                _require_uploading(ref, row)
                deletions = _abort_work(row, "superseded by a new multipart upload")
                await repo.queue_blob_deletions(conn, deletions)
                await repo.set_upload_id(conn, row.id, upload_id)
                result = await repo.get_version_by_id(conn, row.id)
        except Exception:
            # Not recorded anywhere: drop it now rather than leave its parts behind.
            try:
                await self._blobs.abort_multipart_upload(row.object_key, upload_id)
            except Exception as exc:  # noqa: BLE001 - the first error is the one to report
                log.warning("registry.multipart.orphaned", upload_id=upload_id, error=repr(exc))
            raise
        self._after_queue(deletions)
        return result.contract()

    async def presign_part(self, req: PresignPart) -> PresignedUrl:
        async with self._pool().acquire() as conn:
            row = await self._version_row(conn, req)
        _require_uploading(req, row)
        _require_upload_id(req, row, req.upload_id)
        presigned = await self._blobs.presign_upload_part(
            row.object_key, req.upload_id, req.part_number
        )
        await self._extend_deadline(row, presigned)
        return _presigned(presigned, row)

    async def complete_multipart(self, req: CompleteMultipart) -> Version:
        parts = sorted((p.part_number, p.etag) for p in req.parts)
        numbers = [n for n, _ in parts]
        if len(set(numbers)) != len(numbers):
            raise InvalidInput("parts: each part number may appear only once")
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._version_row(conn, req, for_update=True)
            _require_uploading(req, row)
            _require_upload_id(req, row, req.upload_id)
            # Assembles what was sent, even a partial list; only finish says success.
            await self._blobs.complete_multipart_upload(row.object_key, req.upload_id, parts)
            await repo.set_upload_id(conn, row.id, None)
            result = await repo.get_version_by_id(conn, row.id)
        return result.contract()

    async def finish_upload(self, req: FinishUpload) -> Version:
        tag = _tag(req.repository, req.version)
        failure: EkibenError | None = None
        deletions: list[BlobDeletion] = []
        async with self._pool().acquire() as conn, conn.transaction():
            row = await self._version_row(conn, req, for_update=True)
            status = row.upload_status
            if status is UploadStatus.PENDING:
                raise InvalidInput(f"upload of {req.kind} {tag} was never started")
            if req.status == status.value:
                # A repeated finish (a retried request) changes nothing and emits nothing.
                return row.contract()
            if status is not UploadStatus.UPLOADING:
                raise InvalidInput(
                    f"no upload of {req.kind} {tag} is in progress (it is {status.value});"
                    " start a new one"
                )
            if req.status == "success":
                size, failure = await self._check_arrival(req, row)
                if failure is None:
                    await repo.finish_upload(
                        conn, row.id, status=UploadStatus.SUCCESS, reason=req.reason,
                        sha256=req.sha256,
                    )  # fmt: skip
                    await write_event(conn, _pushed(row, size, req.sha256, req.scope.actor))
            if req.status == "failed" or failure is not None:
                reason = failure.message if failure is not None else (req.reason or "failed")
                deletions = _fail_work(row, "upload failed")
                await repo.queue_blob_deletions(conn, deletions)
                await repo.finish_upload(conn, row.id, status=UploadStatus.FAILED, reason=reason)
            result = await repo.get_version_by_id(conn, row.id)
        self._after_queue(deletions)
        if failure is not None:
            raise failure
        log.info("registry.upload.finished", kind=req.kind, tag=tag, status=req.status)
        return result.contract()

    async def _check_arrival(
        self, req: FinishUpload, row: VersionRow
    ) -> tuple[int, EkibenError | None]:
        """The archive's size, or why the upload cannot count as a success."""
        what = f"{req.kind} {_tag(req.repository, req.version)}"
        if row.upload_id is not None:
            return 0, InvalidInput(f"the multipart upload of {what} was never completed")
        size = await self._blobs.head(row.object_key)
        if size is None:
            return 0, InvalidInput(f"no archive of {what} arrived in the object store")
        if size == 0:
            return 0, InvalidInput(f"the archive of {what} that arrived is empty (0 bytes)")
        if req.expected_size is not None and size != req.expected_size:
            return size, InvalidInput(
                f"the archive of {what} holds {size} bytes, but {req.expected_size} were sent"
            )
        return size, None

    async def presign_download(self, ref: PresignDownload) -> PresignedUrl:
        async with self._pool().acquire() as conn:
            row = await self._resolve(conn, ref)
        if row.upload_status is not UploadStatus.SUCCESS:
            raise NotFound(
                f"{ref.kind} {row.tag} has no uploaded archive (upload {row.upload_status})"
            )
        presigned = await self._blobs.presign_get(row.object_key, ref.expires_seconds)
        return _presigned(presigned, row)

    # --- housekeeping ----------------------------------------------------------------------

    async def fail_abandoned_uploads(self, now: datetime | None = None, limit: int = 100) -> int:
        """Mark failed the uploads past their deadline (as of `now`); queue their blobs.

        The deadline is the expiry of the last URL handed out for the upload plus the
        grace: no client can send a byte after it, so no finish is coming.
        """
        expiry, grace = self._blobs.expiry_seconds, self._grace.total_seconds()
        reason = (
            "upload abandoned: not finished while its upload URLs were valid"
            f" ({expiry}s after each was issued, plus {grace:.0f}s)"
        )
        async with self._pool().acquire() as conn, conn.transaction():
            ids = await repo.abandoned_uploads(conn, now=now, limit=limit)
            deletions: list[BlobDeletion] = []
            for version_id in ids:
                row = await repo.get_version_by_id(conn, version_id)
                deletions += _fail_work(row, "upload abandoned")
                await repo.finish_upload(
                    conn, version_id, status=UploadStatus.FAILED, reason=reason
                )
            await repo.queue_blob_deletions(conn, deletions)
        self._after_queue(deletions)
        if ids:
            log.info("registry.upload.abandoned", versions=len(ids))
        return len(ids)

    def _after_queue(self, deletions: list[BlobDeletion]) -> None:
        if deletions:
            self._blobs_queued()


# --- helpers -----------------------------------------------------------------------------


def _with_latest(row: VersionRow, latest: dict[int, VersionRow]) -> Version:
    """The version's contract; its joined repository also names its latest version."""
    version = row.contract()
    if row.repository_row is None:
        return version
    repository = row.repository_row.contract(latest=latest.get(row.repository_id))
    return version.model_copy(update={"repository_detail": repository})


def _require_uploading(ref: VersionRef, row: VersionRow, *, hint: str = "") -> None:
    """The upload state machine's one gate: a transfer needs an upload in progress."""
    status, what = row.upload_status, f"{ref.kind} {_tag(ref.repository, ref.version)}"
    if status is UploadStatus.PENDING:
        raise InvalidInput(f"upload of {what} was never started" + (f": {hint}" if hint else ""))
    if status is not UploadStatus.UPLOADING:
        raise InvalidInput(
            f"no upload of {what} is in progress (it is {status.value});"
            + (f" {hint}" if hint else " start a new one")
        )


def _require_upload_id(ref: VersionRef, row: VersionRow, upload_id: str) -> None:
    if row.upload_id != upload_id:
        raise InvalidInput(
            f"upload id {upload_id} is not the open multipart upload of"
            f" {ref.kind} {_tag(ref.repository, ref.version)}"
        )


def _blob_work(object_key: str, upload_id: str | None, reason: str) -> list[BlobDeletion]:
    """The object, and the open multipart upload if there is one."""
    work = [BlobDeletion(object_key=object_key, upload_id=None, reason=reason)]
    if upload_id is not None:
        work.append(BlobDeletion(object_key=object_key, upload_id=upload_id, reason=reason))
    return work


def _fail_work(row: VersionRow, reason: str) -> list[BlobDeletion]:
    return _blob_work(row.object_key, row.upload_id, reason)


def _abort_work(row: VersionRow, reason: str) -> list[BlobDeletion]:
    if row.upload_id is None:
        return []
    return [BlobDeletion(object_key=row.object_key, upload_id=row.upload_id, reason=reason)]


def _presigned(presigned: Presigned, row: VersionRow) -> PresignedUrl:
    return PresignedUrl(url=presigned.url, expires_at=presigned.expires_at, version=row.contract())


def _pushed(row: VersionRow, size: int, sha256: str | None, actor: str | None) -> Event:
    kind = row.kind
    org, name, version = row.organization, row.repository, row.version
    fields: dict[str, Any] = {
        "artifact": ArtifactRef(organization=org, name=name, version=version),
        "size_bytes": size,
        "sha256": sha256,
        "object_key": row.object_key,
        "bentoml_version": row.bentoml_version,
        "labels": dict(row.labels or {}),
        "pushed_by": actor,
    }
    subject = _event_subject(kind, org, name, version)
    if kind is Kind.MODEL:
        return ModelPushed(source=SOURCE, subject=subject, data=ArtifactPushedData(**fields))
    models = []
    for tag in row.models or []:
        model, model_version = tag.split(":", 1)
        models.append(ArtifactRef(organization=org, name=model, version=model_version))
    data = BentoPushedData(**fields, services=manifest_services(row.manifest), models=models)
    return BentoPushed(source=SOURCE, subject=subject, data=data)


def _deleted(
    kind: Kind, organization: str, name: str, version: str, ref: RepositoryRef | VersionRef
) -> Event:
    data = ArtifactDeletedData(
        artifact=ArtifactRef(organization=organization, name=name, version=version),
        deleted_by=ref.scope.actor,
    )
    subject = _event_subject(kind, organization, name, version)
    if kind is Kind.MODEL:
        return ModelDeleted(source=SOURCE, subject=subject, data=data)
    return BentoDeleted(source=SOURCE, subject=subject, data=data)
