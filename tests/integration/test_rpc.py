"""Request/reply: typed answers, and errors that cross the wire as the same error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

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


async def test_request_reply_round_trip_and_errors(nats_url: str, pg_dsn: str) -> None:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)

    async def add(request: Add) -> Sum:
        if request.a < 0:
            raise Conflict("negative numbers are taken")
        return Sum(total=request.a + request.b)

    runtime.responders.add(service="probe", command="add", request_model=Add, handler=add)
    async with runtime.running():
        assert await runtime.rpc.call("probe", "add", Add(a=2, b=3), Sum) == Sum(total=5)
        with pytest.raises(Conflict, match="negative numbers are taken"):
            await runtime.rpc.call("probe", "add", Add(a=-1, b=3), Sum)
        with pytest.raises(InvalidInput):
            await runtime.rpc.call("probe", "add", Sum(total=1), Sum)
        # A reply that is not what the caller expects is an internal error, named as such.
        with pytest.raises(EkibenError, match=r"^probe\.add: malformed reply$") as caught:
            await runtime.rpc.call("probe", "add", Add(a=2, b=3), Product)
        assert caught.value.code == "internal"
        with pytest.raises(Unavailable, match="nobody did not answer"):
            await runtime.rpc.call("nobody", "add", Add(a=1, b=1), Sum, timeout=0.5)
