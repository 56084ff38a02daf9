"""The dashboard's logic, free of I/O: who may do what, listing queries, manifests, CSRF.

Everything here works on the gateway's JSON answers, so the pages and the tests read the
same shapes the public API documents.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from shared.events import EVENT_TYPES as KNOWN_EVENTS

WRITE_SCOPES = frozenset({"api", "write_organization", "operate_organization"})
ADMIN_SCOPES = frozenset({"api", "operate_organization"})
_RANK = {"guest": 0, "developer": 1, "admin": 2}

# What `/bentos` and `/models` offer to sort by, as the gateway's `sort:` words.
SORTS = {
    "newest": "created_at-desc",
    "oldest": "created_at-asc",
    "largest": "size-desc",
    "smallest": "size-asc",
    "name": "name-asc",
}
PAGE_SIZE = 20


@dataclass(frozen=True)
class Section:
    """A top-level page in the navigation. A new feature's pages (builds, deployments,
    clusters) add a router in `api` and a line here; `base.html` draws the rest."""

    href: str
    label: str
    admins_only: bool = False


NAV = (
    Section("/", "Home"),
    Section("/bentos", "Bentos"),
    Section("/models", "Models"),
    Section("/builds", "Builds"),
    Section("/deployments", "Deployments"),
    Section("/clusters", "Clusters"),
    Section("/events", "Events"),
    Section("/tokens", "API tokens"),
    Section("/members", "Members", admins_only=True),
    Section("/audit", "Audit", admins_only=True),
)
# Every event type there is, from the one contract (`shared.events`): the browser's
# EventSource listens by name, so a type added there shows in the feed with no change here.
ALL_EVENT_TYPES = tuple(sorted(KNOWN_EVENTS))
# What the /events filter offers: each type, and a prefix per resource.
EVENT_TYPES = (
    *sorted({f"{t.split('.')[0]}.*" for t in ALL_EVENT_TYPES}),
    *ALL_EVENT_TYPES,
)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person, from the gateway's answer about their session."""

    name: str
    organization: str
    role: str
    scopes: frozenset[str]
    method: str
    expires_at: str

    @classmethod
    def from_session(cls, session: dict[str, Any]) -> Viewer:
        return cls(
            name=session["user"]["name"],
            organization=session["organization"]["name"],
            role=session.get("role") or "guest",
            scopes=frozenset(session.get("scopes") or ()),
            method=session.get("method", "password"),
            expires_at=session.get("expires_at", ""),
        )

    @property
    def can_write(self) -> bool:
        return _RANK.get(self.role, 0) >= 1 and bool(self.scopes & WRITE_SCOPES)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and bool(self.scopes & ADMIN_SCOPES)


# --- CSRF ------------------------------------------------------------------------------


def csrf_for_session(session_secret: str) -> str:
    """The form token of a session: derived from its secret, which only the HttpOnly
    cookie holds, so another site can neither read nor compute it."""
    return hmac.new(b"ekiben-dashboard-csrf", session_secret.encode(), hashlib.sha256).hexdigest()


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


# --- listings --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingQuery:
    """What the list form asks for, and the gateway parameters it becomes."""

    search: str = ""
    labels: tuple[str, ...] = ()
    sort: str = "newest"
    page: int = 1

    @classmethod
    def parse(cls, params: dict[str, str]) -> ListingQuery:
        labels = tuple(
            part.strip()
            for part in params.get("labels", "").replace(",", " ").split()
            if "=" in part.strip() or part.strip()
        )
        sort = params.get("sort", "newest")
        try:
            page = max(1, int(params.get("page", "1") or 1))
        except ValueError:
            page = 1
        return cls(
            search=params.get("search", "").strip()[:200],
            labels=labels,
            sort=sort if sort in SORTS else "newest",
            page=page,
        )

    def gateway_params(self) -> dict[str, str]:
        q = [f"label:{label}" for label in self.labels]
        q.append(f"sort:{SORTS[self.sort]}")
        params = {
            "q": " ".join(q),
            "start": str((self.page - 1) * PAGE_SIZE),
            "count": str(PAGE_SIZE),
        }
        if self.search:
            params["search"] = self.search
        return params

    def link(self, **changes: Any) -> str:
        values = {
            "search": self.search,
            "labels": " ".join(self.labels),
            "sort": self.sort,
            "page": self.page,
            **changes,
        }
        return "?" + urlencode({k: v for k, v in values.items() if v not in ("", None)})


@dataclass(frozen=True)
class Paging:
    first: int
    last: int
    total: int
    page: int
    pages: int

    @classmethod
    def of(cls, answer: dict[str, Any], page: int) -> Paging:
        total = int(answer.get("total", 0))
        shown = len(answer.get("items", []))
        first = (page - 1) * PAGE_SIZE + 1 if shown else 0
        return cls(
            first=first,
            last=first + shown - 1 if shown else 0,
            total=total,
            page=page,
            pages=max(1, -(-total // PAGE_SIZE)),
        )


def parse_labels(text: str) -> list[dict[str, str]]:
    """`key=value` per line (or comma-separated) into the API's label list.

    Raises ValueError with a message for a line without `=` or an empty key.
    """
    labels: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{line!r}: write each label as key=value")
        labels[key.strip()] = value.strip()
    return [{"key": k, "value": v} for k, v in labels.items()]


# --- manifests -------------------------------------------------------------------------


@dataclass
class Api:
    name: str
    route: str
    doc: str = ""
    input: str = ""
    output: str = ""


@dataclass
class ServiceView:
    name: str
    models: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    config: str = ""


@dataclass
class ManifestView:
    entry_service: str = ""
    bentoml_version: str = ""
    services: list[ServiceView] = field(default_factory=list)
    apis: list[Api] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def _pretty(value: Any) -> str:
    if value in (None, "", {}, []):
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True)


def manifest_view(manifest: dict[str, Any] | None) -> ManifestView:
    """The parts of a bento manifest people look for, from BentoML 1.2+ manifests (the
    `schema` of the entry service, `services`) and older ones (`apis`, `runners`)."""
    m = manifest or {}
    view = ManifestView(
        entry_service=str(m.get("entry_service") or m.get("service") or ""),
        bentoml_version=str(m.get("bentoml_version") or ""),
    )
    for service in m.get("services") or []:
        if not isinstance(service, dict):
            continue
        view.services.append(
            ServiceView(
                name=str(service.get("name", "")),
                models=[
                    str(model.get("tag", "")) if isinstance(model, dict) else str(model)
                    for model in service.get("models") or []
                ],
                dependencies=[
                    str(d.get("service") or d.get("name") or d) if isinstance(d, dict) else str(d)
                    for d in service.get("dependencies") or []
                ],
                config=_pretty(service.get("config")),
            )
        )
    schema = m.get("schema") or {}
    routes = schema.get("routes") if isinstance(schema, dict) else None
    for route in routes or []:
        if isinstance(route, dict):
            view.apis.append(
                Api(
                    name=str(route.get("name", "")),
                    route=str(route.get("route", "")),
                    doc=str(route.get("description") or route.get("doc") or ""),
                    input=_pretty(route.get("input")),
                    output=_pretty(route.get("output")),
                )
            )
    if not view.apis:
        for name, api in (m.get("apis") or {}).items():
            if isinstance(api, dict):
                view.apis.append(
                    Api(
                        name=str(name),
                        route=str(api.get("route", "")),
                        doc=str(api.get("doc") or ""),
                        input=_pretty(api.get("input") or api.get("input_type")),
                        output=_pretty(api.get("output") or api.get("output_type")),
                    )
                )
    models = [str(tag) for tag in m.get("models") or []]
    for service in view.services:
        models.extend(tag for tag in service.models if tag not in models)
    view.models = list(dict.fromkeys(t for t in models if t))
    return view


def duration(start: str | None, end: str | None) -> str:
    """`1m 05s` between two RFC 3339 times (to now when `end` is None); "" without a start."""
    if not start:
        return ""
    try:
        begun = datetime.fromisoformat(start)
        ended = datetime.fromisoformat(end) if end else datetime.now(UTC)
    except ValueError:
        return ""
    seconds = max(0, int((ended - begun).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def tag_link(kind: str, tag: str) -> str:
    name, _, version = tag.partition(":")
    return f"/{kind}s/{name}/{version or 'latest'}"


# --- formatting ------------------------------------------------------------------------


def human_size(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


def when(value: str | None) -> str:
    """An RFC 3339 time as `2026-12-02 06:15 UTC`."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def login_command(endpoint: str, token: str) -> str:
    return f"bentoml cloud login --endpoint {endpoint} --api-token {token}"


# --- the deploy form -------------------------------------------------------------------


@dataclass
class ServiceRow:
    """One service's scaling and resources, as the form's fields hold them (text)."""

    name: str = ""
    min_replicas: str = ""
    max_replicas: str = ""
    cpu: str = ""
    memory: str = ""

    @property
    def blank(self) -> bool:
        return not (self.min_replicas or self.max_replicas or self.cpu or self.memory)


def _count(label: str, text: str) -> int | None:
    if not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{label}: a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"{label}: zero or more, got {value}")
    return value


@dataclass
class DeployForm:
    """The deploy form (create and edit) and the gateway body it becomes.

    `body()` raises ValueError with a message naming the field, before the gateway is
    called; what the gateway refuses comes back as its own message.
    """

    name: str = ""
    cluster: str = ""
    bento: str = ""
    envs: str = ""
    secrets: str = ""
    access_authorization: bool = False
    services: list[ServiceRow] = field(default_factory=list)
    # The entry service's Ingress: on by default; empty host or TLS secret: the cluster's.
    ingress_enabled: bool = True
    ingress_host: str = ""
    ingress_tls_secret: str = ""

    @classmethod
    def from_fields(cls, fields: Any) -> DeployForm:
        """From a multi-dict of the posted form (`getlist` for the service rows)."""
        columns = ("service", "min_replicas", "max_replicas", "cpu", "memory")
        lists = [[str(v).strip() for v in fields.getlist(c)] for c in columns]
        width = max((len(c) for c in lists), default=0)
        rows = [
            ServiceRow(*(col[i] if i < len(col) else "" for col in lists)) for i in range(width)
        ]
        return cls(
            name=str(fields.get("name", "")).strip(),
            cluster=str(fields.get("cluster", "")).strip(),
            bento=str(fields.get("bento", "")).strip(),
            envs=str(fields.get("envs", "")),
            secrets=str(fields.get("secrets", "")),
            access_authorization=bool(fields.get("access_authorization")),
            services=rows,
            ingress_enabled=bool(fields.get("ingress_enabled")),
            ingress_host=str(fields.get("ingress_host", "")).strip().lower(),
            ingress_tls_secret=str(fields.get("ingress_tls_secret", "")).strip(),
        )

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any]) -> DeployForm:
        """The form filled with what the deployment's latest revision runs."""
        revision = deployment.get("latest_revision") or {}
        target = (revision.get("targets") or [None])[0] or {}
        config = target.get("config") or {}
        bento = target.get("bento") or {}
        ingress = config.get("ingress") or {}  # none: the default, an Ingress on the host
        rows = []
        for key, svc in (config.get("services") or {}).items():
            scaling = svc.get("scaling") or {}
            requests = ((svc.get("config_overrides") or {}).get("resources") or {}).get(
                "requests"
            ) or {}
            rows.append(
                ServiceRow(
                    name=key,
                    min_replicas=str(scaling.get("min_replicas") or ""),
                    max_replicas=str(scaling.get("max_replicas") or ""),
                    cpu=str(requests.get("cpu") or ""),
                    memory=str(requests.get("memory") or ""),
                )
            )
        return cls(
            name=deployment.get("name", ""),
            cluster=(deployment.get("cluster") or {}).get("name", ""),
            bento=(
                f"{bento['repository']['name']}:{bento['version']}"
                if bento.get("repository")
                else ""
            ),
            envs="\n".join(f"{e['name']}={e['value']}" for e in config.get("envs") or []),
            secrets=" ".join(config.get("secrets") or []),
            access_authorization=bool(config.get("access_authorization")),
            services=rows,
            ingress_enabled=bool(ingress.get("enabled", True)),
            ingress_host=str(ingress.get("host") or ""),
            ingress_tls_secret=str(ingress.get("tls_secret_name") or ""),
        )

    @property
    def needs_entry_service(self) -> bool:
        """A row with settings but no service name: it is for the bento's entry service."""
        return any(not row.name and not row.blank for row in self.services)

    def rows_with_blank(self) -> list[ServiceRow]:
        """The rows to draw: every service set, and one empty row to add another."""
        return [*(r for r in self.services if r.name or not r.blank), ServiceRow()]

    def body(self, entry_service: str | None = "") -> dict[str, Any]:
        """`entry_service` None: leave out the rows without a service name (a first check)."""
        name, sep, version = self.bento.partition(":")
        if not name.strip() or not sep or not version.strip():
            raise ValueError("Bento: write it as name:version (for example iris:latest)")
        envs = []
        for raw in self.envs.splitlines():
            line = raw.strip()
            if not line:
                continue
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"Environment: {line!r}: write each variable as NAME=value")
            envs.append({"name": key.strip(), "value": value})
        services: dict[str, Any] = {}
        for row in self.services:
            if row.blank:
                continue
            if not row.name and entry_service is None:
                continue  # checked again once the entry service is known
            key = row.name or entry_service or ""
            if not key:
                raise ValueError("Service: name the service these replicas and resources are for")
            low = _count(f"{key}: minimum replicas", row.min_replicas)
            high = _count(f"{key}: maximum replicas", row.max_replicas)
            if low is not None and high is not None and low > high:
                raise ValueError(f"{key}: the minimum ({low}) is above the maximum ({high})")
            entry: dict[str, Any] = {"scaling": {"min_replicas": low, "max_replicas": high}}
            requests = {k: v for k, v in (("cpu", row.cpu), ("memory", row.memory)) if v}
            if requests:
                entry["config_overrides"] = {
                    "resources": {"requests": requests, "limits": dict(requests)}
                }
            services[key] = entry
        if self.ingress_tls_secret and not self.ingress_enabled:
            raise ValueError("Ingress: a TLS secret needs the ingress enabled")
        body: dict[str, Any] = {
            "bento": f"{name.strip()}:{version.strip()}",
            "access_authorization": self.access_authorization,
            "envs": envs,
            "secrets": [s for s in self.secrets.replace(",", " ").split() if s],
            "services": services,
            "ingress": {
                "enabled": self.ingress_enabled,
                "host": self.ingress_host or None,
                "tls_secret_name": self.ingress_tls_secret or None,
            },
        }
        if self.name:
            body["name"] = self.name
        return body
