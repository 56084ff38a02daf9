"""The deployment pages: the deploy form (create and edit), a deployment's page (live
status, revisions with rollback, services, URLs, Kubernetes events that follow the
deployment's changes, status history, terminate, delete) and
/clusters. Everything through the gateway's deployments API, as the `bentoml` client uses
it, plus `POST /api/ekiben/v1/deployments/{name}/rollback`.

A form the gateway refuses is drawn again with what was typed and the gateway's message
next to it; a form that passes sends the browser to the deployment's page, where the
status changes on screen from the event stream while it deploys.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.dashboard import service as ui
from services.dashboard.adapters.gateway import GatewayError
from services.dashboard.api import Page, Signed, check_form, clusters_of, settings_of

router = APIRouter()
# The API answers a form's mistakes with these; anything else is an error page.
FORM_ERRORS = (400, 403, 404, 409, 422)


def _link(cluster: str, name: str, suffix: str = "") -> str:
    return f"/deployments/{quote(cluster)}/{quote(name)}{suffix}"


async def _entry_service(page: Page, bento: str) -> str:
    """The bento's entry service: where a service row without a name applies."""
    name, _, version = bento.partition(":")
    try:
        found = await page.gateway.get(
            f"/api/v1/bento_repositories/{quote(name)}/bentos/{quote(version)}"
        )
    except GatewayError:
        return ""  # the gateway names a missing bento itself when the form is sent
    return ui.manifest_view(found.get("manifest")).entry_service


async def _list_page(
    page: Page, form: ui.DeployForm, status: int = 200, error: str = ""
) -> Response:
    answer, clusters = await asyncio.gather(
        page.gateway.get("/api/v2/deployments", all="true", count=ui.PAGE_SIZE), clusters_of(page)
    )
    return page.render(
        "deployments.html",
        status=status,
        deployments=answer["items"],
        problem="",
        search="",
        paging=ui.Paging.of(answer, 1),
        endpoint=settings_of(page.request).public_gateway_url,
        form=form,
        form_error=error,
        clusters=clusters,
    )


async def _submit(page: Page, form: ui.DeployForm, existing: dict[str, Any] | None) -> Any:
    """The gateway's answer to the form, or ValueError/GatewayError with the message."""
    body = form.body(None)  # every mistake but an unnamed service row, before any call
    if form.needs_entry_service:
        body = form.body(await _entry_service(page, form.bento))
    if existing is None:
        return await page.gateway.request(
            "POST", "/api/v2/deployments", json=body, params={"cluster": form.cluster}
        )
    cluster = existing["cluster"]["name"]
    return await page.gateway.request(
        "PUT",
        f"/api/v2/deployments/{quote(existing['name'])}",
        json=body,
        params={"cluster": cluster},
    )


@router.post("/deployments", response_class=HTMLResponse)
async def create(page: Signed) -> Response:
    fields = await page.request.form()
    check_form(page, str(fields.get("csrf", "")))
    form = ui.DeployForm.from_fields(fields)
    try:
        created = await _submit(page, form, None)
    except ValueError as exc:
        return await _list_page(page, form, 422, str(exc))
    except GatewayError as exc:
        if exc.status not in FORM_ERRORS:
            raise
        return await _list_page(page, form, exc.status, exc.message)
    return RedirectResponse(
        _link(created["cluster"]["name"], created["name"], "?deployed=1"), status_code=303
    )


async def _deployment(page: Page, cluster: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await page.gateway.get(
        f"/api/v2/deployments/{quote(name)}", cluster=cluster
    )
    return found


async def _kube_events(page: Page, cluster: str, name: str) -> tuple[list[Any], str]:
    """The deployment's Kubernetes Events, or none and why: only the cluster's own deployer
    reads them, and the page stands without them when it does not answer."""
    try:
        answer = await page.gateway.get(
            f"/api/ekiben/v1/deployments/{quote(name)}/events", cluster=cluster, limit=50
        )
    except GatewayError as exc:
        if exc.status in (401, 403):
            raise
        return [], exc.message
    items: list[Any] = answer["items"]
    return items, ""


async def _detail_page(
    page: Page,
    cluster: str,
    name: str,
    *,
    status: int = 200,
    form: ui.DeployForm | None = None,
    error: str = "",
    notice: str = "",
) -> Response:
    found = await _deployment(page, cluster, name)
    revisions, (events, events_problem) = await asyncio.gather(
        page.gateway.get(f"/api/ekiben/v1/deployments/{quote(name)}/revisions", cluster=cluster),
        _kube_events(page, cluster, name),
    )
    organization = page.viewer.organization
    return page.render(
        "deployment.html",
        status=status,
        d=found,
        revisions=revisions["items"],
        events=events,
        events_problem=events_problem,
        services=ui.DeployForm.from_deployment(found).services,
        form=form or ui.DeployForm.from_deployment(found),
        form_error=error,
        notice=notice,
        subject=f"{organization}/{found['cluster']['name']}/{found['kube_namespace']}/{name}",
    )


@router.get("/deployments/{cluster}/{name}", response_class=HTMLResponse)
async def detail(page: Signed, cluster: str, name: str, deployed: str = "") -> Response:
    notice = "Deploying: the status below changes as it happens." if deployed else ""
    return await _detail_page(page, cluster, name, notice=notice)


@router.get("/deployments/{cluster}/{name}/events", response_class=HTMLResponse)
async def kube_events(page: Signed, cluster: str, name: str) -> Response:
    """The events section of the deployment's page, drawn anew: its script asks for it when
    an event of the deployment arrives, so the table follows without a reload or a poll."""
    events, events_problem = await _kube_events(page, cluster, name)
    return page.render("_kube_events.html", events=events, events_problem=events_problem)


@router.post("/deployments/{cluster}/{name}", response_class=HTMLResponse)
async def update(page: Signed, cluster: str, name: str) -> Response:
    fields = await page.request.form()
    check_form(page, str(fields.get("csrf", "")))
    form = ui.DeployForm.from_fields(fields)
    existing = await _deployment(page, cluster, name)
    try:
        await _submit(page, form, existing)
    except ValueError as exc:
        return await _detail_page(page, cluster, name, status=422, form=form, error=str(exc))
    except GatewayError as exc:
        if exc.status not in FORM_ERRORS:
            raise
        return await _detail_page(
            page, cluster, name, status=exc.status, form=form, error=exc.message
        )
    return RedirectResponse(_link(cluster, name, "?deployed=1"), status_code=303)


async def _action(
    page: Page, cluster: str, name: str, method: str, path: str, **kwargs: Any
) -> Response:
    fields = await page.request.form()
    check_form(page, str(fields.get("csrf", "")))
    try:
        await page.gateway.request(method, path, params={"cluster": cluster}, **kwargs)
    except GatewayError as exc:
        if exc.status not in FORM_ERRORS:
            raise
        return await _detail_page(page, cluster, name, status=exc.status, error=exc.message)
    return RedirectResponse(_link(cluster, name), status_code=303)


@router.post("/deployments/{cluster}/{name}/terminate", response_class=HTMLResponse)
async def terminate(page: Signed, cluster: str, name: str) -> Response:
    return await _action(
        page, cluster, name, "POST", f"/api/v2/deployments/{quote(name)}/terminate"
    )


@router.post("/deployments/{cluster}/{name}/rollback", response_class=HTMLResponse)
async def rollback(page: Signed, cluster: str, name: str) -> Response:
    fields = await page.request.form()
    try:
        revision = int(str(fields.get("revision", "")))
    except ValueError:
        return await _detail_page(page, cluster, name, status=422, error="Pick a revision.")
    return await _action(
        page, cluster, name, "POST", f"/api/ekiben/v1/deployments/{quote(name)}/rollback",
        json={"revision": revision},
    )  # fmt: skip


@router.get("/deployments/{cluster}/{name}/delete", response_class=HTMLResponse)
async def confirm_delete(page: Signed, cluster: str, name: str) -> Response:
    found = await _deployment(page, cluster, name)
    return page.render("confirm_delete_deployment.html", d=found)


@router.post("/deployments/{cluster}/{name}/delete", response_class=HTMLResponse)
async def delete(page: Signed, cluster: str, name: str) -> Response:
    fields = await page.request.form()
    check_form(page, str(fields.get("csrf", "")))
    await page.gateway.request(
        "DELETE", f"/api/v2/deployments/{quote(name)}", params={"cluster": cluster}
    )
    return RedirectResponse(f"/deployments?deleted={quote(name)}", status_code=303)


@router.get("/clusters", response_class=HTMLResponse)
async def clusters(page: Signed) -> Response:
    found, deployments = await asyncio.gather(
        page.gateway.get("/api/v1/clusters", count=100),
        page.gateway.get("/api/v2/deployments", all="true", count=200),
    )
    by_cluster: dict[str, list[dict[str, Any]]] = {}
    for d in deployments["items"]:
        by_cluster.setdefault(d["cluster"]["name"], []).append(d)
    return page.render(
        "clusters.html", clusters=found["items"], by_cluster=by_cluster,
        shown=len(deployments["items"]), total=deployments["total"],
    )  # fmt: skip
