"""Registry benchmarks: transfer speed through the real client, and API latency at scale.

Run: `.venv/bin/python benchmarks/registry_transfer.py [--size-mib 1024] [--versions 10000]`

One run starts `ekiben up` (embedded NATS, PostgreSQL, SeaweedFS) and measures, on the
same SeaweedFS server:

1. raw baseline: an aioboto3 multipart upload (100 MiB parts, 10 at a time, as the client
   does) and a download of the same bytes;
2. the real `bentoml` 1.4.40 client pushing and pulling a model of that size with
   presigned multipart (`transfer_strategy=presigned`), then, after a restart with
   `transfer_strategy=proxy`, the same through the gateway, sampling the gateway's RSS
   every 50 ms during the proxied push;
3. the client's own floor for a pull: `bentoml models import` of the same model exported
   to a local archive (unpacking and copying into the store, no network), subtracted from
   the pull time to show the transfer's share;
4. with N bento versions in 100 repositories (created through the API), the latency of
   GET one version and of a filtered list page through the gateway (sequential requests,
   p50/p99).

Client timings are of the `bentoml models push/pull` commands as a user runs them, which
includes packing and unpacking the model's tar in the client; the raw baseline moves the
same number of bytes without that work. Both are printed, with their ratio. Targets:
presigned >= 90 % of raw, proxied >= 70 % of raw, gateway RSS < 300 MiB during a proxied
push, GET p99 < 10 ms, filtered list p99 < 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aioboto3
import httpx
from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import BENTOML_VERSION, CACHE  # noqa: E402
from tests.integration.test_up import Up  # noqa: E402

MIB = 1024 * 1024
PART = 100 * MIB


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bentoml(home: Path, *args: str) -> float:
    venv = CACHE / f"bentoml-{BENTOML_VERSION}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "BENTO_CLOUD"))}
    env |= {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    start = time.perf_counter()
    done = subprocess.run(
        [str(venv / "bin" / "bentoml"), *args], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"bentoml {' '.join(args)}: {done.stderr[-2000:]}")
    return elapsed


def make_model(home: Path, size: int) -> str:
    venv = CACHE / f"bentoml-{BENTOML_VERSION}"
    code = (
        "import os, bentoml\n"
        "with bentoml.models.create('bench-weights') as m:\n"
        "    with open(os.path.join(m.path, 'w.bin'), 'wb') as f:\n"
        f"        left = {size}\n"
        "        block = os.urandom(16 * 1024 * 1024)\n"
        "        while left > 0:\n"
        "            f.write(block[:left]); left -= len(block)\n"
        "print(m.tag)\n"
    )
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def read_part(path: Path, number: int) -> bytes:
    with path.open("rb") as stream:
        stream.seek((number - 1) * PART)
        return stream.read(PART)


async def raw_baseline(endpoint: str, path: Path) -> tuple[float, float]:
    """Multipart upload (100 MiB parts, 10 concurrent) and a streamed download."""
    size = path.stat().st_size
    session = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="ekiben", aws_secret_access_key="ekiben-secret",
    ) as s3:  # fmt: skip
        bucket, key = "ekiben", "bench/raw.bin"
        start = time.perf_counter()
        upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        limit = asyncio.Semaphore(10)

        async def part(number: int) -> CompletedPartTypeDef:
            async with limit:
                body = await asyncio.to_thread(read_part, path, number)
                answer = await s3.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=body,
                )
                return {"PartNumber": number, "ETag": answer["ETag"]}

        count = -(-size // PART)
        parts = await asyncio.gather(*(part(n) for n in range(1, count + 1)))
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )
        up = time.perf_counter() - start
        start = time.perf_counter()
        got = await s3.get_object(Bucket=bucket, Key=key)
        with (path.parent / "raw-download.bin").open("wb") as out:
            async for chunk in got["Body"].iter_chunks(8 * MIB):
                out.write(chunk)
        down = time.perf_counter() - start
        await s3.delete_object(Bucket=bucket, Key=key)
    (path.parent / "raw-download.bin").unlink()
    return up, down


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def api_latency(gateway: str, token: str, versions: int) -> dict[str, float]:
    headers = {"X-YATAI-API-TOKEN": token}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(
        base_url=gateway, headers=headers, limits=limits, timeout=30
    ) as api:
        repos = 100
        per_repo = versions // repos
        gate = asyncio.Semaphore(24)

        async def create(repo: int, n: int) -> None:
            async with gate:
                body = {
                    "version": f"v{n:05d}", "description": "", "build_at": None,
                    "labels": [{"key": "team", "value": f"t{n % 10}"}],
                    "manifest": {"bentoml_version": "1.4.40", "size_bytes": n, "models": []},
                }  # fmt: skip
                r = await api.post(f"/api/v1/bento_repositories/bench-{repo:03d}/bentos", json=body)
                r.raise_for_status()

        start = time.perf_counter()
        for repo in range(repos):
            r = await api.post(
                "/api/v1/bento_repositories", json={"name": f"bench-{repo:03d}", "description": ""}
            )
            r.raise_for_status()
        await asyncio.gather(*(create(r, n) for r in range(repos) for n in range(per_repo)))
        seeding = time.perf_counter() - start

        probe = f"v{min(42, per_repo - 1):05d}"

        async def timed(call: Callable[[], Any], n: int) -> list[float]:
            samples = []
            for _ in range(n // 10):  # warm-up: connections, prepared statements
                (await call()).raise_for_status()
            for _ in range(n):
                t0 = time.perf_counter()
                response = await call()
                samples.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
            return samples

        # The floor: the same client, the same gateway, a route that does no work.
        floor = await timed(lambda: api.get("/healthz"), 1000)
        get = await timed(
            lambda: api.get(f"/api/v1/bento_repositories/bench-042/bentos/{probe}"), 1000
        )
        listing = await timed(
            lambda: api.get("/api/v1/bento_repositories/bench-042/bentos",
                            params={"q": "label:team=t3 sort:build_at-desc", "count": "20"}),
            500,
        )  # fmt: skip
        across = await timed(
            lambda: api.get(
                "/api/v1/bentos", params={"q": "label:team=t3", "search": "v001", "count": "20"}
            ),
            300,
        )
    return {
        "seeded_versions": repos * per_repo,
        "seeding_s": seeding,
        "floor_p50_ms": statistics.median(floor),
        "floor_p99_ms": pct(floor, 0.99),
        "get_p50_ms": statistics.median(get),
        "get_p99_ms": pct(get, 0.99),
        "list_p50_ms": statistics.median(listing),
        "list_p99_ms": pct(listing, 0.99),
        "list_all_p50_ms": statistics.median(across),
        "list_all_p99_ms": pct(across, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="ekiben-bench-"))
    results: dict[str, Any] = {"size_mib": args.size_mib}
    try:
        home = work / "home"
        tag = make_model(home, size)
        name, version = tag.split(":")
        model_file = next((home / "models" / name / version).glob("w.bin"))
        # The client's own share of a pull: unpacking the same archive from local disk.
        archive = work / "model-export.tar"  # plain tar: no compression to wait for
        bentoml(home, "models", "export", tag, str(archive))
        results["client_import_s"] = bentoml(work / "import-home", "models", "import", str(archive))
        archive.unlink()
        shutil.rmtree(work / "import-home")

        for strategy in ("presigned", "proxy"):
            up = Up(work / f"data-{strategy}", env={"EKIBEN_GATEWAY_TRANSFER_STRATEGY": strategy})
            urls, _ = up.start()
            try:
                state = up.state()
                token = (up.data_dir / "admin-token").read_text().strip()
                if strategy == "presigned":
                    raw_up, raw_down = asyncio.run(
                        raw_baseline(str(state["s3_endpoint"]), model_file)
                    )
                    results["raw_upload_mib_s"] = args.size_mib / raw_up
                    results["raw_download_mib_s"] = args.size_mib / raw_down
                bentoml(home, "cloud", "login", "--endpoint", urls["gateway"], "--api-token", token)
                gateway_pid = int(state["pids"]["gateway"])  # type: ignore[index]
                with RssSampler(gateway_pid) as rss:
                    push = bentoml(home, "models", "push", tag)
                fresh = work / f"fresh-{strategy}"
                bentoml(
                    fresh, "cloud", "login", "--endpoint", urls["gateway"], "--api-token", token
                )
                pull = bentoml(fresh, "models", "pull", tag)
                shutil.rmtree(fresh)
                results[f"{strategy}_push_mib_s"] = args.size_mib / push
                results[f"{strategy}_pull_mib_s"] = args.size_mib / pull
                results[f"{strategy}_gateway_peak_rss_mib"] = rss.peak / MIB
                if strategy == "presigned" and args.versions:
                    results |= asyncio.run(api_latency(urls["gateway"], token, args.versions))
            finally:
                up.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for strategy in ("presigned", "proxy"):
        pull_seconds = args.size_mib / results[f"{strategy}_pull_mib_s"]
        network = max(pull_seconds - results["client_import_s"], 1e-9)
        results[f"{strategy}_pull_net_mib_s"] = args.size_mib / network
        results[f"{strategy}_push_vs_raw"] = (
            results[f"{strategy}_push_mib_s"] / results["raw_upload_mib_s"]
        )
        results[f"{strategy}_pull_vs_raw"] = (
            results[f"{strategy}_pull_mib_s"] / results["raw_download_mib_s"]
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results, args.size_mib)


def report(r: dict[str, Any], size_mib: int) -> None:
    print(f"payload: {size_mib} MiB model, SeaweedFS on loopback, 2 cores")
    print(f"raw aioboto3 multipart upload  {r['raw_upload_mib_s']:8.1f} MiB/s")
    print(f"raw aioboto3 download          {r['raw_download_mib_s']:8.1f} MiB/s")
    for strategy, target in (("presigned", 0.9), ("proxy", 0.7)):
        for op in ("push", "pull"):
            ratio = r[f"{strategy}_{op}_vs_raw"]
            verdict = "met" if ratio >= target else "MISSED"
            speed = r[f"{strategy}_{op}_mib_s"]
            print(
                f"bentoml models {op:4} ({strategy:9}) {speed:8.1f} MiB/s"
                f" = {ratio:5.0%} of raw (target {target:.0%}: {verdict})"
            )
        net = r[f"{strategy}_pull_net_mib_s"]
        print(
            f"  pull without the client's own unpacking ({r['client_import_s']:.1f} s to"
            f" import the same archive locally): {net:8.1f} MiB/s"
        )
        peak = r[f"{strategy}_gateway_peak_rss_mib"]
        print(f"gateway peak RSS during the {strategy} push: {peak:.0f} MiB (target < 300)")
    if "get_p99_ms" in r:
        print(
            f"{r['seeded_versions']} versions in 100 repositories, seeded in {r['seeding_s']:.0f}s"
        )
        p50, p99 = r["floor_p50_ms"], r["floor_p99_ms"]
        print(f"{'raw: GET /healthz':24} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms (the HTTP floor)")
        rows = (("GET one version", "get", 10), ("filtered list, one repo", "list", 30))
        for label, key, target in rows:
            p50, p99 = r[f"{key}_p50_ms"], r[f"{key}_p99_ms"]
            print(f"{label:24} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms (target < {target})")
        p50, p99 = r["list_all_p50_ms"], r["list_all_p99_ms"]
        print(f"{'filtered list, all repos':24} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")


if __name__ == "__main__":
    main()
