"""How a route reaches the services behind the gateway, the same from every feature.

`rpc(request)` is the process's bus client; `command(model, **fields)` builds a typed
command from path, query and body values, a bad value being a 422 that names it (the rule
the services check again on their side); `scope(principal)` is the caller's
organization and name as the registry's commands take them; `strategy(request)` is
how the answers tell the client to move bytes (presigned URLs or through the gateway).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from services.gateway.artifacts.schemas import TransmissionStrategy
from services.gateway.identity.auth import Principal
from services.gateway.settings import GatewaySettings
from shared.bus import RpcClient
from shared.bus.rpc import invalid_input
from shared.contracts import registry as reg

M = TypeVar("M", bound=BaseModel)


def rpc(request: Request) -> RpcClient:
    client: RpcClient = request.app.state.runtime.rpc
    return client


def strategy(request: Request) -> TransmissionStrategy:
    settings: GatewaySettings = request.app.state.runtime.settings
    return "presigned_url" if settings.transfer_strategy == "presigned" else "proxy"


def scope(principal: Principal) -> reg.Scope:
    return reg.Scope(organization=principal.organization, actor=principal.user_name)


def command(model: type[M], **fields: Any) -> M:
    """`model` from these values; a value it refuses is a clear 422, never a 500."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_input(exc) from exc
