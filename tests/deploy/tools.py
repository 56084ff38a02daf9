"""The tools the chart and observability tests run, and where they are.

helm and a minimal OpenTelemetry Collector are built from their Go modules by
tests/deploy/build-tools.sh into `$EKIBEN_CACHE_DIR/tools` (no registry here ships them),
which also holds the Prometheus Operator's CRDs; prometheus and promtool are Debian's
package. A missing tool skips its tests locally and fails them in CI (tests/fixtures/require).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.require import unavailable

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "ekiben"
OBSERVABILITY = ROOT / "deploy" / "observability"
BUILD_SCRIPT = "tests/deploy/build-tools.sh"


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in (Path(__file__).parent / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    return found


def tools_dir() -> Path:
    cache = Path(os.environ.get("EKIBEN_CACHE_DIR") or Path.home() / ".cache" / "ekiben")
    return cache / "tools"


def built(name: str, version_key: str, binary: str | None = None) -> Path:
    path = tools_dir() / f"{name}-{versions()[version_key]}" / (binary or name)
    if not path.exists():
        unavailable(f"{path} not built: run `bash {BUILD_SCRIPT}`")
    return path


def helm_binary() -> Path:
    return built("helm", "HELM_VERSION")


def otelcol_binary() -> Path:
    return built("otelcol", "OTELCOL_VERSION")


def operator_crds() -> list[Path]:
    directory = (
        tools_dir() / f"prometheus-operator-crds-{versions()['PROMETHEUS_OPERATOR_VERSION']}"
    )
    if not (directory / ".complete").exists():
        unavailable(f"{directory} missing: run `bash {BUILD_SCRIPT} operator-crds`")
    return sorted(directory.glob("*.yaml"))


def debian_tool(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} not found: apt-get install prometheus")
    return Path(found)


def run(argv: list[str | Path], *, cwd: Path | None = None, timeout: float = 120) -> str:
    """Run a tool; a failure shows its output."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def render(
    helm: Path,
    *values_files: str,
    namespace: str = "ekiben",
    release: str = "ekiben",
    sets: tuple[str, ...] = (),
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """`helm template` of the chart: the rendered objects, hooks included."""
    argv: list[str | Path] = [helm, "template", release, CHART, "--namespace", namespace]
    for values in values_files:
        argv += ["--values", CHART / values]
    for item in sets:
        argv += ["--set", item]
    if include_crds:
        argv.append("--include-crds")
    return [d for d in yaml.safe_load_all(run(argv)) if d]
