"""A typed client of the gateway's public API, the only thing the dashboard talks to.

Each call carries the browser's session (`X-Ekiben-Session`); an error answer becomes a
`GatewayError` holding the gateway's own message (its `{"error": {"code", "message"}}`),
which pages show as it is. No other service, database or bus is reachable from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

SESSION_HEADER = "X-Ekiben-Session"


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _error(response: httpx.Response) -> GatewayError:
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "unavailable", f"the gateway answered {response.status_code}"
    return GatewayError(response.status_code, code, message, response.headers.get("retry-after"))


@dataclass(frozen=True)
class Gateway:
    """The gateway, as one session sees it (`session` None: not signed in)."""

    http: httpx.AsyncClient
    base_url: str
    session: str | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.session:
            headers[SESSION_HEADER] = self.session
        return headers

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = self._headers(kwargs.pop("headers", None))
        try:
            response = await self.http.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=15.0, **kwargs
            )
        except httpx.HTTPError as exc:
            raise GatewayError(503, "unavailable", f"the gateway cannot be reached: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        try:
            return response.json()
        except ValueError:
            raise GatewayError(
                502, "unavailable", f"{path}: the gateway's answer is not JSON"
            ) from None

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return await self.request("GET", path, params=clean)

    # --- sessions --------------------------------------------------------------------

    async def sign_in(self, body: dict[str, str], user_agent: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST", "/api/ekiben/v1/sessions", json=body, headers={"User-Agent": user_agent}
        )
        return answer

    async def current_session(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.get("/api/ekiben/v1/sessions/current")
        return answer

    async def sign_out(self) -> None:
        await self.request("DELETE", "/api/ekiben/v1/sessions/current")

    async def set_up(self, code: str, password: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request(
            "POST", "/api/ekiben/v1/setup", json={"code": code, "password": password}
        )
        return answer

    # --- the event stream ------------------------------------------------------------

    async def events(self, params: dict[str, str], last_event_id: str | None) -> httpx.Response:
        """The open SSE response (the caller streams and closes it); errors raised."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return await self.stream("/api/ekiben/v1/events", params, headers)

    async def build_log(self, build_id: str, *, follow: bool = True) -> httpx.Response:
        """The open text/plain log of a build, streamed while it runs; errors raised."""
        return await self.stream(
            f"/api/ekiben/v1/builds/{quote(build_id, safe='')}/logs",
            {"follow": "true" if follow else "false"},
            {"Accept": "text/plain"},
        )

    async def stream(
        self, path: str, params: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """An open streamed answer (the caller reads and closes it), for answers that last
        as long as what they follow; an error answer is read, closed and raised."""
        request = self.http.build_request(
            "GET",
            f"{self.base_url}{path}",
            params={k: v for k, v in params.items() if v},
            headers=self._headers(headers),
            timeout=httpx.Timeout(10.0, read=None),
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise GatewayError(503, "unavailable", f"the gateway cannot be reached: {exc}") from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise _error(response)
        return response


async def relay(response: httpx.Response) -> AsyncIterator[bytes]:
    """The stream's bytes as they come, the upstream closed however the reader leaves."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()
