"""End-to-end fixtures: the real `bentoml` client and a whole running Ekiben stack.

The client lives in its own virtual environment (its pins are its own business), created
once per machine under the cache directory and reused. The stack is `ekiben up` itself,
started as a subprocess on free ports, with its embedded NATS, PostgreSQL and SeaweedFS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.require import unavailable
from tests.integration.test_up import Up

BENTOML_VERSION = "1.4.40"
CACHE = Path(os.environ.get("EKIBEN_CACHE_DIR", Path.home() / ".cache" / "ekiben"))


@dataclass(frozen=True)
class Client:
    """The `bentoml` CLI of a pinned release, run with its own BENTOML_HOME."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(
        self, home: Path, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "BENTO_CLOUD"))}
        env |= {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "NO_COLOR": "1"}
        result = subprocess.run(
            [str(self.venv / "bin" / "bentoml"), *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"bentoml {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
            )
        return result

    def python_run(self, home: Path, code: str, cwd: Path) -> str:
        env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
        result = subprocess.run(
            [str(self.python), "-c", code],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout


@pytest.fixture(scope="session")
def bentoml_client() -> Client:
    venv = CACHE / f"bentoml-{BENTOML_VERSION}"
    bentoml = venv / "bin" / "bentoml"
    if not bentoml.exists():
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            uv = Path(sys.executable).parent / "uv"
            subprocess.run(
                [str(uv), "pip", "install", "--python", str(venv / "bin" / "python"),
                 f"bentoml=={BENTOML_VERSION}"],
                check=True, timeout=900, capture_output=True,
            )  # fmt: skip
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            unavailable(f"could not install bentoml=={BENTOML_VERSION}: {exc}")
    return Client(venv)


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
