"""A real Kubernetes control plane on loopback, for tests and `ekiben dev k8s`.

The builder and deployer are only as good as the API server they are tested against, so this
launcher starts the real thing, the way controller-runtime's envtest does: etcd and
kube-apiserver, plus (when built) kube-controller-manager, kube-scheduler and kwok. kwok plays
the kubelet for fake nodes, so a Deployment really rolls out: the controller manager creates
ReplicaSets and Pods, the scheduler binds them to a kwok node and kwok reports them Running and
Ready. No container ever runs.

The binaries are compiled from the official Go modules by `tests/k8s/build.sh` into a cache
outside the repository (no registry ships them); `find_binaries()` looks there.

Everything is fresh per start: a new certificate authority, serving and client certificates
(the admin user is in `system:masters`), a service-account signing key, an empty etcd, and free
ports on 127.0.0.1. The admin kubeconfig is written to `<workdir>/kubeconfig`; every component
uses it. Processes run in their own process groups and are stopped by PID, in reverse order.

The launcher is synchronous (start-up is a blocking step in a pytest session fixture or the
CLI); the few API calls it makes itself (apply CRDs, create fake nodes) use the standard library.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.devstack.process import (
    ManagedProcess,
    StartupError,
    free_ports,
    http_ok,
    wait_until,
)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = PROJECT_ROOT / "deploy" / "crds"
BUILD_SCRIPT = "tests/k8s/build.sh"
_VERSIONS_FILE = PROJECT_ROOT / "tests" / "k8s" / "versions.env"

# kwok manages only nodes carrying this annotation, as kwokctl sets it up.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
FAKE_NODE_COUNT = 2
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"  # allocation bookkeeping only: nothing routes it


@dataclass(frozen=True)
class KubeBinaries:
    """Where the control-plane binaries are. The optional ones make it a working cluster."""

    bin_dir: Path
    kube_apiserver: Path
    etcd: Path
    kube_controller_manager: Path | None
    kube_scheduler: Path | None
    kwok: Path | None
    kwok_stages: Path | None

    @property
    def full_cluster(self) -> bool:
        return None not in (
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kwok,
            self.kwok_stages,
        )


def default_bin_dir() -> Path:
    """The cache directory tests/k8s/build.sh installs the pinned versions into."""
    versions: dict[str, str] = {}
    if _VERSIONS_FILE.exists():
        for raw in _VERSIONS_FILE.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                versions[key.strip()] = value.strip()
    # The same overrides build.sh honours, so a custom build is found without extra setup.
    k8s = os.environ.get("EKIBEN_K8S_VERSION") or versions.get("K8S_VERSION", "")
    etcd = os.environ.get("EKIBEN_ETCD_VERSION") or versions.get("ETCD_VERSION", "")
    kwok = os.environ.get("EKIBEN_KWOK_VERSION") or versions.get("KWOK_VERSION", "")
    cache = Path(os.environ.get("EKIBEN_CACHE_DIR") or Path.home() / ".cache" / "ekiben")
    return cache / "k8s" / f"k8s-{k8s}_etcd-{etcd}_kwok-{kwok}" / "bin"


def find_binaries() -> KubeBinaries:
    """The binaries from `EKIBEN_K8S_BIN_DIR`, or from build.sh's cache directory."""
    override = os.environ.get("EKIBEN_K8S_BIN_DIR")
    bin_dir = Path(override) if override else default_bin_dir()

    def optional(name: str) -> Path | None:
        path = bin_dir / name
        return path if path.is_file() else None

    apiserver, etcd = optional("kube-apiserver"), optional("etcd")
    if apiserver is None or etcd is None:
        raise StartupError(
            f"kube-apiserver/etcd not found in {bin_dir}: run `bash {BUILD_SCRIPT}` "
            "(or set EKIBEN_K8S_BIN_DIR to a directory holding them)"
        )
    return KubeBinaries(
        bin_dir=bin_dir,
        kube_apiserver=apiserver,
        etcd=etcd,
        kube_controller_manager=optional("kube-controller-manager"),
        kube_scheduler=optional("kube-scheduler"),
        kwok=optional("kwok"),
        kwok_stages=optional("kwok-stages.yaml"),
    )


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of the throw-away PKI of one control plane."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def generate_pki(directory: Path) -> Pki:
    """A CA, a serving certificate for 127.0.0.1, an admin client certificate, an SA key."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid_from, valid_to = now - dt.timedelta(hours=1), now + dt.timedelta(days=365)

    # ECDSA P-256: generated in microseconds, where RSA costs tens of milliseconds each.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ekiben-test-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_to)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    serving, serving_key = leaf(
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    # Organization system:masters is the group RBAC lets do everything.
    admin, admin_key = leaf(
        _name("ekiben-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, None
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    pki.admin_cert.write_bytes(admin.public_bytes(serialization.Encoding.PEM))
    for path, key in (
        (pki.serving_key, serving_key),
        (pki.admin_key, admin_key),
        (pki.sa_private_key, sa_key),
    ):
        path.write_bytes(_pem_key(key))
        path.chmod(0o600)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ekiben",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "ekiben-admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "ekiben", "context": {"cluster": "ekiben", "user": "ekiben-admin"}}],
        "current-context": "ekiben",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# --- the control plane ----------------------------------------------------------------------


@dataclass
class KubeControlPlane:
    """A running control plane; `stop()` (or leaving the `with` block) tears it down."""

    workdir: Path
    binaries: KubeBinaries
    server_url: str
    kubeconfig_path: Path
    pki: Pki
    processes: list[ManagedProcess] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        binaries: KubeBinaries | None = None,
        full_cluster: bool = True,
        timeout: float = 90.0,
    ) -> KubeControlPlane:
        """Start etcd and kube-apiserver, then, if built and wanted, the rest of the cluster.

        `workdir` is wiped first: every start is a fresh cluster.
        """
        began = time.monotonic()
        binaries = binaries or find_binaries()
        if workdir.exists():
            shutil.rmtree(workdir)
        (workdir / "logs").mkdir(parents=True)
        pki = generate_pki(workdir / "pki")
        etcd_port, etcd_peer_port, api_port, kcm_port, sched_port, kwok_port = free_ports(6)
        server_url = f"https://127.0.0.1:{api_port}"
        kubeconfig = workdir / "kubeconfig"
        write_kubeconfig(kubeconfig, server_url, pki)
        plane = cls(
            workdir=workdir,
            binaries=binaries,
            server_url=server_url,
            kubeconfig_path=kubeconfig,
            pki=pki,
        )
        try:
            plane._start_etcd(etcd_port, etcd_peer_port, timeout)
            plane._lap("etcd", began)
            plane._start_apiserver(api_port, etcd_port, timeout)
            plane._lap("kube-apiserver", began)
            if full_cluster and binaries.full_cluster:
                plane._start_cluster_components(kcm_port, sched_port, kwok_port, timeout)
                plane._lap("controllers+nodes", began)
        except BaseException:
            plane.stop()
            raise
        plane.startup_seconds = time.monotonic() - began
        log.info(
            "kubernetes control plane ready in %.1fs (%s) at %s",
            plane.startup_seconds,
            ", ".join(f"{k} {v:.1f}s" for k, v in plane.timings.items()),
            server_url,
        )
        return plane

    def _lap(self, name: str, began: float) -> None:
        self.timings[name] = time.monotonic() - began - sum(self.timings.values())

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess.start(
            name, argv, log_path=self.workdir / "logs" / f"{name}.log", cwd=self.workdir
        )
        self.processes.append(proc)
        return proc

    def _start_etcd(self, port: int, peer_port: int, timeout: float) -> None:
        client_url = f"http://127.0.0.1:{port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # A test cluster needs no durability; fsync is most of etcd's write latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_until(lambda: http_ok(f"{client_url}/health"), timeout=timeout, what="etcd", proc=proc)

    def _start_apiserver(self, port: int, etcd_port: int, timeout: float) -> None:
        pki = self.pki
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # A loopback address is not a valid Endpoints address; nothing in the cluster
                # needs the `kubernetes` Service to have endpoints.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'pki'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(
            lambda: http_ok(f"{self.server_url}/readyz"),
            timeout=timeout,
            what="kube-apiserver",
            proc=proc,
        )

    def _start_cluster_components(
        self, kcm_port: int, sched_port: int, kwok_port: int, timeout: float
    ) -> None:
        binaries, pki, kubeconfig = self.binaries, self.pki, str(self.kubeconfig_path)
        kcm_bin, sched_bin = binaries.kube_controller_manager, binaries.kube_scheduler
        kwok_bin, kwok_stages = binaries.kwok, binaries.kwok_stages
        if not (kcm_bin and sched_bin and kwok_bin and kwok_stages):
            raise StartupError(f"incomplete cluster binaries in {binaries.bin_dir}")
        common = [f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(kcm_bin),
                *common,
                f"--secure-port={kcm_port}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={pki.sa_private_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Quicker reactions in a test cluster: HPA every 5s instead of 15s.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--v=1",
            ],
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(sched_bin),
                *common,
                f"--secure-port={sched_port}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--v=1",
            ],
        )
        annotation = "=".join(KWOK_NODE_ANNOTATION)
        kwok = self._spawn(
            "kwok",
            [
                str(kwok_bin),
                f"--kubeconfig={kubeconfig}",
                f"--config={kwok_stages}",
                f"--manage-nodes-with-annotation-selector={annotation}",
                f"--server-address=127.0.0.1:{kwok_port}",
                "--node-lease-duration-seconds=40",
            ],
        )
        for proc, url in (
            (kcm, f"https://127.0.0.1:{kcm_port}/healthz"),
            (scheduler, f"https://127.0.0.1:{sched_port}/healthz"),
            (kwok, f"http://127.0.0.1:{kwok_port}/healthz"),
        ):
            wait_until(partial(http_ok, url), timeout=timeout, what=proc.name, proc=proc)
        for index in range(FAKE_NODE_COUNT):
            self.request("POST", "/api/v1/nodes", _fake_node(f"kwok-node-{index}"))
        wait_until(self._nodes_ready, timeout=timeout, what="kwok nodes Ready", proc=kwok)
        # Pods need the namespace's `default` ServiceAccount (ServiceAccount admission); its
        # arrival shows the controller manager's informers are running.
        wait_until(
            lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
            timeout=timeout,
            what="default ServiceAccount",
            proc=kcm,
        )

    def _nodes_ready(self) -> bool:
        nodes = self.request("GET", "/api/v1/nodes")["items"]
        ready = [
            node
            for node in nodes
            for cond in (node.get("status") or {}).get("conditions") or []
            if cond["type"] == "Ready" and cond["status"] == "True"
        ]
        return len(ready) >= FAKE_NODE_COUNT

    def _exists(self, path: str) -> bool:
        try:
            self.request("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    # --- a minimal synchronous client, enough for set-up ----------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | str | None = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        """One API call as the admin user; raises urllib.error.HTTPError on a non-2xx."""
        data = None
        if body is not None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
        req = urllib.request.Request(  # noqa: S310 - our own https URL
            self.server_url + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": accept},
        )
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as response:  # noqa: S310
            result: dict[str, Any] = json.loads(response.read() or b"{}")
        return result

    def apply_crds(self, paths: Iterable[Path], *, timeout: float = 30.0) -> list[str]:
        """Server-side apply the CRD manifests and wait until each is Established."""
        names: list[str] = []
        for path in paths:
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                name = doc["metadata"]["name"]
                self.request(
                    "PATCH",
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                    f"{name}?fieldManager=ekiben-devstack&force=true",
                    json.dumps(doc),
                    content_type="application/apply-patch+yaml",
                )
                names.append(name)
        for name in names:
            wait_until(
                partial(self._crd_established, name),
                timeout=timeout,
                what=f"CRD {name} Established",
            )
        return names

    def _crd_established(self, name: str) -> bool:
        crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (crd.get("status") or {}).get("conditions") or []
        )

    def alive(self) -> bool:
        return all(proc.alive() for proc in self.processes)

    def dead(self) -> list[ManagedProcess]:
        return [proc for proc in self.processes if not proc.alive()]

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def __enter__(self) -> KubeControlPlane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _fake_node(name: str) -> dict[str, Any]:
    """A Node kwok will manage, sized like a large GPU box so test workloads always fit."""
    capacity = {
        "cpu": "32",
        "memory": "256Gi",
        "pods": "110",
        "ephemeral-storage": "1Ti",
        "nvidia.com/gpu": "8",
    }
    key, value = KWOK_NODE_ANNOTATION
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def crd_paths() -> list[Path]:
    return sorted(CRD_DIR.glob("*.yaml"))


def run_dev_k8s(data_dir: Path) -> None:
    """`ekiben dev k8s`: a control plane with the project's CRDs until Ctrl-C or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with KubeControlPlane.start(data_dir / "k8s") as plane:
            crds = plane.apply_crds(crd_paths())
            print(
                f"kubernetes {plane.server_url} ready in {plane.startup_seconds:.1f}s "
                f"({len(crds)} CRDs, logs in {plane.workdir / 'logs'})"
            )
            print(f"kubeconfig: {plane.kubeconfig_path}", flush=True)
            while not stop.wait(1.0):
                if dead := plane.dead():
                    names = ", ".join(p.name for p in dead)
                    raise StartupError(f"{names} exited\n{dead[0].log_tail()}")
            print("stopping kubernetes", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
