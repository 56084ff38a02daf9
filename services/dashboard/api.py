"""The dashboard's pages: server-rendered HTML on the gateway's public API.

Signing in trades a password or an API token for a gateway session (`POST
/api/ekiben/v1/sessions`), kept in the `ekiben_session` cookie: HttpOnly, SameSite=Lax,
Secure when the page came over HTTPS. Every page asks the gateway who the session is (so
a session that ended sends the browser to /login), and every form carries a CSRF token
derived from the session (the login form: a double-submit cookie); a POST without the
right one, or from another origin, is refused before the gateway is called.

Live views read `/live`, which relays the gateway's event stream (SSE) with the session:
the browser's EventSource reconnects with Last-Event-ID, and the gateway resumes there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from services.dashboard import service as ui
from services.dashboard.adapters.gateway import Gateway, GatewayError, relay
from services.dashboard.settings import DashboardSettings

router = APIRouter()
SESSION_COOKIE = "ekiben_session"
CSRF_COOKIE = "ekiben_csrf"
KINDS = ("bento", "model")


def templates(request: Request) -> Jinja2Templates:
    found: Jinja2Templates = request.app.state.templates
    return found


def settings_of(request: Request) -> DashboardSettings:
    found: DashboardSettings = request.app.state.settings
    return found


def gateway_for(request: Request, session: str | None = None) -> Gateway:
    return Gateway(
        request.app.state.http,
        settings_of(request).gateway_url.rstrip("/"),
        session if session is not None else request.cookies.get(SESSION_COOKIE),
    )


class SignInRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class CsrfRefused(Exception):
    pass


class Page:
    """What every signed-in page has: the viewer, their gateway, the form token."""

    def __init__(self, request: Request, gateway: Gateway, viewer: ui.Viewer, csrf: str):
        self.request = request
        self.gateway = gateway
        self.viewer = viewer
        self.csrf = csrf

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates(self.request).TemplateResponse(
            self.request,
            template,
            {"viewer": self.viewer, "csrf": self.csrf, "ui": ui, **context},
            status_code=status,
        )


async def signed_in(request: Request) -> Page:
    secret = request.cookies.get(SESSION_COOKIE)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not secret:
        raise SignInRequired(target)
    gateway = gateway_for(request, secret)
    try:
        session = await gateway.current_session()
    except GatewayError as exc:
        if exc.status in (401, 404):
            raise SignInRequired(target) from None
        raise
    page = Page(request, gateway, ui.Viewer.from_session(session), ui.csrf_for_session(secret))
    # Error pages raised later in this request keep the navigation of the signed-in page.
    request.state.page = page
    return page


Signed = Annotated[Page, Depends(signed_in)]


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # old browsers and curl; the token still has to match
    # Behind a proxy that rewrites Host, the name the browser used is X-Forwarded-Host.
    hosts = {request.headers.get("host", "")}
    hosts.update(h.strip() for h in request.headers.get("x-forwarded-host", "").split(",") if h)
    return urlsplit(origin).netloc in hosts


def check_form(page: Page, token: str) -> None:
    if not _same_origin(page.request) or not ui.same_token(token, page.csrf):
        raise CsrfRefused


def _secure(request: Request) -> bool:
    mode = settings_of(request).cookie_secure
    if mode != "auto":
        return mode == "always"
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return request.url.scheme == "https" or forwarded == "https"


def install(app: Any) -> None:
    """The exception handlers that turn sign-in, CSRF and gateway errors into pages."""

    async def to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        response = RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def csrf(request: Request, exc: Exception) -> Response:
        return _message_page(
            request, 403, "This form has expired", "Reload the page and try again."
        )

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        title = {403: "Not allowed", 404: "Not found", 503: "The gateway is unavailable"}
        return _message_page(request, exc.status, title.get(exc.status, "Error"), exc.message)

    app.add_exception_handler(SignInRequired, to_login)
    app.add_exception_handler(CsrfRefused, csrf)
    app.add_exception_handler(GatewayError, gateway_error)


def _message_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    page: Page | None = getattr(request.state, "page", None)
    return templates(request).TemplateResponse(
        request,
        "message.html",
        {
            "viewer": page.viewer if page else None,
            "csrf": page.csrf if page else "",
            "ui": ui,
            "title": title,
            "message": message,
        },
        status_code=status,
    )


# --- signing in ------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    # Only a path on this site: never an open redirect.
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_page(
    request: Request, status: int = 200, error: str = "", username: str = "", tab: str = ""
) -> HTMLResponse:
    token = request.cookies.get(CSRF_COOKIE) or ui.new_csrf_cookie()
    response = templates(request).TemplateResponse(
        request,
        "login.html",
        {
            "viewer": None,
            "csrf": token,
            "ui": ui,
            "error": error,
            "username": username,
            "tab": tab,
            "next": _safe_next(request.query_params.get("next")),
        },
        status_code=status,
    )
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    api_token: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    if not _same_origin(request) or not ui.same_token(csrf, request.cookies.get(CSRF_COOKIE)):
        return _login_page(request, 403, "This form has expired: try again.", username)
    if api_token.strip():
        body = {"api_token": api_token.strip()}
        tab = "token"
    elif username.strip() and password:
        body = {"username": username.strip(), "password": password}
        tab = ""
    else:
        return _login_page(
            request, 422, "Enter a username and password, or an API token.", username
        )
    try:
        session = await gateway_for(request, "").sign_in(
            body, request.headers.get("user-agent", "")
        )
    except GatewayError as exc:
        status = exc.status if exc.status in (401, 403, 422, 429) else 503
        return _login_page(request, status, exc.message, username, tab)
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session["session"],
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
        max_age=int(settings_of(request).cookie_max_age_seconds),
    )
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(page: Signed, csrf: Annotated[str, Form()] = "") -> Response:
    check_form(page, csrf)
    try:
        await page.gateway.sign_out()
    except GatewayError as exc:
        if exc.status != 401:
            raise
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/setup", response_class=HTMLResponse)
async def setup_form(request: Request, code: str = "") -> Response:
    return _setup_page(request, code)


def _setup_page(request: Request, code: str, status: int = 200, error: str = "") -> Response:
    token = request.cookies.get(CSRF_COOKIE) or ui.new_csrf_cookie()
    response = templates(request).TemplateResponse(
        request,
        "setup.html",
        {"viewer": None, "csrf": token, "ui": ui, "code": code, "error": error},
        status_code=status,
    )
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    return response


@router.post("/setup", response_class=HTMLResponse)
async def setup(
    request: Request,
    code: Annotated[str, Form()],
    password: Annotated[str, Form()],
    confirm: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    if not _same_origin(request) or not ui.same_token(csrf, request.cookies.get(CSRF_COOKIE)):
        return _setup_page(request, code, 403, "This form has expired: try again.")
    if password != confirm:
        return _setup_page(request, code, 422, "The two passwords differ.")
    try:
        user = await gateway_for(request, "").set_up(code, password)
    except GatewayError as exc:
        return _setup_page(request, code, exc.status, exc.message)
    return RedirectResponse(f"/login?next=/&user={quote(user['name'])}", status_code=303)


# --- home and activity -----------------------------------------------------------------


async def _deployments(page: Page, **params: Any) -> tuple[dict[str, Any], str]:
    """A page of deployments, or none and why (the deployer's API may be unreachable)."""
    try:
        answer = await page.gateway.get("/api/v2/deployments", all="true", **params)
    except GatewayError as exc:
        if exc.status in (401, 403):
            raise
        return {"items": [], "total": 0}, exc.message
    return answer, ""


@router.get("/", response_class=HTMLResponse)
async def home(page: Signed) -> Response:
    bentos, models, (deployments, problem) = await asyncio.gather(
        page.gateway.get("/api/v1/bentos", count=1),
        page.gateway.get("/api/v1/models", count=1),
        _deployments(page, count=10),
    )
    return page.render(
        "home.html",
        bentos=bentos["total"],
        models=models["total"],
        deployments=deployments["items"],
        deployments_problem=problem,
        endpoint=settings_of(page.request).public_gateway_url,
    )


@router.get("/deployments", response_class=HTMLResponse)
async def deployments_page(page: Signed, search: str = "", page_number: int = 1) -> Response:
    number = max(1, page_number)
    (answer, problem), clusters = await asyncio.gather(
        _deployments(
            page, search=search.strip(), start=(number - 1) * ui.PAGE_SIZE, count=ui.PAGE_SIZE
        ),
        clusters_of(page) if page.viewer.can_write else _no_clusters(),
    )
    return page.render(
        "deployments.html",
        deployments=answer["items"],
        problem=problem,
        search=search,
        paging=ui.Paging.of(answer, number),
        endpoint=settings_of(page.request).public_gateway_url,
        form=ui.DeployForm(services=[]),
        form_error="",
        clusters=clusters,
    )


async def _no_clusters() -> list[dict[str, Any]]:
    return []


async def clusters_of(page: Page) -> list[dict[str, Any]]:
    """The announced clusters the deploy form offers (none when the API cannot say)."""
    try:
        answer = await page.gateway.get("/api/v1/clusters", count=100)
    except GatewayError as exc:
        if exc.status in (401, 403):
            raise
        return []
    items: list[dict[str, Any]] = answer["items"]
    return items


@router.get("/builds", response_class=HTMLResponse)
async def builds_page(
    page: Signed, status: str = "", bento: str = "", page_number: int = 1
) -> Response:
    number = max(1, page_number)
    error = ""
    try:
        answer = await page.gateway.get(
            "/api/ekiben/v1/builds", status=status.strip(), bento=bento.strip(),
            start=(number - 1) * ui.PAGE_SIZE, count=ui.PAGE_SIZE,
        )  # fmt: skip
    except GatewayError as exc:
        if exc.status in (401, 403):
            raise
        answer, error = {"items": [], "total": 0}, exc.message
    return page.render(
        "builds.html",
        builds=answer["items"],
        error=error,
        chosen_status=status,
        bento=bento,
        statuses=("pending", "building", "succeeded", "failed"),
        paging=ui.Paging.of(answer, number),
    )


@router.post("/builds", response_class=HTMLResponse)
async def rebuild(
    page: Signed, bento: Annotated[str, Form()], csrf: Annotated[str, Form()] = ""
) -> Response:
    """Build the bento's image again (forced): the builds list then shows it live."""
    check_form(page, csrf)
    await page.gateway.request(
        "POST", "/api/ekiben/v1/builds", json={"bento": bento, "force": True}
    )
    return RedirectResponse(f"/builds?bento={quote(bento)}", status_code=303)


@router.get("/builds/{build_id}", response_class=HTMLResponse)
async def build_page(page: Signed, build_id: str) -> Response:
    """One build: its status (live from the event stream) and its log, which the page's
    script reads from `/builds/{id}/log` and appends to as lines arrive."""
    build = await page.gateway.get(f"/api/ekiben/v1/builds/{quote(build_id, safe='')}")
    name, _, version = build["bento"].partition(":")
    return page.render("build.html", b=build, bento_name=name, bento_version=version)


@router.get("/builds/{build_id}/log")
async def build_log(request: Request, build_id: str, follow: bool = True) -> Response:
    """The gateway's build log, relayed as it streams: plain text, so the page (or a
    reader opening the link) shows the lines as text, never as markup."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return _plain(401, "Sign in to read this log.")
    try:
        upstream = await gateway_for(request, secret).build_log(build_id, follow=follow)
    except GatewayError as exc:
        return _plain(exc.status, exc.message)
    return StreamingResponse(
        relay(upstream),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8")


@router.get("/events", response_class=HTMLResponse)
async def events_page(page: Signed, type: str = "", subject: str = "") -> Response:
    return page.render("events.html", types=ui.EVENT_TYPES, chosen_type=type, subject=subject)


@router.get("/live")
async def live(
    request: Request,
    types: str = "",
    subject: str = "",
    replay: str = "",
) -> Response:
    """The gateway's event stream, relayed with this browser's session."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return Response(status_code=401)
    last = request.headers.get("last-event-id")
    try:
        upstream = await gateway_for(request, secret).events(
            {"types": types, "subject": subject, "replay": "" if last else replay}, last
        )
    except GatewayError as exc:
        # 204 tells EventSource to stop reconnecting (signed out, not allowed); a
        # position no longer kept (410) starts again from now.
        if exc.status == 410:
            upstream = await gateway_for(request, secret).events(
                {"types": types, "subject": subject}, None
            )
        else:
            return Response(status_code=204 if exc.status in (401, 403, 422) else 503)
    return StreamingResponse(
        relay(upstream),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- bentos and models -----------------------------------------------------------------


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise GatewayError(404, "not_found", f"no such page: /{kind}s")
    return kind


async def _listing(page: Page, kind: str, repository: str | None) -> Response:
    query = ui.ListingQuery.parse(dict(page.request.query_params))
    path = (
        f"/api/v1/{kind}_repositories/{quote(repository)}/{kind}s"
        if repository
        else f"/api/v1/{kind}s"
    )
    error = ""
    try:
        answer = await page.gateway.get(path, **query.gateway_params())
    except GatewayError as exc:
        if exc.status != 422:
            raise
        answer, error = {"items": [], "total": 0}, exc.message
    return page.render(
        "versions.html",
        kind=kind,
        repository=repository,
        query=query,
        items=answer["items"],
        paging=ui.Paging.of(answer, query.page),
        sorts=ui.SORTS,
        error=error,
        endpoint=settings_of(page.request).public_gateway_url,
    )


@router.get("/bentos", response_class=HTMLResponse)
async def bentos(page: Signed) -> Response:
    return await _listing(page, "bento", None)


@router.get("/models", response_class=HTMLResponse)
async def models(page: Signed) -> Response:
    return await _listing(page, "model", None)


@router.get("/{kind}s/{name}", response_class=HTMLResponse)
async def repository_versions(page: Signed, kind: str, name: str) -> Response:
    return await _listing(page, _kind(kind), name)


def _version_path(kind: str, name: str, version: str) -> str:
    return f"/api/v1/{kind}_repositories/{quote(name)}/{kind}s/{quote(version)}"


async def _version_page(
    page: Page, kind: str, name: str, version: str, *, status: int = 200, **extra: Any
) -> Response:
    found = await page.gateway.get(_version_path(kind, name, version))
    manifest = ui.manifest_view(found.get("manifest")) if kind == "bento" else None
    used_by: list[Any] = []
    if kind == "model":
        # The other direction of the bento -> model links: bentos whose manifest uses it.
        tag = f"{found['repository']['name']}:{found['version']}"
        using = await page.gateway.get("/api/v1/bentos", q=f"model:{tag}", count=50)
        used_by = using["items"]
    return page.render(
        "version.html",
        status=status,
        kind=kind,
        item=found,
        manifest=manifest,
        used_by=used_by,
        labels_text="\n".join(f"{lb['key']}={lb['value']}" for lb in found.get("labels", [])),
        **{"error": "", "saved": False, **extra},
    )


@router.get("/{kind}s/{name}/{version}", response_class=HTMLResponse)
async def version_detail(page: Signed, kind: str, name: str, version: str) -> Response:
    return await _version_page(page, _kind(kind), name, version)


@router.post("/{kind}s/{name}/{version}/labels", response_class=HTMLResponse)
async def edit_labels(
    page: Signed,
    kind: str,
    name: str,
    version: str,
    labels: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_form(page, csrf)
    kind = _kind(kind)
    try:
        parsed = ui.parse_labels(labels)
    except ValueError as exc:
        return await _version_page(page, kind, name, version, status=422, error=str(exc))
    try:
        await page.gateway.request(
            "PATCH", _version_path(kind, name, version), json={"labels": parsed}
        )
    except GatewayError as exc:
        if exc.status not in (403, 422):
            raise
        return await _version_page(page, kind, name, version, status=exc.status, error=exc.message)
    return RedirectResponse(f"/{kind}s/{name}/{version}?saved=1", status_code=303)


@router.get("/{kind}s/{name}/{version}/delete", response_class=HTMLResponse)
async def confirm_delete(page: Signed, kind: str, name: str, version: str) -> Response:
    kind = _kind(kind)
    found = await page.gateway.get(_version_path(kind, name, version))
    return page.render("confirm_delete.html", kind=kind, item=found)


@router.post("/{kind}s/{name}/{version}/delete", response_class=HTMLResponse)
async def delete_version(
    page: Signed, kind: str, name: str, version: str, csrf: Annotated[str, Form()] = ""
) -> Response:
    check_form(page, csrf)
    kind = _kind(kind)
    await page.gateway.request("DELETE", _version_path(kind, name, version))
    return RedirectResponse(f"/{kind}s?deleted={quote(f'{name}:{version}')}", status_code=303)


@router.get("/{kind}s/{name}/{version}/download")
async def download(page: Signed, kind: str, name: str, version: str) -> Response:
    """To the archive: a presigned URL straight to the object store when the gateway gives
    one, else the gateway's proxied download relayed through here."""
    kind = _kind(kind)
    path = _version_path(kind, name, version)
    signed = await page.gateway.request("PATCH", f"{path}/presign_download_url")
    if signed.get("presigned_download_url"):
        return RedirectResponse(signed["presigned_download_url"], status_code=303)
    upstream = await page.gateway.http.send(
        page.gateway.http.build_request(
            "GET", f"{page.gateway.base_url}{path}/download", headers=page.gateway._headers()
        ),
        stream=True,
    )
    headers = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() in ("content-length", "content-disposition", "content-type")
    }
    return StreamingResponse(relay(upstream), status_code=upstream.status_code, headers=headers)


# --- tokens ----------------------------------------------------------------------------


async def _tokens_page(page: Page, status: int = 200, **extra: Any) -> Response:
    answer = await page.gateway.get("/api/v1/api_tokens", count=100)
    return page.render(
        "tokens.html",
        status=status,
        tokens=answer["items"],
        endpoint=settings_of(page.request).public_gateway_url,
        **{"created": None, "error": "", **extra},
    )


@router.get("/tokens", response_class=HTMLResponse)
async def tokens(page: Signed) -> Response:
    return await _tokens_page(page)


@router.post("/tokens", response_class=HTMLResponse)
async def create_token(
    page: Signed,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    expires_days: Annotated[str, Form()] = "30",
    scope: Annotated[list[str] | None, Form()] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_form(page, csrf)
    body: dict[str, Any] = {"name": name.strip(), "description": description.strip()}
    if scope:
        body["scopes"] = scope
    if expires_days.strip() and expires_days != "never":
        from datetime import UTC, datetime, timedelta  # noqa: PLC0415

        try:
            days = int(expires_days)
        except ValueError:
            return await _tokens_page(page, 422, error="Expiry: a number of days, or never.")
        body["expired_at"] = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    try:
        created = await page.gateway.request("POST", "/api/v1/api_tokens", json=body)
    except GatewayError as exc:
        if exc.status not in (403, 409, 422):
            raise
        return await _tokens_page(page, exc.status, error=exc.message)
    return await _tokens_page(page, 201, created=created)


@router.post("/tokens/{uid}/revoke", response_class=HTMLResponse)
async def revoke_token(page: Signed, uid: str, csrf: Annotated[str, Form()] = "") -> Response:
    check_form(page, csrf)
    try:
        await page.gateway.request("DELETE", f"/api/v1/api_tokens/{quote(uid)}")
    except GatewayError as exc:
        if exc.status not in (403, 404, 409):
            raise
        return await _tokens_page(page, exc.status, error=exc.message)
    return RedirectResponse("/tokens?revoked=1", status_code=303)


# --- members and audit -----------------------------------------------------------------


def _admins_only(page: Page) -> None:
    if not page.viewer.is_admin:
        raise GatewayError(
            403, "forbidden", f"Only admins of {page.viewer.organization} see this page."
        )


async def _members_page(page: Page, status: int = 200, **extra: Any) -> Response:
    members = await page.gateway.get("/api/v1/members")
    return page.render(
        "members.html", status=status, members=members, **{"error": "", "issued": None, **extra}
    )


@router.get("/members", response_class=HTMLResponse)
async def members(page: Signed) -> Response:
    _admins_only(page)
    return await _members_page(page)


async def _member_change(page: Page, call: Callable[[], Awaitable[Any]]) -> Response:
    try:
        await call()
    except GatewayError as exc:
        if exc.status not in (403, 404, 409, 422):
            raise
        return await _members_page(page, exc.status, error=exc.message)
    return RedirectResponse("/members", status_code=303)


@router.post("/members/role", response_class=HTMLResponse)
async def change_role(
    page: Signed,
    username: Annotated[str, Form()],
    role: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_form(page, csrf)
    _admins_only(page)
    body = {"usernames": [username], "role": role}
    return await _member_change(
        page, lambda: page.gateway.request("POST", "/api/v1/members", json=body)
    )


@router.post("/members/new", response_class=HTMLResponse)
async def add_user(
    page: Signed,
    username: Annotated[str, Form()],
    role: Annotated[str, Form()],
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_form(page, csrf)
    _admins_only(page)

    async def create() -> None:
        await page.gateway.request(
            "POST", "/api/v1/users", json={"name": username, "email": email, "role": role}
        )
        if password:
            await page.gateway.request(
                "PUT", f"/api/ekiben/v1/users/{quote(username)}/password",
                json={"password": password},
            )  # fmt: skip

    return await _member_change(page, create)


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    page: Signed, action: str = "", actor: str = "", resource_type: str = "", page_number: int = 1
) -> Response:
    _admins_only(page)
    number = max(1, page_number)
    filters = {
        "action": action.strip(),
        "actor": actor.strip(),
        "resource_type": resource_type.strip(),
    }
    answer = await page.gateway.get(
        "/api/ekiben/v1/audit", **filters, start=(number - 1) * ui.PAGE_SIZE, count=ui.PAGE_SIZE
    )
    return page.render(
        "audit.html",
        records=answer["items"],
        filters=filters,
        link=lambda **changes: (
            "?" + urlencode({k: v for k, v in {**filters, **changes}.items() if v})
        ),
        paging=ui.Paging.of(answer, number),
    )
