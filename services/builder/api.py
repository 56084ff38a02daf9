"""The builder's request/reply API: every command of `shared.contracts.builder`.

The gateway calls these over NATS (`ekiben.rpc.builder.<command>`): request a build (or a
forced rebuild), get one, list them newest first, read a build's log lines after a sequence
number (the gateway streams `/logs` by asking again while the build runs).
"""

from __future__ import annotations

from services.builder.service import BuildService
from shared.contracts import builder as contract
from shared.service import BackendRuntime


def register(runtime: BackendRuntime, service: BuildService) -> None:
    answer = runtime.responders.add
    answer(contract.REQUEST_BUILD, service.request_build)
    answer(contract.GET_BUILD, service.get_build)
    answer(contract.LIST_BUILDS, service.list_builds)
    answer(contract.READ_LOGS, service.read_logs)
    missing = set(contract.COMMANDS) - set(runtime.responders.commands)
    if missing:
        raise RuntimeError(f"builder commands without a handler: {sorted(map(str, missing))}")
