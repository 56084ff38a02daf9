"""Browser fixtures: `ekiben up` itself, Debian's Chromium driven by Playwright, axe-core.

Chromium is the system's (`apt-get install chromium`, at /usr/bin/chromium): Playwright
from PyPI drives it, and its own browser download (`playwright install`) is never used.
axe-core comes from the npm registry once (the tarball checked against the registry's
integrity hash) and is cached under the cache directory; tests inject it into pages.
Screenshots go to `tests/browser/output/<test>/` (or `$EKIBEN_TEST_OUTPUT`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright

from services.builder.adapters.containers import write_container_config
from services.builder.adapters.skopeo import Skopeo
from services.builder.settings import ContainersSettings
from tests.fixtures.bentoml import CACHE, Client, bentoml_client
from tests.fixtures.oci import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAG, build_python_base
from tests.fixtures.require import unavailable
from tests.integration.test_up import Up

__all__ = ["Client", "bentoml_client"]

CHROMIUM = Path(os.environ.get("EKIBEN_CHROMIUM", "/usr/bin/chromium"))
AXE_VERSION = "4.14.1"
AXE_INTEGRITY = (  # the registry's `dist.integrity` for that version
    "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5q"
    "b2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
OUTPUT = Path(os.environ.get("EKIBEN_TEST_OUTPUT", Path(__file__).parent / "output"))
ADMIN_PASSWORD = "correct horse battery staple"
TOKEN_HEADER = "X-YATAI-API-TOKEN"


@dataclass
class DashStack:
    gateway: str
    dashboard: str
    data_dir: Path
    admin_token: str
    up: Up

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {TOKEN_HEADER: token or self.admin_token, **kw.pop("headers", {})}
        return httpx.request(method, f"{self.gateway}{path}", headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def stack() -> Iterator[DashStack]:
    root = Path(tempfile.mkdtemp(prefix="ekiben-browser-"))
    up = Up(root / "data")
    urls, _ = up.start()
    try:
        yield DashStack(
            gateway=urls["gateway"],
            dashboard=urls["dashboard"],
            data_dir=root / "data",
            admin_token=(root / "data" / "admin-token").read_text().strip(),
            up=up,
        )
    finally:
        assert up.stop() == 0
        shutil.rmtree(root, ignore_errors=True)


# Playwright's async API, on the tests' one event loop: its sync API runs a loop of its
# own, which the suite's asyncio fixtures cannot share.
@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
    yield browser
    await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    yield context
    await context.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """This test's screenshot folder (emptied first)."""
    folder: Path = OUTPUT / request.node.name.replace("/", "_").replace("[", "-").rstrip("]")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe.min.js of a pinned axe-core, from registry.npmjs.org once, then the cache."""
    cached = CACHE / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if not cached.is_file():
        url = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
        try:
            tarball = httpx.get(url, timeout=60, follow_redirects=True).raise_for_status().content
        except httpx.HTTPError as exc:
            unavailable(f"cannot fetch {url}: {exc}")
        algorithm, _, expected = AXE_INTEGRITY.partition("-")
        digest = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
        assert digest == expected, f"{url}: integrity mismatch"
        with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None
            source = member.read()
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".tmp")
        partial.write_bytes(source)
        partial.replace(cached)
    return cached.read_text()


# --- helpers -------------------------------------------------------------------------


async def sign_in(page: Page, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()


async def set_up_admin(page: Page, stack: DashStack) -> None:
    """The first admin's password, through the one-time setup URL (once per stack)."""
    setup_file = stack.data_dir / "admin-setup-url"
    if not setup_file.exists():
        return
    url = setup_file.read_text().strip()
    assert url.startswith(f"{stack.dashboard}/setup?code=")
    await page.goto(url)
    await page.get_by_label("New password").fill(ADMIN_PASSWORD)
    await page.get_by_label("Repeat it").fill(ADMIN_PASSWORD)
    await page.get_by_role("button", name="Set password").click()
    await page.wait_for_url("**/login?**")


async def seed_base_image(stack: DashStack, scratch: Path) -> None:
    """The Python base image into the stack's registry (its docker.io mirror), as
    tests/e2e/test_deployments.py does: the real builder then builds pushed bentos."""
    state = json.loads((stack.data_dir / "stack.json").read_text())
    env = write_container_config(ContainersSettings(state_dir=scratch / "containers"))
    await Skopeo(env).copy(
        f"oci-archive:{build_python_base()}",
        f"docker://{state['registry']}/{BASE_IMAGE_REPOSITORY}:{BASE_IMAGE_TAG}",
        dest_tls_verify=False,
    )


def user_with_password(stack: DashStack, name: str, role: str, password: str) -> None:
    made = stack.api("POST", "/api/v1/users", json={"name": name, "role": role})
    assert made.status_code == 200, made.text
    done = stack.api("PUT", f"/api/ekiben/v1/users/{name}/password", json={"password": password})
    assert done.status_code == 200, done.text
