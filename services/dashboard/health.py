"""The stack's health at a glance: every service's /readyz (public, like /readyz itself)."""

from __future__ import annotations

import asyncio
import html
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter()


async def probe(client: httpx.AsyncClient, name: str, base_url: str) -> dict[str, Any]:
    try:
        response = await client.get(f"{base_url.rstrip('/')}/readyz", timeout=2.0)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"service": name, "ready": False, "checks": {"http": f"unreachable: {exc}"}}
    return {
        "service": name,
        "ready": response.status_code == 200,
        "checks": body.get("checks", {}) if isinstance(body, dict) else {},
    }


async def stack_health(request: Request) -> list[dict[str, Any]]:
    client: httpx.AsyncClient = request.app.state.http
    urls: dict[str, str] = request.app.state.settings.service_urls
    return list(await asyncio.gather(*(probe(client, n, u) for n, u in urls.items())))


@router.get("/api/health")
async def health_json(request: Request) -> list[dict[str, Any]]:
    return await stack_health(request)


@router.get("/health", response_class=HTMLResponse)
async def health_page(request: Request) -> str:
    rows = []
    for entry in await stack_health(request):
        state = "ready" if entry["ready"] else "not ready"
        checks = ", ".join(
            f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in entry["checks"].items()
        )
        rows.append(
            f'<tr class="{state.replace(" ", "-")}"><td>{html.escape(entry["service"])}</td>'
            f"<td>{state}</td><td>{checks}</td></tr>"
        )
    return _PAGE.format(rows="\n".join(rows))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ekiben: stack health</title>
<meta http-equiv="refresh" content="5">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d2733; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .4rem 1rem; border-bottom: 1px solid #dde; }}
tr.ready td:nth-child(2) {{ color: #17803d; font-weight: 600; }}
tr.not-ready td:nth-child(2) {{ color: #b42318; font-weight: 600; }}
</style></head>
<body><h1>Ekiben</h1><h2>Stack health</h2>
<table><thead><tr><th>service</th><th>state</th><th>checks</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
