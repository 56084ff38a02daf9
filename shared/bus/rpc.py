"""Typed request/reply over NATS for commands that need an answer.

A command goes to `ekiben.rpc.<service>.<command>`; the owning service's replicas share a
queue group, so exactly one answers. The reply is `{"ok": true, "result": ...}` or
`{"ok": false, "error": {"code", "message"}}`, and the caller gets the result model or the
same `EkibenError` subclass the responder raised: errors cross the wire intact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsBroker, NatsMessage
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from shared.bus.broker import message_itself
from shared.errors import EkibenError, InvalidInput, TooLarge, Unavailable, error_from_dict
from shared.logging import get_logger

log = get_logger(__name__)

RPC_PREFIX = "ekiben.rpc"

Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)


def rpc_subject(service: str, command: str) -> str:
    return f"{RPC_PREFIX}.{service}.{command}"


def rpc_responder(
    broker: NatsBroker,
    *,
    service: str,
    command: str,
    request_model: type[Req],
    handler: Callable[[Req], Awaitable[BaseModel]],
) -> None:
    """Answer `command` for `service` with `handler`, one replica per request."""

    async def respond(msg: NatsMessage) -> dict[str, Any]:
        try:
            request = request_model.model_validate_json(msg.body)
        except ValidationError as exc:
            return _error(invalid_input(exc))
        try:
            result = await handler(request)
        except EkibenError as exc:
            return _error(exc)
        except Exception:  # an unexpected fault must still answer the caller
            log.exception("bus.rpc.failed", command=command)
            return _error(EkibenError("internal error"))
        return {"ok": True, "result": result.model_dump(mode="json")}

    broker.subscriber(
        rpc_subject(service, command),
        queue=f"ekiben-{service}",
        decoder=message_itself,
        title=f"{service}.{command}",
    )(respond)


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


def _error(exc: EkibenError) -> dict[str, Any]:
    return {"ok": False, "error": exc.to_dict()}


class RpcClient:
    def __init__(self, broker: NatsBroker, *, timeout: float = 10.0) -> None:
        self._broker = broker
        self._timeout = timeout

    async def call(
        self,
        service: str,
        command: str,
        request: BaseModel,
        response_model: type[Res],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call bound on the NATS request
    ) -> Res:
        subject = rpc_subject(service, command)
        try:
            reply = await self._broker.request(
                request.model_dump_json().encode(),
                subject,
                timeout=timeout or self._timeout,
            )
        except (NoRespondersError, NatsTimeoutError, TimeoutError) as exc:
            raise Unavailable(f"{service} did not answer {command}") from exc
        except MaxPayloadError as exc:
            raise TooLarge(f"{command}: the request is larger than the bus accepts") from exc
        body = await reply.decode()
        if not isinstance(body, dict):
            raise EkibenError(f"{service}.{command}: malformed reply")
        if not body.get("ok"):
            raise error_from_dict(body.get("error") or {})
        return response_model.model_validate(body.get("result"))
