"""The builds feature's logic: commands to the builder, and the log stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from shared.bus import RpcClient
from shared.contracts import builder as contract

# How often a running build's log is asked for new lines.
LOG_POLL_SECONDS = 0.5


async def log_stream(
    rpc: RpcClient, organization: str, build_id: str, *, follow: bool = True
) -> AsyncIterator[bytes]:
    """The build's log lines, then (while it runs and `follow`) each new one as it comes."""
    after = 0
    while True:
        page = await rpc.call(
            contract.READ_LOGS,
            contract.ReadLogs(organization=organization, id=build_id, after=after),
        )
        if page.lines:
            after = page.lines[-1].seq
            yield "".join(f"{line.line}\n" for line in page.lines).encode()
            if len(page.lines) == contract.MAX_LOG_PAGE:
                continue
        if page.finished or not follow:
            if not page.lines:
                return
            continue
        await asyncio.sleep(LOG_POLL_SECONDS)
