"""End-to-end fixtures: the real `bentoml` client and a whole running Ekiben stack.

The client (`bentoml_client`, shared with the image tests) comes from tests/fixtures/bentoml.py.
The stack is `ekiben up` itself, started as a subprocess on free ports, with its embedded
NATS, PostgreSQL, SeaweedFS and OCI registry.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.bentoml import BENTOML_VERSION, CACHE, Client, bentoml_client

__all__ = ["BENTOML_VERSION", "CACHE", "Client", "RunningStack", "bentoml_client", "stack_factory"]
from tests.integration.test_up import Up


@dataclass(frozen=True)
class RunningStack:
    gateway: str
    data_dir: Path
    admin_token: str
    s3_endpoint: str
    nats_url: str


@pytest.fixture(scope="module")
def stack_factory() -> Iterator[object]:
    """Start `ekiben up` with extra environment; every stack started is stopped after."""
    started: list[tuple[Up, Path]] = []

    def start(**env: str) -> RunningStack:
        root = Path(tempfile.mkdtemp(prefix="ekiben-e2e-"))
        up = Up(root / "data", env=env)
        urls, _ = up.start()
        started.append((up, root))
        state = up.state()
        token = (root / "data" / "admin-token").read_text().strip()
        return RunningStack(
            gateway=urls["gateway"],
            data_dir=root / "data",
            admin_token=token,
            s3_endpoint=str(state["s3_endpoint"]),
            nats_url=str(state["nats_url"]),
        )

    yield start
    for up, root in started:
        assert up.stop() == 0
        shutil.rmtree(root, ignore_errors=True)
