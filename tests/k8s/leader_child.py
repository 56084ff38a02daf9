"""A controller replica behind a Lease, in its own process, for tests/k8s/test_leader.py.

    python -m tests.k8s.leader_child KUBECONFIG NAMESPACE LEASE IDENTITY OUTFILE

Every reconcile appends "start <time>" and "end <time>" (wall clock) to OUTFILE, so the test
can compare this process's reconciles with its own after killing it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from shared.kube.client import api_client_from_kubeconfig
from shared.kube.controller import Controller
from shared.kube.leader import LeaderElector
from shared.kube.watch import ObjectKey
from tests.k8s.support import request_watcher

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4, 3.0, 1.0
RECONCILE_SECONDS, RESYNC_SECONDS = 0.05, 0.2


async def main(kubeconfig: Path, namespace: str, lease: str, identity: str, out: Path) -> None:
    api = await api_client_from_kubeconfig(kubeconfig)
    with out.open("a", buffering=1) as log:

        async def reconcile(key: ObjectKey) -> None:
            log.write(f"start {time.time()}\n")
            await asyncio.sleep(RECONCILE_SECONDS)
            log.write(f"end {time.time()}\n")

        controller = Controller(f"leader-{identity}", reconcile, resync_seconds=RESYNC_SECONDS)
        controller.watch(request_watcher(api, namespace))
        elector = LeaderElector(
            api,
            name=lease,
            namespace=namespace,
            identity=identity,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
        )
        async with api:
            await elector.run(controller.run)


if __name__ == "__main__":
    kubeconfig, namespace, lease, identity, out = sys.argv[1:6]
    asyncio.run(main(Path(kubeconfig), namespace, lease, identity, Path(out)))
