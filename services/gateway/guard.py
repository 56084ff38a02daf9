"""What every gateway route does before its handler: authenticate, then bound the body.

FastAPI reads and parses a request's whole body before it runs a route's dependencies,
so a token check in a dependency comes after the gateway has held whatever the caller
sent. `GatewayRoute` (the route class of every gateway router) puts two steps in front:

1. **Authenticate first.** A route whose dependencies include the caller
   (`identity.auth.current_principal`) verifies the token before reading a byte of the
   body; the dependency then reuses that answer (one verification per request).
2. **Bound the body.** A route with a JSON body accepts at most `JSON_BODY_BYTES` (or
   what `@body_limit(...)` sets), refused with a 413 from its `Content-Length` before
   anything is read, or as soon as a chunked body passes the limit. The body is then
   parsed here, once (FastAPI reuses the result): a body that is not UTF-8 or is nested
   deeper than `MAX_JSON_DEPTH` is a 400, one that is not JSON a 422, all in the one
   error shape. A streamed route (`@body_limit(..., streamed=True)`, the proxied upload)
   is not read here: its handler streams the body through a counting `receive` that
   stops at the limit.

The route class also declares in OpenAPI the errors that these steps and the route's
parameters can produce (401 and 403 for an authenticated route, 400 and 413 for a body,
404 for a path with parameters, 422 and 503), so that a route only adds its own (409).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute
from starlette.types import Message

from services.gateway.identity.auth import authenticate, current_principal
from shared.errors import BadRequest, InvalidInput, TooLarge
from shared.http import error_responses

MiB = 1024 * 1024
# Enough for every identity and repository body many times over.
JSON_BODY_BYTES = 1 * MiB
# A version's manifest may serialize to 4 MiB and its description to 3 MiB.
MANIFEST_BODY_BYTES = 8 * MiB
# Far deeper than any manifest the bentoml client writes, far shallower than a parser's
# recursion limit (the registry's JSON parser stops at about 200 levels).
MAX_JSON_DEPTH = 64

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a route's body may have: fixed, or read from the app at call time."""

    limit: int | Callable[[Request], int]
    # The handler streams the body itself (`request.stream()`); nothing is read here.
    streamed: bool = False

    def bytes_for(self, request: Request) -> int:
        return self.limit(request) if callable(self.limit) else self.limit


_LIMIT_ATTRIBUTE = "__ekiben_body_limit__"


def body_limit(
    limit: int | Callable[[Request], int], *, streamed: bool = False
) -> Callable[[F], F]:
    """Give a route's handler its own body limit (put it under the `@router.<method>`)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _LIMIT_ATTRIBUTE, BodyLimit(limit, streamed=streamed))
        return endpoint

    return mark


def _calls(dependant: Dependant) -> set[Any]:
    found: set[Any] = set()
    stack = [dependant]
    while stack:
        node = stack.pop()
        found.add(node.call)
        stack.extend(node.dependencies)
    return found


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise BadRequest(f"Content-Length {raw[:40]!r} is not a number of bytes")
    return int(raw)


def _too_large(length: int, limit: int) -> TooLarge:
    return TooLarge(f"the request body of {length} bytes exceeds the limit of {limit} bytes")


def bounded_receive(request: Request, limit: int) -> Request:
    """`request` with a `receive` that counts body bytes and raises `TooLarge` past `limit`.

    What was received is never kept here, so a refused body costs one chunk of memory.
    """
    length = _content_length(request)
    if length is not None and length > limit:
        raise _too_large(length, limit)
    receive = request.receive
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(received, limit)
        return message

    return Request(request.scope, counting, request._send)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests objects and arrays more than `limit` levels deep (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            items = node.values() if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))
    return False


_JSON_TYPE = re.compile(r"^application/([\w.+-]+\+)?json\s*(;|$)", re.IGNORECASE)


async def read_json_body(request: Request) -> None:
    """Read and parse the body once, with clear errors; FastAPI reuses `request.json()`."""
    body = await request.body()
    if not body or not _JSON_TYPE.match(request.headers.get("content-type", "")):
        return  # FastAPI answers what it makes of a non-JSON body
    try:
        parsed = await request.json()
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"the request body is not valid UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None
    except RecursionError:
        raise BadRequest(
            f"the JSON body is nested too deeply: at most {MAX_JSON_DEPTH} levels"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"body: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if json_depth_exceeds(parsed, MAX_JSON_DEPTH):
        raise BadRequest(f"the JSON body is nested too deeply: at most {MAX_JSON_DEPTH} levels")


class GatewayRoute(APIRoute):
    """A route that authenticates before reading its body and bounds it (see the module)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        dependant = get_dependant(path=path, call=endpoint)
        self.authenticated = current_principal in _calls(dependant)
        declared: BodyLimit | None = getattr(endpoint, _LIMIT_ATTRIBUTE, None)
        has_body = bool(dependant.body_params)
        self.body_limit = declared or (BodyLimit(JSON_BODY_BYTES) if has_body else None)
        statuses = [422]
        if self.authenticated:
            statuses += [401, 403, 503]
        if self.body_limit is not None:
            statuses += [400, 413]
        if dependant.path_params:
            statuses.append(404)
        responses = {**error_responses(*sorted(statuses)), **(kwargs.pop("responses", None) or {})}
        super().__init__(path, endpoint, responses=responses, **kwargs)

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        authenticated, limit = self.authenticated, self.body_limit

        async def guarded(request: Request) -> Response:
            if authenticated:
                await authenticate(request)
            if limit is not None:
                request = bounded_receive(request, limit.bytes_for(request))
                if not limit.streamed:
                    await read_json_body(request)
            return await handler(request)

        return guarded
