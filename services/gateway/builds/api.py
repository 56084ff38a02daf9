"""The builds API: `POST/GET /api/ekiben/v1/builds`, `GET .../{id}`, `GET .../{id}/logs`.

A build request names `bento` as `name:version` and may `force` a rebuild; the builder
answers with the build that covers it (an existing one when the same content was built or
is building). Lists are newest first, filtered by `bento` and `status`. Logs are plain text,
streamed while the build runs (`?follow=false` for what is there now).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from services.gateway import calls
from services.gateway.audit.service import audit
from services.gateway.builds.schemas import (
    BuildSchema,
    RequestBuildBody,
    build_schema,
    parse_bento_tag,
)
from services.gateway.builds.service import log_stream
from services.gateway.guard import GatewayRoute
from services.gateway.identity.auth import Principal, Role, current_principal, require_role
from services.gateway.schemas import ListSchema, Page, list_schema, paging
from shared.contracts import builder as contract
from shared.contracts.vocabulary import BuildStatus
from shared.errors import InvalidInput
from shared.http import error_responses

router = APIRouter(route_class=GatewayRoute, tags=["builds"])
BUILDS_PATH = "/api/ekiben/v1/builds"
Reader = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(require_role(Role.DEVELOPER))]
Paging = Annotated[Page, Depends(paging())]


@router.post(BUILDS_PATH, status_code=202)
async def request_build(request: Request, principal: Writer, body: RequestBuildBody) -> BuildSchema:
    """Request a build of `bento` (or a forced rebuild); the build that covers it."""
    name, version = parse_bento_tag(body.bento)
    build = await calls.rpc(request).call(
        contract.REQUEST_BUILD,
        contract.RequestBuild(
            organization=principal.organization,
            bento_name=name,
            bento_version=version,
            force=body.force,
            trigger="manual",
            requested_by=principal.user_name,
        ),
    )
    await audit(
        request, principal, "build.request", "build", build.id,
        {"bento": body.bento, "force": body.force},
    )  # fmt: skip
    return build_schema(build)


@router.get(BUILDS_PATH)
async def list_builds(
    request: Request,
    principal: Reader,
    page: Paging,
    bento: Annotated[str, Query(description="Only builds of this `name:version`.")] = "",
    status: Annotated[str, Query(description="pending, building, succeeded or failed.")] = "",
) -> ListSchema[BuildSchema]:
    """Builds of the organization, newest first."""
    name = version = None
    if bento.strip():
        try:
            name, version = parse_bento_tag(bento.strip())
        except ValueError as exc:
            raise InvalidInput(f"bento: {exc}") from None
    wanted = None
    if status.strip():
        try:
            wanted = BuildStatus(status.strip())
        except ValueError:
            choices = ", ".join(s.value for s in BuildStatus)
            raise InvalidInput(f"status: one of {choices}, not {status[:40]!r}") from None
    found = await calls.rpc(request).call(
        contract.LIST_BUILDS,
        contract.ListBuilds(
            organization=principal.organization, bento_name=name, bento_version=version,
            status=wanted, start=page.start, count=page.count,
        ),
    )  # fmt: skip
    return list_schema(
        [build_schema(b) for b in found.items], start=page.start, count=page.count,
        total=found.total,
    )  # fmt: skip


@router.get(f"{BUILDS_PATH}/{{build_id}}")
async def get_build(request: Request, principal: Reader, build_id: str) -> BuildSchema:
    build = await calls.rpc(request).call(
        contract.GET_BUILD, contract.GetBuild(organization=principal.organization, id=build_id)
    )
    return build_schema(build)


@router.get(
    f"{BUILDS_PATH}/{{build_id}}/logs",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The log, line by line",
        },
        **error_responses(404),
    },
)
async def build_logs(
    request: Request,
    principal: Reader,
    build_id: str,
    follow: Annotated[bool, Query(description="Keep streaming while the build runs.")] = True,
) -> StreamingResponse:
    """The build's output; streamed until the build ends (unless `follow=false`)."""
    rpc = calls.rpc(request)
    # Asked once before the answer starts, so an unknown build is a clean 404.
    await rpc.call(
        contract.GET_BUILD, contract.GetBuild(organization=principal.organization, id=build_id)
    )
    return StreamingResponse(
        log_stream(rpc, principal.organization, build_id, follow=follow),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
