"""Schemathesis over the gateway's OpenAPI document, against the real stack.

The gateway and the registry run in this process on real NATS, PostgreSQL and SeaweedFS,
the gateway served by uvicorn on a loopback port; schemathesis runs as its own process
(its client is synchronous, and must not block the loop that serves it). It generates
requests from `/openapi.json`, valid and invalid ones, with the bootstrap admin token,
which cannot revoke itself (the last way in of its organization), and checks that:

- no answer is a server error (any 5xx fails the test),
- every status code is one the operation declares,
- every answer matches the schema declared for its status.

Bounded for CI: the fuzzing and stateful phases, `FUZZ_EXAMPLES` cases per operation (a
few hundred in all, seconds on two cores). For a long run locally, more cases and every
phase (the coverage phase adds some 1,600 boundary-value cases of its own):

    EKIBEN_FUZZ_EXAMPLES=200 EKIBEN_FUZZ_PHASES=examples,coverage,fuzzing,stateful \
        .venv/bin/pytest tests/integration/test_fuzz.py

(`EKIBEN_FUZZ_SEED` varies the cases.)
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.devstack.servers import S3Server
from tests.fixtures.report import report
from tests.fixtures.stack import TOKEN_HEADER, Stack, running_stack

pytestmark = [pytest.mark.timeout(3600)]

FUZZ_EXAMPLES = int(os.environ.get("EKIBEN_FUZZ_EXAMPLES", "6"))
FUZZ_PHASES = os.environ.get("EKIBEN_FUZZ_PHASES", "fuzzing,stateful")
FUZZ_SEED = os.environ.get("EKIBEN_FUZZ_SEED", "20261201")
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
async def fuzzed(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with running_stack(
        nats_url,
        pg_dsn,
        s3_server,
        tmp_path / "admin-token",
        transfer_strategy="proxy",
        max_upload_bytes=1024 * 1024,
        serve_http=True,
        deployer=True,
    ) as stack:
        yield stack


async def test_schemathesis_finds_no_server_error_undeclared_status_or_schema_mismatch(
    fuzzed: Stack, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    begin = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "run", f"{fuzzed.url}/openapi.json",
        "--header", f"{TOKEN_HEADER}: {fuzzed.admin_token}",
        "--checks", CHECKS,
        "--max-examples", str(FUZZ_EXAMPLES),
        "--phases", FUZZ_PHASES,
        "--seed", FUZZ_SEED,
        "--workers", "2",
        "--request-timeout", "60",
        "--suppress-health-check", "all",
        # The event stream never ends by design: each case would wait out the request
        # timeout. tests/integration/test_event_stream.py covers it.
        "--exclude-path", "/api/ekiben/v1/events",
        # Builds are answered by the builder, which this stack does not run (it needs a
        # Kubernetes API server): tests/builder/test_local_builds.py, test_operator.py and
        # tests/e2e/test_builds.py call those routes.
        "--exclude-path-regex", "^/api/ekiben/v1/builds",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        cwd=tmp_path,
    )  # fmt: skip
    output, _ = await process.communicate()
    seconds = time.monotonic() - begin
    text = output.decode(errors="replace")
    cases = re.search(r"(\d+) generated", text)
    report(
        pytestconfig,
        f"schemathesis: {cases.group(1) if cases else '?'} cases ({FUZZ_PHASES},"
        f" {FUZZ_EXAMPLES} per operation, seed {FUZZ_SEED}) in {seconds:.1f}s",
    )
    assert process.returncode == 0, text[-20000:]
    assert cases is not None, text[-3000:]
    assert int(cases.group(1)) >= 100, text[-3000:]  # it really ran
