"""A command: one request/reply operation, named once, typed on both ends.

A `Command` carries everything both sides must agree on: the owning service, the command's
name (its NATS subject is `ekiben.rpc.<service>.<name>`), the request model and the reply
model. The responder registers a handler for it (`RpcServer.add(command, handler)`) and a
caller sends it (`RpcClient.call(command, request)`); because both take the same object,
mypy rejects a handler or a call whose types do not match the contract, where a name and
two loose classes would only fail at run time.

    GET_VERSION = Command("registry", "version.get", GetVersion, Version)

    runtime.responders.add(GET_VERSION, service.get_version)   # (GetVersion) -> Version
    version = await rpc.call(GET_VERSION, GetVersion(...))      # -> Version
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

RPC_PREFIX = "ekiben.rpc"

Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)


@dataclass(frozen=True)
class Command(Generic[Req, Res]):
    service: str
    name: str
    request: type[Req]
    response: type[Res]

    @property
    def subject(self) -> str:
        return f"{RPC_PREFIX}.{self.service}.{self.name}"

    def __str__(self) -> str:
        return f"{self.service}.{self.name}"
