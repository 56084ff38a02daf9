"""The Yatai-compatible bento and model API that the real `bentoml` client speaks.

Each route authenticates the caller, translates the request into a registry command
(NATS request/reply, `shared.contracts.registry`) and shapes the answer the way the client
decodes it (see ../shared/docs/bentoml-client-protocol.md): every success is a 200 with
JSON, a bento's or model's `name` is its version, "no URL" is `""` never `null`, lists are
newest first, datetimes carry a timezone.

Transfers follow the gateway's `transfer_strategy`: `presigned` answers
`transmission_strategy: "presigned_url"` (the client then uploads with presigned multipart
and downloads with a presigned GET, straight to S3), `proxy` answers `"proxy"` (the client
PUTs to `.../upload` and GETs `.../download`, which this module streams to and from S3
without holding the body).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.audit import audit
from services.gateway.auth import Principal, Role, current_principal, require_role
from services.gateway.schemas import rfc3339
from services.gateway.settings import GatewaySettings
from shared.bus import RpcClient
from shared.bus.rpc import invalid_input
from shared.contracts import registry as reg
from shared.errors import Conflict, EkibenError, InvalidInput, NotFound, TooLarge

# Relayed downloads move in 1 MiB pieces: the per-chunk cost of the ASGI stack, not the
# bytes, bounds a proxied pull when chunks are as small as a socket read.
RELAY_CHUNK_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

Reader = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(require_role(Role.DEVELOPER))]


# --- request bodies (lenient: the client sends more than we need) --------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LabelBody(_Body):
    key: str
    value: str


class CreateRepositoryBody(_Body):
    name: str
    description: str | None = ""
    labels: list[LabelBody] | None = None


class UpdateRepositoryBody(_Body):
    description: str | None = None
    labels: list[LabelBody] | None = None


class CreateVersionBody(_Body):
    version: str
    description: str | None = ""
    manifest: dict[str, Any] | None = None
    labels: list[LabelBody] | None = None
    build_at: str | None = None


class UpdateVersionBody(_Body):
    description: str | None = None
    manifest: dict[str, Any] | None = None
    labels: list[LabelBody] | None = None


class PresignPartBody(_Body):
    upload_id: str
    part_number: int


class PartBody(_Body):
    part_number: int
    etag: str


class CompleteMultipartBody(_Body):
    upload_id: str
    parts: list[PartBody] = Field(default_factory=list)


class FinishUploadBody(_Body):
    status: Literal["success", "failed"]
    reason: str | None = ""


# --- shaping answers -----------------------------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def _labels(labels: list[reg.Label]) -> list[dict[str, str]]:
    return [{"key": label.key, "value": label.value} for label in labels]


def _manifest(version: reg.Version) -> dict[str, Any] | None:
    if version.kind is reg.Kind.BENTO:
        return version.manifest
    # A model's manifest must be an object with these keys, or the client cannot decode it.
    manifest = dict(version.manifest or {})
    manifest.setdefault("module", "")
    manifest.setdefault("api_version", "")
    manifest.setdefault("bentoml_version", version.bentoml_version or "")
    manifest.setdefault("size_bytes", version.size_bytes)
    return manifest


def version_schema(
    version: reg.Version,
    strategy: str,
    *,
    repository: reg.Repository | None = None,
    upload_url: str = "",
    download_url: str = "",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": version.uid,
        "created_at": _ts(version.created_at),
        "updated_at": _ts(version.updated_at),
        "deleted_at": None,
        "name": version.version,
        "resource_type": version.kind.value,
        "labels": _labels(version.labels),
        "description": version.description,
        "version": version.version,
        "image_build_status": "pending",
        "upload_status": version.upload_status.value,
        "upload_finished_reason": version.upload_finished_reason,
        "presigned_upload_url": upload_url,
        "presigned_download_url": download_url,
        "manifest": _manifest(version),
        "transmission_strategy": strategy,
        "upload_id": version.upload_id,
        "upload_started_at": _ts(version.upload_started_at),
        "upload_finished_at": _ts(version.upload_finished_at),
        "build_at": _ts(version.build_at),
        "size_bytes": version.size_bytes,
        "creator": {"name": version.created_by or ""},
    }
    if repository is not None:
        body["repository"] = repository_schema(repository, strategy)
    return body


def repository_schema(repository: reg.Repository, strategy: str) -> dict[str, Any]:
    kind = repository.kind.value
    latest = repository.latest
    return {
        "uid": repository.uid,
        "created_at": _ts(repository.created_at),
        "updated_at": _ts(repository.updated_at),
        "deleted_at": None,
        "name": repository.name,
        "resource_type": f"{kind}_repository",
        "labels": _labels(repository.labels),
        "description": repository.description,
        f"latest_{kind}": version_schema(latest, strategy) if latest else None,
        f"n_{kind}s": repository.n_versions,
        "creator": {"name": repository.created_by or ""},
    }


def page_schema(page: reg.Page[Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"start": page.start, "count": page.count, "total": page.total, "items": items}


# --- listing parameters --------------------------------------------------------------------

_SORTS: dict[str, reg.SortKey] = {
    "created_at": "created_at",
    "build_at": "build_at",
    "size": "size",
    "name": "name",
    "version": "version",
}


def parse_listing(q: str | None, search: str | None, sort: str | None) -> dict[str, Any]:
    """Yatai's `q` mini-language: `label:k=v`, `creator:name`, `sort:<key>-<asc|desc>`,
    `status:<upload status>`, and bare words (matched against names and versions)."""
    words: list[str] = [search] if search else []
    labels: list[reg.Label] = []
    options: dict[str, Any] = {}
    for term in (q or "").split():
        key, sep, value = term.partition(":")
        if not sep:
            words.append(term)
        elif key == "label":
            label_key, _, label_value = value.partition("=")
            labels.append(reg.Label(key=label_key, value=label_value))
        elif key == "creator":
            options["creator"] = value
        elif key == "status":
            options["upload_status"] = value
        elif key == "sort":
            sort = value
        else:
            raise InvalidInput(f"unknown filter {key!r} in q")
    if sort:
        field, _, direction = sort.partition("-")
        if field not in _SORTS or direction not in ("", "asc", "desc"):
            raise InvalidInput(f"unknown sort {sort!r}: one of {', '.join(_SORTS)} with -asc/-desc")
        options["sort"] = _SORTS[field]
        options["descending"] = direction != "asc"
    if words:
        options["search"] = " ".join(words)
    options["labels"] = labels
    return options


@dataclass(frozen=True)
class Listing:
    """The listing query parameters every list route takes (a FastAPI dependency)."""

    start: str | None = None
    count: str | None = None
    search: str | None = None
    q: str | None = None
    sort: str | None = None

    def command_fields(self, default_count: int) -> dict[str, Any]:
        """start, count and the filters, ready for a registry list command."""
        first, size = _window(self.start, self.count, default_count)
        filters = parse_listing(_blank(self.q), _blank(self.search), _blank(self.sort))
        return {"start": first, "count": size, **filters}


ListingQuery = Annotated[Listing, Depends()]


def _blank(value: str | None) -> str | None:
    """The client sends `?x=` for "not given"."""
    return value or None


def _window(start: str | None, count: str | None, default: int) -> tuple[int, int]:
    try:
        first = int(start) if start else 0
        size = int(count) if count else default
    except ValueError as exc:
        raise InvalidInput("start and count must be integers") from exc
    if first < 0 or not 1 <= size <= 1000:
        raise InvalidInput("start must be >= 0 and count between 1 and 1000")
    return first, size


# --- the routes ----------------------------------------------------------------------------


def _rpc(request: Request) -> RpcClient:
    rpc: RpcClient = request.app.state.runtime.rpc
    return rpc


def _strategy(request: Request) -> str:
    settings: GatewaySettings = request.app.state.runtime.settings
    return "presigned_url" if settings.transfer_strategy == "presigned" else "proxy"


def _scope(principal: Principal) -> reg.Scope:
    return reg.Scope(organization=principal.organization, actor=principal.user_name)


def _command(model: type[M], **fields: Any) -> M:
    """Build a registry command, turning bad path or body values into a clear 422."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_input(exc) from exc


async def _call(
    request: Request,
    command: str,
    body: BaseModel,
    answer: type[R],
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the bound of one NATS request
) -> R:
    return await _rpc(request).call(reg.SERVICE, command, body, answer, timeout=timeout)


def build_router(kind: reg.Kind) -> APIRouter:  # noqa: PLR0915 - one route table per kind
    """The routes under `/api/v1/<kind>_repositories` and `/api/v1/<kind>s`."""
    plural = f"{kind.value}s"
    base = f"/api/v1/{kind.value}_repositories"
    item = f"{base}/{{name}}/{plural}/{{version}}"
    router = APIRouter(tags=[plural])

    def on_repository(model: type[M], principal: Principal, name: str, **fields: Any) -> M:
        """A command about repository `name` of this kind, in the caller's organization."""
        return _command(model, scope=_scope(principal), kind=kind, name=name, **fields)

    def on_version(
        model: type[M], principal: Principal, name: str, version: str, **fields: Any
    ) -> M:
        """A command about version `name:version` of this kind."""
        return _command(
            model, scope=_scope(principal), kind=kind, repository=name, version=version, **fields
        )

    def version_ref(principal: Principal, name: str, version: str) -> reg.VersionRef:
        return on_version(reg.VersionRef, principal, name, version)

    async def answer(
        request: Request, version: reg.Version, *, upload_url: str = "", download_url: str = ""
    ) -> dict[str, Any]:
        return version_schema(
            version, _strategy(request), upload_url=upload_url, download_url=download_url
        )

    @router.get(base)
    async def list_repositories(
        request: Request, principal: Reader, listing: ListingQuery
    ) -> dict[str, Any]:
        command = _command(
            reg.ListRepositories,
            scope=_scope(principal),
            kind=kind,
            **listing.command_fields(default_count=20),
        )
        page = await _call(request, "repository.list", command, reg.Page[reg.Repository])
        strategy = _strategy(request)
        return page_schema(page, [repository_schema(r, strategy) for r in page.items])

    @router.post(base)
    async def create_repository(
        request: Request, principal: Writer, body: CreateRepositoryBody
    ) -> dict[str, Any]:
        command = on_repository(
            reg.CreateRepository,
            principal,
            body.name,
            description=body.description or "",
            labels=[label.model_dump() for label in body.labels or []],
        )
        try:
            repository = await _call(request, "repository.create", command, reg.Repository)
        except Conflict:
            # Two pushes raced to create it (the client's lock is per process): the loser
            # gets the repository the winner made, which is what it asked for.
            ref = on_repository(reg.RepositoryRef, principal, body.name)
            repository = await _call(request, "repository.get", ref, reg.Repository)
        else:
            await audit(
                request, principal, f"{kind.value}_repository.create", kind.value, body.name, {}
            )
        return repository_schema(repository, _strategy(request))

    @router.get(f"{base}/{{name}}")
    async def get_repository(request: Request, principal: Reader, name: str) -> dict[str, Any]:
        command = on_repository(reg.RepositoryRef, principal, name)
        repository = await _call(request, "repository.get", command, reg.Repository)
        return repository_schema(repository, _strategy(request))

    @router.patch(f"{base}/{{name}}")
    async def update_repository(
        request: Request, principal: Writer, name: str, body: UpdateRepositoryBody
    ) -> dict[str, Any]:
        command = on_repository(
            reg.UpdateRepository,
            principal,
            name,
            description=body.description,
            labels=None if body.labels is None else [lb.model_dump() for lb in body.labels],
        )
        repository = await _call(request, "repository.update", command, reg.Repository)
        await audit(
            request, principal, f"{kind.value}_repository.update", kind.value, name,
            body.model_dump(exclude_none=True),
        )  # fmt: skip
        return repository_schema(repository, _strategy(request))

    @router.delete(f"{base}/{{name}}")
    async def delete_repository(request: Request, principal: Writer, name: str) -> dict[str, Any]:
        command = on_repository(reg.RepositoryRef, principal, name)
        result = await _call(request, "repository.delete", command, reg.DeleteResult)
        await audit(
            request, principal, f"{kind.value}_repository.delete", kind.value, name,
            {"deleted_versions": result.deleted_versions},
        )  # fmt: skip
        return {"name": name, "deleted_versions": result.deleted_versions}

    async def list_versions(
        request: Request,
        principal: Principal,
        repository: str | None,
        listing: Listing,
        default_count: int,
    ) -> dict[str, Any]:
        command = _command(
            reg.ListVersions,
            scope=_scope(principal),
            kind=kind,
            repository=repository,
            **listing.command_fields(default_count),
        )
        page = await _call(request, "version.list", command, reg.Page[reg.Version])
        strategy = _strategy(request)
        items = []
        for version in page.items:
            body = version_schema(version, strategy)
            body["repository"] = {
                "name": version.repository,
                "resource_type": f"{kind.value}_repository",
            }
            items.append(body)
        return page_schema(page, items)

    @router.get(f"/api/v1/{plural}")
    async def list_all_versions(
        request: Request, principal: Reader, listing: ListingQuery
    ) -> dict[str, Any]:
        return await list_versions(request, principal, None, listing, 100)

    @router.get(f"{base}/{{name}}/{plural}")
    async def list_repository_versions(
        request: Request, principal: Reader, name: str, listing: ListingQuery
    ) -> dict[str, Any]:
        # An unknown repository is a 404, not an empty page: the registry checks that.
        return await list_versions(request, principal, name, listing, 20)

    @router.post(f"{base}/{{name}}/{plural}")
    async def create_version(
        request: Request, principal: Writer, name: str, body: CreateVersionBody
    ) -> dict[str, Any]:
        command = _command(
            reg.CreateVersion,
            scope=_scope(principal),
            kind=kind,
            repository=name,
            version=body.version,
            description=body.description or "",
            manifest=body.manifest,
            labels=[label.model_dump() for label in body.labels or []],
            build_at=_parse_build_at(body.build_at),
        )
        version = await _call(request, "version.create", command, reg.Version)
        await audit(
            request, principal, f"{kind.value}.create", kind.value, f"{name}:{body.version}", {}
        )
        return await answer(request, version)

    @router.get(item)
    async def get_version(
        request: Request, principal: Reader, name: str, version: str
    ) -> dict[str, Any]:
        # The client needs the repository beside the version: one command brings both.
        command = on_version(reg.GetVersion, principal, name, version, include_repository=True)
        found = await _call(request, "version.get", command, reg.Version)
        return version_schema(found, _strategy(request), repository=found.repository_detail)

    @router.patch(item)
    async def update_version(
        request: Request, principal: Writer, name: str, version: str, body: UpdateVersionBody
    ) -> dict[str, Any]:
        command = on_version(
            reg.UpdateVersion,
            principal,
            name,
            version,
            description=body.description,
            manifest=body.manifest,
            labels=None if body.labels is None else [lb.model_dump() for lb in body.labels],
        )
        updated = await _call(request, "version.update", command, reg.Version)
        await audit(request, principal, f"{kind.value}.update", kind.value, f"{name}:{version}", {})
        return await answer(request, updated)

    @router.delete(item)
    async def delete_version(
        request: Request, principal: Writer, name: str, version: str
    ) -> dict[str, Any]:
        ref = version_ref(principal, name, version)
        result = await _call(request, "version.delete", ref, reg.DeleteResult)
        await audit(request, principal, f"{kind.value}.delete", kind.value, f"{name}:{version}", {})
        return {"name": name, "version": version, "deleted_versions": result.deleted_versions}

    @router.patch(f"{item}/start_upload")
    async def start_upload(
        request: Request, principal: Writer, name: str, version: str
    ) -> dict[str, Any]:
        started = await _call(
            request, "upload.start", version_ref(principal, name, version), reg.Version
        )
        await audit(
            request, principal, f"{kind.value}.upload.start", kind.value, f"{name}:{version}", {}
        )
        return await answer(request, started)

    @router.patch(f"{item}/presign_upload_url")
    async def presign_upload_url(
        request: Request, principal: Writer, name: str, version: str
    ) -> dict[str, Any]:
        ref = version_ref(principal, name, version)
        signed = await _call(request, "upload.presign", ref, reg.PresignedUrl)
        return await answer(request, signed.version, upload_url=signed.url)

    @router.patch(f"{item}/start_multipart_upload")
    async def start_multipart_upload(
        request: Request, principal: Writer, name: str, version: str
    ) -> dict[str, Any]:
        ref = version_ref(principal, name, version)
        started = await _call(request, "upload.multipart.start", ref, reg.Version)
        await audit(
            request, principal, f"{kind.value}.upload.multipart.start", kind.value,
            f"{name}:{version}", {"upload_id": started.upload_id},
        )  # fmt: skip
        return await answer(request, started)

    @router.patch(f"{item}/presign_multipart_upload_url")
    async def presign_multipart_upload_url(
        request: Request, principal: Writer, name: str, version: str, body: PresignPartBody
    ) -> dict[str, Any]:
        command = on_version(
            reg.PresignPart,
            principal,
            name,
            version,
            upload_id=body.upload_id,
            part_number=body.part_number,
        )
        signed = await _call(request, "upload.multipart.presign_part", command, reg.PresignedUrl)
        return await answer(request, signed.version, upload_url=signed.url)

    @router.patch(f"{item}/complete_multipart_upload")
    async def complete_multipart_upload(
        request: Request, principal: Writer, name: str, version: str, body: CompleteMultipartBody
    ) -> dict[str, Any]:
        command = on_version(
            reg.CompleteMultipart,
            principal,
            name,
            version,
            upload_id=body.upload_id,
            parts=[part.model_dump() for part in body.parts],
        )
        # S3 assembles the parts here; the client allows this call 60 s.
        completed = await _call(
            request, "upload.multipart.complete", command, reg.Version, timeout=55.0
        )
        await audit(
            request, principal, f"{kind.value}.upload.multipart.complete", kind.value,
            f"{name}:{version}", {"upload_id": body.upload_id, "parts": len(body.parts)},
        )  # fmt: skip
        return await answer(request, completed)

    @router.patch(f"{item}/finish_upload")
    async def finish_upload(
        request: Request, principal: Writer, name: str, version: str, body: FinishUploadBody
    ) -> dict[str, Any]:
        command = on_version(
            reg.FinishUpload,
            principal,
            name,
            version,
            status=body.status,
            reason=body.reason or "",
        )
        finished = await _call(request, "upload.finish", command, reg.Version)
        await audit(
            request, principal, f"{kind.value}.upload.finish", kind.value, f"{name}:{version}",
            {"status": body.status, "reason": body.reason or ""},
        )  # fmt: skip
        return await answer(request, finished)

    @router.put(f"{item}/upload")
    async def proxy_upload(
        request: Request, principal: Writer, name: str, version: str
    ) -> dict[str, Any]:
        settings: GatewaySettings = request.app.state.runtime.settings
        length = _content_length(request, settings.max_upload_bytes)
        ref = version_ref(principal, name, version)
        signed = await _call(request, "upload.presign", ref, reg.PresignedUrl)
        if signed.version.upload_status is not reg.UploadStatus.UPLOADING:
            # Refused before any byte reaches the store: finish would refuse the upload and
            # leave the object behind, or, on an uploaded version, keep the replaced bytes.
            raise _not_started(kind, name, version, signed.version.upload_status)
        try:
            await request.app.state.transfers.put(signed.url, request.stream(), length)
        except EkibenError as exc:
            failed = on_version(
                reg.FinishUpload, principal, name, version, status="failed", reason=exc.message
            )
            await _call(request, "upload.finish", failed, reg.Version)
            raise
        # The client sends no finish_upload after a proxied PUT: the gateway finishes it.
        done = on_version(
            reg.FinishUpload, principal, name, version, status="success", expected_size=length
        )
        finished = await _call(request, "upload.finish", done, reg.Version)
        await audit(
            request, principal, f"{kind.value}.upload.proxy", kind.value, f"{name}:{version}",
            {"bytes": length},
        )  # fmt: skip
        return await answer(request, finished)

    @router.patch(f"{item}/presign_download_url")
    async def presign_download_url(
        request: Request, principal: Reader, name: str, version: str
    ) -> dict[str, Any]:
        ref = version_ref(principal, name, version)
        if _strategy(request) == "proxy":
            # The client still asks; a proxy-only answer is the version with no URL.
            found = await _call(request, "version.get", ref, reg.Version)
            if found.upload_status is not reg.UploadStatus.SUCCESS:
                raise _not_uploaded(kind, name, version)
            return await answer(request, found)
        signed = await _call(request, "download.presign", ref, reg.PresignedUrl)
        return await answer(request, signed.version, download_url=signed.url)

    @router.get(f"{item}/download")
    async def proxy_download(
        request: Request, principal: Reader, name: str, version: str
    ) -> StreamingResponse:
        ref = version_ref(principal, name, version)
        signed = await _call(request, "download.presign", ref, reg.PresignedUrl)
        upstream = await request.app.state.transfers.open_get(signed.url)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw(RELAY_CHUNK_BYTES):
                    yield chunk
            finally:
                await upstream.aclose()

        headers = {"Content-Disposition": f'attachment; filename="{name}-{version}.tar"'}
        if "content-length" in upstream.headers:
            headers["Content-Length"] = upstream.headers["content-length"]
        return StreamingResponse(relay(), media_type="application/x-tar", headers=headers)

    return router


def _not_uploaded(kind: reg.Kind, name: str, version: str) -> EkibenError:
    return NotFound(f"{kind.value} {name}:{version} has no finished upload")


def _not_started(kind: reg.Kind, name: str, version: str, status: reg.UploadStatus) -> EkibenError:
    if status is reg.UploadStatus.PENDING:
        return InvalidInput(
            f"upload of {kind.value} {name}:{version} was never started: send start_upload first"
        )
    return InvalidInput(
        f"no upload of {kind.value} {name}:{version} is in progress (it is {status.value});"
        " send start_upload first"
    )


def _content_length(request: Request, limit: int) -> int:
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise InvalidInput("a proxied upload needs a Content-Length header")
    length = int(raw)
    if length > limit:
        raise TooLarge(f"upload of {length} bytes exceeds the limit of {limit} bytes")
    return length


def _parse_build_at(raw: str | None) -> datetime | None:
    """The client sends naive UTC `YYYY-MM-DD HH:MM:SS.ffffff`; others may send RFC 3339."""
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"build_at: {raw!r} is not a date and time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


bentos = build_router(reg.Kind.BENTO)
models = build_router(reg.Kind.MODEL)
