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
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from services.gateway import calls
from services.gateway.artifacts.schemas import (
    SCHEMAS,
    ArtifactVersionSchema,
    RepositoryDeletedSchema,
    VersionDeletedSchema,
    repository_schema,
    version_schema,
    version_with_repository_schema,
)
from services.gateway.artifacts.service import Listing
from services.gateway.artifacts.upload import CountedBody, declared_digests
from services.gateway.audit.service import audit
from services.gateway.guard import (
    JSON_BODY_BYTES,
    MANIFEST_BODY_BYTES,
    GatewayRoute,
    body_limit,
)
from services.gateway.identity.auth import Principal, Role, current_principal, require_role
from services.gateway.schemas import ListSchema
from services.gateway.settings import GatewaySettings
from shared.contracts import registry as reg
from shared.contracts.command import Command
from shared.errors import Conflict, EkibenError, InvalidInput
from shared.http import error_responses
from shared.logging import get_logger
from shared.text import StorableText

log = get_logger(__name__)

# Relayed downloads move in 1 MiB pieces: the per-chunk cost of the ASGI stack, not the
# bytes, bounds a proxied pull when chunks are as small as a socket read.
RELAY_CHUNK_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)
Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)

# BentoML's tag rules, declared for clients and fuzzers; the registry enforces them (with
# a message saying what a name may hold).
_TAG_SCHEMA: dict[str, JsonValue] = {"pattern": reg.TAG_PART.pattern, "maxLength": 63}
TagName = Annotated[str, Path(description="The repository's name.", json_schema_extra=_TAG_SCHEMA)]
TagVersion = Annotated[
    str,
    Path(
        description="The version, or `latest` for the newest uploaded one.",
        json_schema_extra=_TAG_SCHEMA,
    ),
]

Reader = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(require_role(Role.DEVELOPER))]
ListingQuery = Annotated[Listing, Depends()]


# --- request bodies (lenient: the client sends more than we need) --------------------------


class _Body(StorableText):
    """Lenient (the client sends more than we need), and only text PostgreSQL can store."""

    model_config = ConfigDict(extra="ignore")


# The registry's limits, declared here too so that the OpenAPI document says what is
# accepted; names are checked by the registry, whose message says what a name may hold.
_Description = Annotated[str | None, Field(max_length=reg.MAX_DESCRIPTION_CHARS)]
_PartNumber = Annotated[int, Field(ge=1, le=reg.MULTIPART_MAX_PARTS)]


class LabelBody(_Body):
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=1024)


_Labels = Annotated[list[LabelBody] | None, Field(max_length=reg.MAX_LABELS)]


class CreateRepositoryBody(_Body):
    name: str = Field(json_schema_extra=_TAG_SCHEMA)
    description: _Description = ""
    labels: _Labels = None


class UpdateRepositoryBody(_Body):
    description: _Description = None
    labels: _Labels = None


class CreateVersionBody(_Body):
    version: str = Field(json_schema_extra=_TAG_SCHEMA)
    description: _Description = ""
    manifest: dict[str, Any] | None = None
    labels: _Labels = None
    # The client's naive UTC "YYYY-MM-DD HH:MM:SS.ffffff", or RFC 3339.
    build_at: str | None = None


class UpdateVersionBody(_Body):
    description: _Description = None
    manifest: dict[str, Any] | None = None
    labels: _Labels = None


class PresignPartBody(_Body):
    upload_id: str = Field(min_length=1)
    part_number: _PartNumber


class PartBody(_Body):
    part_number: _PartNumber
    etag: str = Field(min_length=1)


class CompleteMultipartBody(_Body):
    upload_id: str = Field(min_length=1)
    parts: list[PartBody] = Field(default_factory=list, max_length=reg.MULTIPART_MAX_PARTS)


class FinishUploadBody(_Body):
    status: Literal["success", "failed"]
    reason: str | None = Field(default="", max_length=4096)


# --- the routes ----------------------------------------------------------------------------


async def _call(
    request: Request,
    command: Command[Req, Res],
    body: Req,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the bound of one NATS request
) -> Res:
    return await calls.rpc(request).call(command, body, timeout=timeout)


def build_router(kind: reg.Kind) -> APIRouter:  # noqa: PLR0915 - one route table per kind
    """The routes under `/api/v1/<kind>_repositories` and `/api/v1/<kind>s`."""
    plural = f"{kind.value}s"
    base = f"/api/v1/{kind.value}_repositories"
    item = f"{base}/{{name}}/{plural}/{{version}}"
    router = APIRouter(tags=[plural], route_class=GatewayRoute)
    schemas = SCHEMAS[kind]
    Version = schemas.version  # noqa: N806 - the answer classes of this kind
    Repository = schemas.repository  # noqa: N806
    WithRepository = schemas.with_repository  # noqa: N806

    def on_repository(model: type[M], principal: Principal, name: str, **fields: Any) -> M:
        """A command about repository `name` of this kind, in the caller's organization."""
        return calls.command(model, scope=calls.scope(principal), kind=kind, name=name, **fields)

    def on_version(
        model: type[M], principal: Principal, name: str, version: str, **fields: Any
    ) -> M:
        """A command about version `name:version` of this kind."""
        return calls.command(
            model,
            scope=calls.scope(principal),
            kind=kind,
            repository=name,
            version=version,
            **fields,
        )

    def version_ref(principal: Principal, name: str, version: str) -> reg.VersionRef:
        return on_version(reg.VersionRef, principal, name, version)

    def answer(
        request: Request, version: reg.Version, *, upload_url: str = "", download_url: str = ""
    ) -> ArtifactVersionSchema:
        return version_schema(
            version, calls.strategy(request), upload_url=upload_url, download_url=download_url
        )

    @router.get(base, response_model=ListSchema[Repository])  # type: ignore[valid-type]
    async def list_repositories(
        request: Request, principal: Reader, listing: ListingQuery
    ) -> ListSchema[Any]:
        command = calls.command(
            reg.ListRepositories,
            scope=calls.scope(principal),
            kind=kind,
            **listing.command_fields(default_count=20),
        )
        page = await _call(request, reg.LIST_REPOSITORIES, command)
        strategy = calls.strategy(request)
        items = [repository_schema(r, strategy) for r in page.items]
        return ListSchema[Any](start=page.start, count=page.count, total=page.total, items=items)

    @router.post(base, response_model=Repository)
    @body_limit(MANIFEST_BODY_BYTES)  # a description may be 3 MiB
    async def create_repository(
        request: Request, principal: Writer, body: CreateRepositoryBody
    ) -> BaseModel:
        command = on_repository(
            reg.CreateRepository,
            principal,
            body.name,
            description=body.description or "",
            labels=[label.model_dump() for label in body.labels or []],
        )
        try:
            repository = await _call(request, reg.CREATE_REPOSITORY, command)
        except Conflict:
            # Two pushes raced to create it (the client's lock is per process): the loser
            # gets the repository the winner made, which is what it asked for.
            ref = on_repository(reg.RepositoryRef, principal, body.name)
            repository = await _call(request, reg.GET_REPOSITORY, ref)
        else:
            await audit(
                request, principal, f"{kind.value}_repository.create", kind.value, body.name, {}
            )
        return repository_schema(repository, calls.strategy(request))

    @router.get(f"{base}/{{name}}", response_model=Repository)
    async def get_repository(request: Request, principal: Reader, name: TagName) -> BaseModel:
        command = on_repository(reg.RepositoryRef, principal, name)
        repository = await _call(request, reg.GET_REPOSITORY, command)
        return repository_schema(repository, calls.strategy(request))

    @router.patch(f"{base}/{{name}}", response_model=Repository)
    @body_limit(MANIFEST_BODY_BYTES)
    async def update_repository(
        request: Request, principal: Writer, name: TagName, body: UpdateRepositoryBody
    ) -> BaseModel:
        command = on_repository(
            reg.UpdateRepository,
            principal,
            name,
            description=body.description,
            labels=None if body.labels is None else [lb.model_dump() for lb in body.labels],
        )
        repository = await _call(request, reg.UPDATE_REPOSITORY, command)
        await audit(
            request, principal, f"{kind.value}_repository.update", kind.value, name,
            body.model_dump(exclude_none=True),
        )  # fmt: skip
        return repository_schema(repository, calls.strategy(request))

    @router.delete(f"{base}/{{name}}", responses=error_responses(409))
    async def delete_repository(
        request: Request, principal: Writer, name: TagName
    ) -> RepositoryDeletedSchema:
        command = on_repository(reg.RepositoryRef, principal, name)
        result = await _call(request, reg.DELETE_REPOSITORY, command)
        await audit(
            request, principal, f"{kind.value}_repository.delete", kind.value, name,
            {"deleted_versions": result.deleted_versions},
        )  # fmt: skip
        return RepositoryDeletedSchema(name=name, deleted_versions=result.deleted_versions)

    async def list_versions(
        request: Request,
        principal: Principal,
        repository: str | None,
        listing: Listing,
        default_count: int,
    ) -> ListSchema[Any]:
        command = calls.command(
            reg.ListVersions,
            scope=calls.scope(principal),
            kind=kind,
            repository=repository,
            include_repository=True,
            **listing.command_fields(default_count),
        )
        page = await _call(request, reg.LIST_VERSIONS, command)
        strategy = calls.strategy(request)
        items = []
        for version in page.items:
            assert version.repository_detail is not None  # asked for with include_repository
            items.append(
                version_with_repository_schema(version, version.repository_detail, strategy)
            )
        return ListSchema[Any](start=page.start, count=page.count, total=page.total, items=items)

    @router.get(f"/api/v1/{plural}", response_model=ListSchema[WithRepository])  # type: ignore[valid-type]
    async def list_all_versions(
        request: Request, principal: Reader, listing: ListingQuery
    ) -> ListSchema[Any]:
        return await list_versions(request, principal, None, listing, 100)

    @router.get(f"{base}/{{name}}/{plural}", response_model=ListSchema[WithRepository])  # type: ignore[valid-type]
    async def list_repository_versions(
        request: Request, principal: Reader, name: TagName, listing: ListingQuery
    ) -> ListSchema[Any]:
        # An unknown repository is a 404, not an empty page: the registry checks that.
        return await list_versions(request, principal, name, listing, 20)

    @router.post(
        f"{base}/{{name}}/{plural}", response_model=Version, responses=error_responses(409)
    )
    @body_limit(MANIFEST_BODY_BYTES)
    async def create_version(
        request: Request, principal: Writer, name: TagName, body: CreateVersionBody
    ) -> BaseModel:
        command = calls.command(
            reg.CreateVersion,
            scope=calls.scope(principal),
            kind=kind,
            repository=name,
            version=body.version,
            description=body.description or "",
            manifest=body.manifest,
            labels=[label.model_dump() for label in body.labels or []],
            build_at=_parse_build_at(body.build_at),
        )
        version = await _call(request, reg.CREATE_VERSION, command)
        await audit(
            request, principal, f"{kind.value}.create", kind.value, f"{name}:{body.version}", {}
        )
        return answer(request, version)

    @router.get(item, response_model=WithRepository)
    async def get_version(
        request: Request, principal: Reader, name: TagName, version: TagVersion
    ) -> BaseModel:
        # The client needs the repository beside the version: one command brings both.
        command = on_version(reg.GetVersion, principal, name, version, include_repository=True)
        found = await _call(request, reg.GET_VERSION, command)
        assert found.repository_detail is not None  # asked for with include_repository
        return version_with_repository_schema(
            found, found.repository_detail, calls.strategy(request)
        )

    @router.patch(item, response_model=Version)
    @body_limit(MANIFEST_BODY_BYTES)
    async def update_version(
        request: Request,
        principal: Writer,
        name: TagName,
        version: TagVersion,
        body: UpdateVersionBody,
    ) -> BaseModel:
        command = on_version(
            reg.UpdateVersion,
            principal,
            name,
            version,
            description=body.description,
            manifest=body.manifest,
            labels=None if body.labels is None else [lb.model_dump() for lb in body.labels],
        )
        updated = await _call(request, reg.UPDATE_VERSION, command)
        await audit(request, principal, f"{kind.value}.update", kind.value, f"{name}:{version}", {})
        return answer(request, updated)

    @router.delete(item, responses=error_responses(409))
    async def delete_version(
        request: Request, principal: Writer, name: TagName, version: TagVersion
    ) -> VersionDeletedSchema:
        ref = version_ref(principal, name, version)
        result = await _call(request, reg.DELETE_VERSION, ref)
        await audit(request, principal, f"{kind.value}.delete", kind.value, f"{name}:{version}", {})
        return VersionDeletedSchema(
            name=name, version=version, deleted_versions=result.deleted_versions
        )

    @router.patch(f"{item}/start_upload", response_model=Version)
    async def start_upload(
        request: Request, principal: Writer, name: TagName, version: TagVersion
    ) -> BaseModel:
        started = await _call(request, reg.START_UPLOAD, version_ref(principal, name, version))
        await audit(
            request, principal, f"{kind.value}.upload.start", kind.value, f"{name}:{version}", {}
        )
        return answer(request, started)

    @router.patch(f"{item}/presign_upload_url", response_model=Version)
    async def presign_upload_url(
        request: Request, principal: Writer, name: TagName, version: TagVersion
    ) -> BaseModel:
        ref = version_ref(principal, name, version)
        signed = await _call(request, reg.PRESIGN_UPLOAD, ref)
        return answer(request, signed.version, upload_url=signed.url)

    @router.patch(f"{item}/start_multipart_upload", response_model=Version)
    async def start_multipart_upload(
        request: Request, principal: Writer, name: TagName, version: TagVersion
    ) -> BaseModel:
        ref = version_ref(principal, name, version)
        started = await _call(request, reg.START_MULTIPART, ref)
        await audit(
            request, principal, f"{kind.value}.upload.multipart.start", kind.value,
            f"{name}:{version}", {"upload_id": started.upload_id},
        )  # fmt: skip
        return answer(request, started)

    @router.patch(f"{item}/presign_multipart_upload_url", response_model=Version)
    async def presign_multipart_upload_url(
        request: Request,
        principal: Writer,
        name: TagName,
        version: TagVersion,
        body: PresignPartBody,
    ) -> BaseModel:
        command = on_version(
            reg.PresignPart,
            principal,
            name,
            version,
            upload_id=body.upload_id,
            part_number=body.part_number,
        )
        signed = await _call(request, reg.PRESIGN_PART, command)
        return answer(request, signed.version, upload_url=signed.url)

    @router.patch(f"{item}/complete_multipart_upload", response_model=Version)
    async def complete_multipart_upload(
        request: Request,
        principal: Writer,
        name: TagName,
        version: TagVersion,
        body: CompleteMultipartBody,
    ) -> BaseModel:
        command = on_version(
            reg.CompleteMultipart,
            principal,
            name,
            version,
            upload_id=body.upload_id,
            parts=[part.model_dump() for part in body.parts],
        )
        # S3 assembles the parts here; the client allows this call 60 s.
        completed = await _call(request, reg.COMPLETE_MULTIPART, command, timeout=55.0)
        await audit(
            request, principal, f"{kind.value}.upload.multipart.complete", kind.value,
            f"{name}:{version}", {"upload_id": body.upload_id, "parts": len(body.parts)},
        )  # fmt: skip
        return answer(request, completed)

    @router.patch(
        f"{item}/finish_upload",
        response_model=Version,
        openapi_extra=_json_request_body(FinishUploadBody),
    )
    @body_limit(JSON_BODY_BYTES)
    async def finish_upload(
        request: Request, principal: Writer, name: TagName, version: TagVersion
    ) -> BaseModel:
        # Validated here, not by FastAPI: the client takes any refusal of this call as a
        # failed push, so a refused body must fail the upload too, not leave it uploading.
        try:
            body = FinishUploadBody.model_validate(await _json_body(request))
        except ValidationError as exc:
            refused = _body_error(exc)
            await fail_upload(
                request, principal, name, version, f"finish_upload refused: {refused.message}"
            )
            raise refused from None
        command = on_version(
            reg.FinishUpload,
            principal,
            name,
            version,
            status=body.status,
            reason=body.reason or "",
        )
        finished = await _call(request, reg.FINISH_UPLOAD, command)
        await audit(
            request, principal, f"{kind.value}.upload.finish", kind.value, f"{name}:{version}",
            {"status": body.status, "reason": body.reason or ""},
        )  # fmt: skip
        return answer(request, finished)

    async def fail_upload(
        request: Request, principal: Principal, name: str, version: str, reason: str
    ) -> None:
        """Mark the upload failed with `reason`, if one is in progress; never raises."""
        try:
            command = on_version(
                reg.FinishUpload, principal, name, version, status="failed", reason=reason[:4096]
            )
            await _call(request, reg.FINISH_UPLOAD, command)
        except EkibenError as exc:
            # No such version, nothing in progress, or the registry is away (its sweep
            # fails the upload once its URLs have expired).
            log.info("gateway.upload.not_failed", tag=f"{name}:{version}", error=exc.message)

    def upload_limit(request: Request) -> int:
        settings: GatewaySettings = request.app.state.runtime.settings
        return settings.max_upload_bytes

    @router.put(f"{item}/upload", response_model=Version, openapi_extra=_UPLOAD_BODY)
    @body_limit(upload_limit, streamed=True)
    async def proxy_upload(
        request: Request, principal: Writer, name: TagName, version: TagVersion
    ) -> BaseModel:
        length = _content_length(request)
        declared = declared_digests(request)
        ref = version_ref(principal, name, version)
        # Refused before any byte reaches the store unless an upload is in progress.
        signed = await _call(request, reg.PRESIGN_PROXY_UPLOAD, ref)
        body = CountedBody(request, length)
        try:
            etag = await request.app.state.transfers.put(signed.url, body, length)
            body.check(declared, etag)
        except Exception as exc:
            # Whatever broke first (the client, its body, the store), the upload failed,
            # and the partial object goes with it (the registry queues its deletion).
            error = body.failure or exc
            reason = error.message if isinstance(error, EkibenError) else repr(error)
            await fail_upload(request, principal, name, version, reason)
            if body.failure is not None:
                raise body.failure from None
            raise
        # The client sends no finish_upload after a proxied PUT: the gateway finishes it.
        done = on_version(
            reg.FinishUpload,
            principal,
            name,
            version,
            status="success",
            expected_size=length,
            sha256=body.sha256,
        )
        finished = await _call(request, reg.FINISH_UPLOAD, done)
        await audit(
            request, principal, f"{kind.value}.upload.proxy", kind.value, f"{name}:{version}",
            {"bytes": length},
        )  # fmt: skip
        return answer(request, finished)

    @router.patch(f"{item}/presign_download_url", response_model=Version)
    async def presign_download_url(
        request: Request, principal: Reader, name: TagName, version: TagVersion
    ) -> BaseModel:
        ref = on_version(reg.PresignDownload, principal, name, version)
        # The registry refuses a version with no finished upload (the client's only
        # not-found report on a pull); a proxy-only answer then leaves the URL out.
        signed = await _call(request, reg.PRESIGN_DOWNLOAD, ref)
        url = signed.url if calls.strategy(request) == "presigned_url" else ""
        return answer(request, signed.version, download_url=url)

    @router.get(
        f"{item}/download",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-tar": {"schema": _BINARY}}}},
    )
    async def proxy_download(
        request: Request, principal: Reader, name: TagName, version: TagVersion
    ) -> StreamingResponse:
        ref = on_version(reg.PresignDownload, principal, name, version)
        signed = await _call(request, reg.PRESIGN_DOWNLOAD, ref)
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


def _content_length(request: Request) -> int:
    """The declared size (the route's limit was checked before the handler ran)."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        raise InvalidInput("a proxied upload needs a Content-Length header")
    return int(raw)


_BINARY = {"type": "string", "format": "binary"}
# The proxied upload's body is the archive's bytes, declared for clients and fuzzers.
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": _BINARY}},
    }
}


def _json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that validates its JSON body itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _json_body(request: Request) -> Any:
    """The parsed JSON body (`GatewayRoute` has read and parsed it), or None without one."""
    content_type = request.headers.get("content-type", "")
    if not await request.body() or "json" not in content_type.lower():
        return None
    return await request.json()


def _body_error(exc: ValidationError) -> InvalidInput:
    """A body that does not validate, as FastAPI would report it (`body.<field>: ...`)."""
    errors = exc.errors(include_url=False, include_input=False)
    located = [{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in errors]
    first = located[0] if located else {"loc": ["body"], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    return InvalidInput(f"{where}: {first['msg']}", details={"errors": located})


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
