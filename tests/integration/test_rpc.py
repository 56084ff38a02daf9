"""Request/reply: typed answers, and errors that cross the wire as the same error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from shared.contracts.command import Command
from shared.errors import Conflict, EkibenError, InvalidInput, Unavailable
from shared.service import BackendRuntime
from tests.fixtures.runtime import probe_settings


class Add(BaseModel):
    a: int
    b: int


class Sum(BaseModel):
    total: int


class Product(BaseModel):
    product: int


ADD = Command("probe", "add", Add, Sum)


async def test_request_reply_round_trip_and_errors(nats_url: str, pg_dsn: str) -> None:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)

    async def add(request: Add) -> Sum:
        if request.a < 0:
            raise Conflict("negative numbers are taken")
        return Sum(total=request.a + request.b)

    runtime.responders.add(ADD, add)
    async with runtime.running():
        assert await runtime.rpc.call(ADD, Add(a=2, b=3)) == Sum(total=5)
        with pytest.raises(Conflict, match="negative numbers are taken"):
            await runtime.rpc.call(ADD, Add(a=-1, b=3))
        # A request the responder's model refuses (sent by a caller with another contract).
        with pytest.raises(InvalidInput):
            await runtime.rpc.call(Command("probe", "add", Sum, Sum), Sum(total=1))
        # A reply that is not what the caller expects is an internal error, named as such.
        with pytest.raises(EkibenError, match=r"^probe\.add: malformed reply$") as caught:
            await runtime.rpc.call(Command("probe", "add", Add, Product), Add(a=2, b=3))
        assert caught.value.code == "internal"
        with pytest.raises(Unavailable, match="nobody did not answer"):
            await runtime.rpc.call(Command("nobody", "add", Add, Sum), Add(a=1, b=1), timeout=0.5)
