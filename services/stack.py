"""`ekiben up`: the whole stack on one machine, embedded servers included.

Start order: the dependencies (NATS, PostgreSQL, S3 and an OCI registry: embedded unless a
URL is given) in parallel, then the five services as child processes (`ekiben serve
<name>`, configured by the environment exactly as in production), each awaited on its
`/readyz`. When all are ready it prints `gateway: URL`, `dashboard: URL` and `registry:
HOST:PORT` on stdout, says on stderr where the admin API token is (`<data-dir>/admin-token`,
written by the gateway's first start), and writes `<data-dir>/stack.json` for other commands
(`ekiben token create` reads it). The builder pushes to the registry, and looks for base
images there first (a `docker.io` mirror), so a site without Docker Hub seeds it once.
SIGINT or SIGTERM stops the services, then the dependencies, by process group.

A service that dies is restarted, after a backoff that doubles from 1 s up to 30 s, and
`ekiben up` says so on stderr (`registry exited with -9; restarting in 1s (restart 1)`)
and again once it is ready. Only a service that cannot stay up (5 exits within a
minute) stops the stack, with the last lines of its log.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from services.catalog import SERVICES, ServiceEntry
from shared.devstack.kube import BUILD_SCRIPT, PROJECT_ROOT, KubeControlPlane, crd_paths
from shared.devstack.kube import find_binaries as find_kube_binaries
from shared.devstack.oci import start_oci_registry
from shared.devstack.process import ManagedProcess, StartupError, free_port, http_ok, wait_until
from shared.devstack.servers import (
    RunningServer,
    S3Server,
    start_nats,
    start_postgres,
    start_seaweedfs,
)


@dataclass(frozen=True)
class External:
    """Dependencies to use instead of starting embedded ones (None: embedded)."""

    nats_url: str | None = None
    postgres_dsn: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "ekiben"
    registry_url: str | None = None
    # A kubeconfig of an existing cluster (the project's CRDs installed); None: embedded.
    kubeconfig: Path | None = None
    # False: no embedded control plane either (deployments are recorded, not run).
    kubernetes: bool = True


@dataclass
class Endpoints:
    nats_url: str
    postgres_dsn: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    registry_url: str = ""  # http(s)://HOST:PORT
    kubeconfig: str = ""

    @property
    def registry_host(self) -> str:
        return urlsplit(self.registry_url).netloc


def registry_url(text: str) -> str:
    """`--registry-url` as a URL: a bare `HOST[:PORT]` is plain HTTP on loopback, else HTTPS."""
    text = text.strip().rstrip("/")
    if "://" in text:
        return text
    host = urlsplit(f"//{text}").hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return f"{'http' if loopback else 'https'}://{text}"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Go's listener does: a connection in TIME_WAIT does not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Where the builder keeps its Lease and its BentoRequests in the embedded cluster.
KUBE_NAMESPACE = "ekiben"

# A service that exits this many times within the window cannot stay up: the stack stops.
MAX_EXITS = 5
EXIT_WINDOW_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = (1.0, 30.0)  # the first wait, doubled per restart up to the last


@dataclass
class _Supervised:
    """What the supervisor knows of one service: how to start it, and its recent exits."""

    start: Callable[[], ManagedProcess]
    ready_url: str
    exits: deque[float] = field(default_factory=deque)
    restarts: int = 0
    restart_at: float | None = None  # when the pending restart is due
    awaiting_ready: bool = False

    def backoff(self) -> float:
        first, most = RESTART_BACKOFF_SECONDS
        return float(min(first * 2 ** max(len(self.exits) - 1, 0), most))


def _say(message: str) -> None:
    sys.stderr.write(f"ekiben: {message}\n")
    sys.stderr.flush()


class Stack:
    def __init__(
        self,
        data_dir: Path,
        *,
        external: External | None = None,
        gateway_port: int = 8000,
        dashboard_port: int = 8080,
    ) -> None:
        self.data_dir = data_dir
        self.external = external or External()
        self.gateway_port = gateway_port or free_port()
        self.dashboard_port = dashboard_port or free_port()
        self.servers: list[RunningServer] = []
        self.services: dict[str, ManagedProcess] = {}
        self._supervised: dict[str, _Supervised] = {}
        self._endpoints: Endpoints | None = None
        self._urls: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock_file: IO[str] | None = None
        self.kube: KubeControlPlane | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, print the URLs, block until a signal; the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        begin = time.monotonic()
        try:
            self._take_lock()
            endpoints = self.start_dependencies()
            urls = self.start_services(endpoints)
            self._endpoints, self._urls = endpoints, urls
            self._write_state(endpoints, urls)
            _say(f"ready in {time.monotonic() - begin:.1f}s (data in {self.data_dir})")
            self._say_admin_token()
            sys.stdout.write(
                f"gateway: {urls['gateway']}\ndashboard: {urls['dashboard']}\n"
                f"registry: {endpoints.registry_host}\nkubeconfig: {endpoints.kubeconfig}\n"
            )
            sys.stdout.flush()
            return self._supervise()
        except StartupError as exc:
            _say(f"could not start: {exc}")
            return 1
        finally:
            self.stop()

    def stop(self) -> None:
        # Services first (they flush their outbox and consumers), then what they use.
        for name, proc in reversed(list(self.services.items())):
            proc.stop(timeout=15)
            _say(f"stopped {name}")
        self.services.clear()
        if self.kube is not None:
            self.kube.stop()
            self.kube = None
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        (self.data_dir / "stack.json").unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _supervise(self) -> int:
        """Restart services that die, until a signal or one that cannot stay up."""
        while not self._stop.wait(0.5):
            for name in list(self.services):
                if not self._watch(name, time.monotonic()):
                    return 1
        _say("stopping")
        return 0

    def _watch(self, name: str, now: float) -> bool:
        """One look at service `name`; False when it cannot stay up."""
        proc, state = self.services[name], self._supervised[name]
        if state.restart_at is not None:
            if now >= state.restart_at:
                self._restart(name, state)
            return True
        if proc.alive():
            if state.awaiting_ready and http_ok(state.ready_url):
                state.awaiting_ready = False
                _say(f"{name} ready again (restart {state.restarts})")
            return True
        code = proc.returncode
        proc.stop(timeout=5)  # whatever it left in its process group goes too
        state.exits.append(now)
        while state.exits and now - state.exits[0] > EXIT_WINDOW_SECONDS:
            state.exits.popleft()
        if len(state.exits) >= MAX_EXITS:
            _say(
                f"{name} exited with {code}, {len(state.exits)} times within"
                f" {EXIT_WINDOW_SECONDS:.0f}s: it cannot stay up; stopping the stack"
            )
            _say(f"last lines of {proc.log_path}:\n{proc.log_tail(20)}")
            return False
        delay = state.backoff()
        state.restarts += 1
        state.restart_at = now + delay
        _say(f"{name} exited with {code}; restarting in {delay:.0f}s (restart {state.restarts})")
        return True

    def _restart(self, name: str, state: _Supervised) -> None:
        state.restart_at = None
        state.awaiting_ready = True
        self.services[name] = state.start()
        if self._endpoints is not None:
            self._write_state(self._endpoints, self._urls)  # its new PID

    def _take_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.data_dir / "ekiben.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock.close()
            raise StartupError(f"another 'ekiben up' is using {self.data_dir}") from exc
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock

    # --- dependencies ------------------------------------------------------------------

    def start_dependencies(self) -> Endpoints:
        """Start the embedded servers while this process imports the services' code."""
        ext = self.external
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            nats_f = None if ext.nats_url else pool.submit(start_nats, self.data_dir / "nats")
            pg_f = (
                None
                if ext.postgres_dsn
                else pool.submit(start_postgres, self.data_dir / "postgres")
            )
            s3_f = None if ext.s3_endpoint else pool.submit(start_seaweedfs, self.data_dir / "s3")
            oci_f = (
                None
                if ext.registry_url
                else pool.submit(
                    start_oci_registry, self.data_dir / "oci-registry", port=self._registry_port()
                )
            )
            kube_f = pool.submit(self._start_kube) if self._wants_kubernetes() else None
            for entry in SERVICES.values():
                entry.import_app_module()
            errors = []
            if kube_f is not None:
                try:
                    self.kube = kube_f.result()
                except StartupError as exc:
                    errors.append(str(exc))
            for future in (nats_f, pg_f, s3_f, oci_f):
                if future is None:
                    continue
                try:
                    self.servers.append(future.result())
                except StartupError as exc:
                    errors.append(str(exc))
            if errors:
                raise StartupError("\n".join(errors))
        nats_url = ext.nats_url or (nats_f.result().url if nats_f else "")
        postgres_dsn = ext.postgres_dsn or self._embedded_database(pg_f.result() if pg_f else None)
        if s3_f is not None:
            s3: S3Server = s3_f.result()
            s3_endpoint, access, secret = s3.url, s3.access_key, s3.secret_key
        else:
            s3_endpoint = ext.s3_endpoint or ""
            access, secret = ext.s3_access_key or "", ext.s3_secret_key or ""
        oci = (
            registry_url(ext.registry_url)
            if ext.registry_url
            else oci_f.result().url
            if oci_f
            else ""
        )
        for server in self.servers:
            _say(f"{server.process.name} ready in {server.started_in:.2f}s: {server.url}")
        if self.kube is not None:
            _say(f"kubernetes ready in {self.kube.startup_seconds:.2f}s: {self.kube.server_url}")
        kubeconfig = str(ext.kubeconfig or (self.kube.kubeconfig_path if self.kube else ""))
        if not kubeconfig:
            _say("no Kubernetes (--no-kubernetes): deployments and builds are recorded, not run")
        return Endpoints(
            nats_url, postgres_dsn, s3_endpoint, access, secret, ext.s3_bucket, oci, kubeconfig
        )

    def _wants_kubernetes(self) -> bool:
        return self.external.kubeconfig is None and self.external.kubernetes

    def _start_kube(self) -> KubeControlPlane:
        """The embedded control plane (simulated nodes: pods never run), CRDs applied.

        Its binaries are built from the official Go modules on first use (minutes; cached
        under ~/.cache/ekiben). The builder's namespace `ekiben` is created in it.
        """
        try:
            binaries = find_kube_binaries()
        except StartupError:
            script = PROJECT_ROOT / BUILD_SCRIPT
            if not script.is_file():
                raise
            _say(f"building the Kubernetes control plane once ({BUILD_SCRIPT}, ~15 min)...")
            import subprocess  # noqa: PLC0415

            done = subprocess.run(  # noqa: S603 - our own build script
                ["bash", str(script)],  # noqa: S607
                check=False,
                capture_output=True,
            )
            if done.returncode != 0:
                raise StartupError(
                    f"{BUILD_SCRIPT} failed:\n{done.stderr.decode(errors='replace')[-2000:]}"
                ) from None
            binaries = find_kube_binaries()
        plane = KubeControlPlane.start(self.data_dir / "k8s", binaries=binaries)
        try:
            plane.apply_crds(crd_paths())
            plane.request(
                "POST",
                "/api/v1/namespaces",
                json.dumps({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": KUBE_NAMESPACE}}),
            )  # fmt: skip
        except BaseException:
            plane.stop()
            raise
        return plane

    def _registry_port(self) -> int:
        """The embedded registry's port, the same across restarts while it is free.

        Image references (HOST:PORT/repo@digest) that the builder recorded name it.
        """
        path = self.data_dir / "oci-registry" / "port"
        with contextlib.suppress(OSError, ValueError):
            port = int(path.read_text())
            if _port_free(port):
                return port
            _say(f"registry port {port} is taken now; images pushed before name that port")
        port = free_port()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(port))
        return port

    @staticmethod
    def _embedded_database(server: RunningServer | None) -> str:
        """The `ekiben` database on the embedded server, created on first use."""
        assert server is not None
        import asyncio  # noqa: PLC0415

        import asyncpg  # noqa: PLC0415

        async def create() -> None:
            conn = await asyncpg.connect(server.url)
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'ekiben'"):
                    await conn.execute("CREATE DATABASE ekiben")
            finally:
                await conn.close()

        asyncio.run(create())
        return server.url.rsplit("/", 1)[0] + "/ekiben"

    # --- services ----------------------------------------------------------------------

    def service_environment(self, endpoints: Endpoints) -> tuple[dict[str, str], dict[str, str]]:
        """The environment of every service, and each one's base URL."""
        ports = {
            "registry": free_port(),
            "builder": free_port(),
            "deployer": free_port(),
            "gateway": self.gateway_port,
            "dashboard": self.dashboard_port,
        }
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env: dict[str, str] = {}
        for name, entry in SERVICES.items():
            p = entry.env_prefix
            env[f"{p}HTTP__HOST"] = "127.0.0.1"
            env[f"{p}HTTP__PORT"] = str(ports[name])
            env[f"{p}TELEMETRY__LOG_JSON"] = "true"
            if entry.owns_data:
                env[f"{p}NATS__URL"] = endpoints.nats_url
                env[f"{p}POSTGRES__DSN"] = endpoints.postgres_dsn
        env["EKIBEN_REGISTRY_S3__ENDPOINT_URL"] = endpoints.s3_endpoint
        env["EKIBEN_REGISTRY_S3__ACCESS_KEY_ID"] = endpoints.s3_access_key
        env["EKIBEN_REGISTRY_S3__SECRET_ACCESS_KEY"] = endpoints.s3_secret_key
        env["EKIBEN_REGISTRY_S3__BUCKET"] = endpoints.s3_bucket
        # The builder pushes to the OCI registry and keeps its layer store in the data dir.
        env["EKIBEN_BUILDER_REGISTRY__URL"] = endpoints.registry_url
        env["EKIBEN_BUILDER_CONTAINERS__STATE_DIR"] = str(self.data_dir / "builder")
        env["EKIBEN_BUILDER_BACKEND"] = "local"
        if endpoints.kubeconfig:
            env["EKIBEN_BUILDER_KUBE__KUBECONFIG"] = endpoints.kubeconfig
            env.setdefault("EKIBEN_BUILDER_KUBE__NAMESPACE", KUBE_NAMESPACE)
            # Deployments ask for Bentos in their own namespaces: watch them all.
            env.setdefault("EKIBEN_BUILDER_KUBE__WATCH_NAMESPACES", '["*"]')
        elif "EKIBEN_BUILDER_CONTROLLER_ENABLED" not in os.environ:
            env["EKIBEN_BUILDER_CONTROLLER_ENABLED"] = "false"
        if "EKIBEN_BUILDER_CONTAINERS__MIRRORS" not in os.environ:
            # Base images (FROM python:3.11-slim) are looked for in the registry first, then
            # on Docker Hub: seeding it once makes builds work without Docker Hub.
            mirrors = {"docker.io": [endpoints.registry_host]}
            env["EKIBEN_BUILDER_CONTAINERS__MIRRORS"] = json.dumps(mirrors)
        # The deployer runs its controller on the embedded (or given) cluster, or none.
        if endpoints.kubeconfig:
            env["EKIBEN_DEPLOYER_KUBE__KUBECONFIG"] = endpoints.kubeconfig
            env.setdefault("EKIBEN_DEPLOYER_KUBE__NAMESPACE", KUBE_NAMESPACE)
        elif "EKIBEN_DEPLOYER_CONTROLLER_ENABLED" not in os.environ:
            env["EKIBEN_DEPLOYER_CONTROLLER_ENABLED"] = "false"
        # The gateway's first start writes the admin's API token here (never to a log).
        env["EKIBEN_GATEWAY_BOOTSTRAP_TOKEN_FILE"] = str(self.admin_token_file)
        # Until the first admin has a password, each start writes a one-time setup URL here.
        env["EKIBEN_GATEWAY_SESSIONS__SETUP_URL_FILE"] = str(self.admin_setup_file)
        env["EKIBEN_GATEWAY_SESSIONS__DASHBOARD_URL"] = urls["dashboard"]
        env["EKIBEN_DASHBOARD_GATEWAY_URL"] = urls["gateway"]
        env["EKIBEN_DASHBOARD_SERVICE_URLS"] = json.dumps(
            {n: u for n, u in urls.items() if n != "dashboard"}
        )
        return env, urls

    def start_services(self, endpoints: Endpoints) -> dict[str, str]:
        env, urls = self.service_environment(endpoints)
        logs = self.data_dir / "logs"
        # Each service is `ekiben serve <name>` in a forked copy of this process, which has
        # imported the services' code already: a child is serving in a fraction of the time
        # a fresh interpreter takes to import it. No other thread runs here (see `fork`).
        for name, entry in SERVICES.items():

            def serve(entry: ServiceEntry = entry) -> None:
                os.environ.update(env)
                entry.serve()

            # The supervisor restarts a service the same way: this process still has no
            # other thread then (the dependency threads are joined before this point).
            start = partial(ManagedProcess.fork, name, serve, log_path=logs / f"{name}.log")
            self._supervised[name] = _Supervised(start=start, ready_url=f"{urls[name]}/readyz")
            self.services[name] = start()
        deadline = time.monotonic() + 60
        for name, proc in self.services.items():
            remaining = max(1.0, deadline - time.monotonic())
            url = f"{urls[name]}/readyz"
            wait_until(partial(http_ok, url), timeout=remaining, what=name, proc=proc)
            _say(f"{name} ready: {urls[name]}")
        return urls

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def admin_setup_file(self) -> Path:
        return self.data_dir / "admin-setup-url"

    def _say_admin_token(self) -> None:
        # On stderr: stdout carries only the URLs, which scripts read.
        if self.admin_setup_file.is_file():
            _say(
                f"the admin has no password yet: open the one-time setup URL in"
                f" {self.admin_setup_file}, or run `ekiben user set-password admin`"
            )
        if self.admin_token_file.is_file():
            _say(f"admin API token: in {self.admin_token_file}")
        else:
            _say(
                "no admin token file (this database had users already); make a token with"
                f" `ekiben token create --name NAME --data-dir {self.data_dir}`"
            )

    def _write_state(self, endpoints: Endpoints, urls: dict[str, str]) -> None:
        state: dict[str, Any] = {
            "pid": os.getpid(),
            "pids": {name: proc.pid for name, proc in self.services.items()},
            "urls": urls,
            "nats_url": endpoints.nats_url,
            "postgres_dsn": endpoints.postgres_dsn,
            "s3_endpoint": endpoints.s3_endpoint,
            "registry": endpoints.registry_host,
            "registry_url": endpoints.registry_url,
            "kubeconfig": endpoints.kubeconfig,
        }
        # Rewritten when a service restarts (its PID): replaced whole, never seen half-written.
        path = self.data_dir / "stack.json"
        tmp = path.with_name(".stack.json.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
        tmp.replace(path)
