"""A real bento becomes a real image: the path the builder service will take, end to end.

The real `bentoml` 1.4.40 client builds a 1.2+ style bento (tests/images/bento-greeter: a
`@bentoml.service` class with two `@bentoml.api` methods, no ML dependencies, an unmodified
base image: its Dockerfile says `FROM python:3.11-slim`). The bento is packed as the tar the
registry stores, unpacked with `extract_bento`, and its own `env/docker/Dockerfile` is built
by the buildah adapter, with docker.io mirrored to the test registry holding the base image
built from Debian. The image is pushed, skopeo and the registry client agree on the digest,
and podman runs it from the registry: `POST /greet` and `POST /add` answer. A code-only change
then rebuilds from `COPY . ./` on, every earlier step from the layer cache.

Timings go to the terminal (`images:` lines). Cold numbers appear when the layer store under
the cache directory is empty (first run on a machine); later runs show the warm ones.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.builder.adapters.bento_archive import extract_bento
from services.builder.adapters.buildah import Buildah, BuiltImage
from services.builder.adapters.containers import ContainerEnvironment, write_container_config
from services.builder.adapters.registry import RegistryClient
from services.builder.adapters.skopeo import Skopeo
from shared.devstack.oci import OciRegistry
from shared.devstack.process import free_port
from tests.fixtures.bentoml import Client
from tests.fixtures.oci import serve_image, timed
from tests.fixtures.report import report
from tests.images.conftest import containers_settings, target_registry

pytestmark = [pytest.mark.images, pytest.mark.timeout(1200)]

BENTO_SOURCE = Path(__file__).parent / "bento-greeter"
_STEP = re.compile(r"^STEP (\d+)/(\d+): (.*)$")
_COPY_ALL = re.compile(r"^COPY (--\S+ )*\. \./$")  # COPY --chown=bentoml:bentoml . ./


@dataclass(frozen=True)
class Bento:
    name: str
    version: str
    path: Path  # the bento directory in BENTOML_HOME


@dataclass(frozen=True)
class PushedImage:
    bento: Bento
    built: BuiltImage
    lines: list[str]
    destination: str
    digest: str
    push_seconds: float


def build_bento(client: Client, home: Path, source: Path) -> Bento:
    """`bentoml build` in `source`; the new bento's directory."""
    client.run(home, "build", cwd=source)
    store = home / "bentos" / "greeter"
    version = (store / "latest").read_text().strip()
    return Bento("greeter", version, store / version)


def bento_tar(bento: Bento, out: Path) -> Path:
    """The bento as the registry stores it: an uncompressed tar of its directory."""
    with tarfile.open(out, "w") as tar:
        for child in sorted(bento.path.iterdir()):
            tar.add(child, arcname=child.name)
    return out


def steps(lines: list[str]) -> list[tuple[str, bool]]:
    """(instruction, came from the layer cache) for each STEP of a buildah log."""
    found: list[tuple[str, bool]] = []
    for line in lines:
        if match := _STEP.match(line):
            found.append((match.group(3), False))
        elif line.startswith("--> Using cache") and found:
            found[-1] = (found[-1][0], True)
    return found


async def build_and_push(
    env: ContainerEnvironment, registry: OciRegistry, bento: Bento, work: Path
) -> PushedImage:
    context = work / f"context-{bento.version}"
    extracted = await extract_bento(bento_tar(bento, work / f"{bento.version}.tar"), context)
    assert extracted.has_dockerfile()
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    settings = target_registry(registry)
    tag = f"{settings.repository('greeter')}:{bento.version}"
    built = await Buildah(env).build(context, extracted.dockerfile, tag, log_sink=sink)
    destination = settings.image("greeter", bento.version)
    elapsed = timed()
    digest = await Buildah(env).push(tag, destination, tls_verify=settings.tls_verify)
    return PushedImage(bento, built, lines, destination, digest, elapsed())


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bento-image")


@pytest.fixture(scope="module")
def bento_source(work_dir: Path) -> Path:
    source = work_dir / "src"
    shutil.copytree(BENTO_SOURCE, source)
    return source


@pytest.fixture(scope="module")
async def greeter_v1(
    bentoml_client: Client,
    bento_source: Path,
    work_dir: Path,
    container_env: ContainerEnvironment,
    oci_registry: OciRegistry,
    python_base_image: str,
    pytestconfig: pytest.Config,
) -> AsyncIterator[PushedImage]:
    elapsed = timed()
    bento = build_bento(bentoml_client, work_dir / "bentoml", bento_source)
    report(pytestconfig, f"images: bentoml build {bento.version} in {elapsed():.1f}s")
    pushed = await build_and_push(container_env, oci_registry, bento, work_dir)
    report(
        pytestconfig,
        f"images: bento image built in {pushed.built.seconds:.1f}s "
        f"({pushed.built.cached_steps}/{pushed.built.steps} steps cached), "
        f"pushed in {pushed.push_seconds:.1f}s",
    )
    yield pushed
    await Buildah(container_env).remove_images(pushed.built.tag)


async def test_the_bento_dockerfile_is_unmodified(greeter_v1: PushedImage) -> None:
    dockerfile = (greeter_v1.bento.path / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim AS base-container$", dockerfile, re.M), dockerfile
    assert steps(greeter_v1.lines)[0][0].startswith("FROM python:3.11-slim")


async def test_the_image_is_pushed_and_serves_the_bento_apis(
    greeter_v1: PushedImage,
    container_env: ContainerEnvironment,
    oci_registry: OciRegistry,
    pytestconfig: pytest.Config,
) -> None:
    inspected = await Skopeo(container_env).inspect(
        f"docker://{greeter_v1.destination}", tls_verify=False
    )
    assert inspected["Digest"] == greeter_v1.digest
    config = await Skopeo(container_env).inspect(
        f"docker://{greeter_v1.destination}", tls_verify=False, config=True
    )
    assert config["config"]["Entrypoint"] == ["/home/bentoml/bento/env/docker/entrypoint.sh"]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in config["config"]["Env"]

    repository, _, tag = greeter_v1.destination.split("/", 1)[1].rpartition(":")
    async with RegistryClient(oci_registry.url) as registry:
        assert await registry.manifest_digest(repository, tag) == greeter_v1.digest

    # Run what the registry holds, pinned by digest, as a pod would.
    pinned = f"{greeter_v1.destination.rpartition(':')[0]}@{greeter_v1.digest}"
    async with serve_image(container_env, pinned, pull="always") as served:
        report(pytestconfig, f"images: podman run -> /readyz 200 in {served.ready_seconds:.1f}s")
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            greet = await http.post("/greet", json={"name": "registry"})
            assert greet.status_code == 200, greet.text
            assert greet.text == "Hello, registry!"
            add = await http.post("/add", json={"a": 2, "b": 40})
            assert add.status_code == 200, add.text
            assert add.json() == 42
            invalid = await http.post("/add", json={"a": "x", "b": 1})
            assert invalid.status_code == 400


async def test_a_code_only_change_rebuilds_from_copy_with_every_earlier_layer_cached(
    greeter_v1: PushedImage,
    bentoml_client: Client,
    bento_source: Path,
    work_dir: Path,
    container_env: ContainerEnvironment,
    oci_registry: OciRegistry,
    pytestconfig: pytest.Config,
) -> None:
    service = bento_source / "service.py"
    service.write_text(service.read_text().replace('GREETING = "Hello"', 'GREETING = "Hi there"'))
    bento = build_bento(bentoml_client, work_dir / "bentoml", bento_source)
    assert bento.version != greeter_v1.bento.version
    v2 = await build_and_push(container_env, oci_registry, bento, work_dir)
    try:
        report(
            pytestconfig,
            f"images: code-only rebuild in {v2.built.seconds:.1f}s "
            f"({v2.built.cached_steps}/{v2.built.steps} steps cached), "
            f"pushed in {v2.push_seconds:.1f}s",
        )
        listed = steps(v2.lines)
        copy_all = next(i for i, (step, _) in enumerate(listed) if _COPY_ALL.match(step))
        before = [(s, cached) for s, cached in listed[:copy_all] if not s.startswith("FROM")]
        assert before, listed
        assert all(cached for _, cached in before), f"not all cached before COPY . ./: {listed}"
        assert not any(cached for _, cached in listed[copy_all:]), listed
        assert v2.digest != greeter_v1.digest
        async with (
            serve_image(container_env, v2.destination, pull="always") as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as http,
        ):
            greet = await http.post("/greet", json={"name": "cache"})
            assert greet.text == "Hi there, cache!"
    finally:
        await Buildah(container_env).remove_images(v2.built.tag)


async def test_short_names_resolve_through_the_mirrors_in_order(
    python_base_image: str, oci_registry: OciRegistry, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    """A fresh store, a first mirror that is down: FROM python:3.11-slim comes from the second.

    The RUN step also checks the base image's fix-ups: no PEP 668 marker, SSL_CERT_FILE.
    """
    settings = containers_settings(oci_registry, tmp_path / "config", state_dir=tmp_path)
    dead = f"127.0.0.1:{free_port()}"
    settings = settings.model_copy(update={"mirrors": {"docker.io": [dead, oci_registry.host]}})
    env = write_container_config(settings, target_registry(oci_registry))
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\n"
        "RUN python --version"
        " && test ! -e /usr/lib/python3.11/EXTERNALLY-MANAGED"
        ' && test "$SSL_CERT_FILE" = /etc/ssl/certs/ca-certificates.crt'
        " && test -s /usr/local/share/ca-certificates/host-ca-bundle.crt"
        f" && echo base-{uuid.uuid4().hex[:6]}-ok\n"
    )
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    built = await Buildah(env).build(
        context, context / "Dockerfile", "localhost/ekiben-test/mirror:1", log_sink=sink
    )
    report(
        pytestconfig, f"images: base pulled through the mirrors and built in {built.seconds:.1f}s"
    )
    assert any(line.startswith("Python 3.11") for line in lines), lines
    assert any(line.startswith("base-") and line.endswith("-ok") for line in lines), lines
