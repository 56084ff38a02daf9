"""Typed request/reply over NATS for commands that need an answer.

A command (`shared.contracts.command.Command`: service, name, request and reply models)
goes to `ekiben.rpc.<service>.<name>`; the owning service's replicas share a queue group,
so exactly one answers. Server and client take the same `Command` object, so a handler or
a call that does not fit the contract is a type error. The reply is `{"ok": true, "result": ...}` or
`{"ok": false, "error": {"code", "message"}}`, and the caller gets the result model or the
same `EkibenError` subclass the responder raised: errors cross the wire intact.

This runs on nats-py directly, not through FastStream's subscriber machinery: commands sit
on the path of every API call, and the framework's per-message middleware cost about 1 ms
a round trip on two cores (measured against a plain nats-py echo in the same run). The
W3C trace context still travels in the message headers, and each command is counted and
timed in Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import propagate, trace
from prometheus_client import Histogram
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.contracts.command import Command
from shared.errors import EkibenError, InvalidInput, TooLarge, Unavailable, error_from_dict
from shared.logging import get_logger

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

RPC_DURATION = Histogram(
    "ekiben_rpc_handled_seconds",
    "Commands answered, by outcome (ok or the error code), and how long they took",
    ["service", "command", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
)

Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)
Handler = Callable[[Any], Awaitable[BaseModel]]


def invalid_input(exc: ValidationError) -> InvalidInput:
    """A validation failure as one readable message (the first problem) plus the details."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return InvalidInput(
        f"{where}: {message}" if where else message,
        details={"errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors]},
    )


@dataclass(frozen=True)
class _Responder:
    command: Command[Any, Any]
    handler: Handler


class RpcServer:
    """The commands one process answers; started on a NATS connection, drained on stop.

    Each request runs in its own task (at most `concurrency` at once), so a slow command
    does not hold up the others behind it on the same subscription.
    """

    def __init__(self, *, concurrency: int = 64) -> None:
        self._responders: dict[str, _Responder] = {}
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    def add(self, command: Command[Req, Res], handler: Callable[[Req], Awaitable[Res]]) -> None:
        """Answer `command` with `handler` (one handler per command)."""
        if command.subject in self._responders:
            raise ValueError(f"{command} has a responder already")
        self._responders[command.subject] = _Responder(command, handler)

    @property
    def commands(self) -> list[Command[Any, Any]]:
        return [r.command for r in self._responders.values()]

    async def start(self, nc: Client) -> None:
        for spec in self._responders.values():

            async def on_message(msg: Msg, spec: _Responder = spec) -> None:
                await self._slots.acquire()
                task = asyncio.create_task(self._answer(spec, msg))
                self._tasks.add(task)
                task.add_done_callback(self._done)

            subscription = await nc.subscribe(
                spec.command.subject,
                queue=f"ekiben-{spec.command.service}",
                cb=on_message,
            )
            self._subscriptions.append(subscription)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking commands, then let those in flight answer."""
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)

    async def _answer(self, spec: _Responder, msg: Msg) -> None:
        start = time.perf_counter()
        command = spec.command
        parent = propagate.extract(msg.headers or {})
        with tracer.start_as_current_span(
            f"rpc {command}", context=parent, kind=trace.SpanKind.SERVER
        ):
            outcome, body = await self._run(spec, msg.data)
        RPC_DURATION.labels(command.service, command.name, outcome).observe(
            time.perf_counter() - start
        )
        with contextlib.suppress(Exception):  # the caller may have given up and gone
            await msg.respond(body)

    async def _run(self, spec: _Responder, data: bytes) -> tuple[str, bytes]:
        """The outcome ("ok" or the error code) and the reply's bytes."""
        try:
            request = spec.command.request.model_validate_json(data)
        except ValidationError as exc:
            return _error(invalid_input(exc))
        try:
            result = await spec.handler(request)
        except EkibenError as exc:
            return _error(exc)
        except Exception:  # an unexpected fault must still answer the caller
            log.exception("bus.rpc.failed", command=str(spec.command))
            return _error(EkibenError("internal error"))
        # The result straight to JSON bytes: no dict in between.
        return "ok", b'{"ok":true,"result":' + result.model_dump_json().encode() + b"}"


def _error(exc: EkibenError) -> tuple[str, bytes]:
    return exc.code, json.dumps({"ok": False, "error": exc.to_dict()}).encode()


class _Reply(BaseModel, Generic[Res]):
    ok: bool
    result: Res | None = None
    error: dict[str, Any] | None = None


@functools.cache
def _reply_adapter(response_model: type[Res]) -> TypeAdapter[_Reply[Res]]:
    return TypeAdapter(_Reply[response_model])  # type: ignore[valid-type]


class RpcClient:
    """Calls commands of other services over `connection()` (the process's NATS client)."""

    def __init__(self, connection: Callable[[], Client], *, timeout: float = 10.0) -> None:
        self._connection = connection
        self._timeout = timeout

    async def call(
        self,
        command: Command[Req, Res],
        request: Req,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call bound on the NATS request
    ) -> Res:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        service = command.service
        try:
            reply = await self._connection().request(
                command.subject,
                request.model_dump_json().encode(),
                timeout=timeout or self._timeout,
                headers=headers or None,
            )
        except (NoRespondersError, NatsTimeoutError, TimeoutError) as exc:
            raise Unavailable(f"{service} did not answer {command.name}") from exc
        except MaxPayloadError as exc:
            raise TooLarge(f"{command.name}: the request is larger than the bus accepts") from exc
        try:
            body: _Reply[Res] = _reply_adapter(command.response).validate_json(reply.data)
        except ValidationError as exc:
            raise EkibenError(f"{command}: malformed reply") from exc
        if not body.ok:
            raise error_from_dict(body.error or {})
        if body.result is None:
            raise EkibenError(f"{command}: malformed reply")
        return body.result
