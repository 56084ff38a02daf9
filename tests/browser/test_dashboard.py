"""The dashboard in a real browser (Debian's Chromium) against `ekiben up`.

Signing in (setup URL, password, token; wrong passwords refused then throttled), a bento
pushed by the real bentoml client shown with its services, APIs and models (linked both
ways), a label edit that persists, a token made in the UI that logs the real client in
until it is revoked there, a guest who sees no write buttons and whose writes the API
refuses anyway, an event that appears live, a build's log that follows on its page, a
deployment made and edited in the form (ingress host included) that shows its Kubernetes
events, a guest on its page without write buttons, and an axe-core scan of every page in
light and dark mode, with screenshots of each.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import (
    ADMIN_PASSWORD,
    DashStack,
    seed_base_image,
    set_up_admin,
    sign_in,
    user_with_password,
)
from tests.fixtures.bentoml import Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SERVICE = '''
from pydantic import BaseModel
import bentoml


class Flower(BaseModel):
    sepal_length: float
    petal_width: float


@bentoml.service(resources={"cpu": "1"})
class Florist:
    weights = bentoml.models.BentoModel("dash-weights:latest")

    @bentoml.api
    def classify(self, flower: Flower) -> str:
        """Name the species of a flower."""
        return "setosa" if flower.petal_width < 1 else "virginica"
'''
BENTOFILE = 'service: "service:Florist"\ninclude: ["service.py"]\npython:\n  lock_packages: false\n'
CREATE_MODEL = """
import bentoml
with bentoml.models.create("dash-weights", labels={"stage": "test"}) as model:
    open(model.path_of("weights.bin"), "wb").write(b"0" * 4096)
print(model.tag)
"""


@pytest.fixture(scope="module")
async def admin_ready(stack: DashStack, browser: Browser) -> DashStack:
    page = await browser.new_page()
    try:
        await set_up_admin(page, stack)
    finally:
        await page.close()
    return stack


@pytest.fixture(scope="module")
async def pushed(
    admin_ready: DashStack, bentoml_client: Client, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A model and a bento that uses it, pushed by the real client: their tags."""
    stack = admin_ready
    home = tmp_path_factory.mktemp("bentoml-home")
    project = tmp_path_factory.mktemp("project")
    client = bentoml_client
    client.run(
        home, "cloud", "login", "--endpoint", stack.gateway, "--api-token", stack.admin_token
    )
    model = client.python_run(home, CREATE_MODEL, project).strip().splitlines()[-1]
    (project / "service.py").write_text(SERVICE)
    (project / "bentofile.yaml").write_text(BENTOFILE)
    client.run(home, "build", cwd=project)
    listed = json.loads(client.run(home, "list", "-o", "json").stdout)
    bento = str(max(listed, key=lambda b: b["creation_time"])["tag"])
    # With the base image in the stack's registry, the real builder builds what is pushed:
    # the deployment test deploys it.
    await seed_base_image(stack, tmp_path_factory.mktemp("seed"))
    client.run(home, "push", bento)
    return {"bento": bento, "model": model, "home": str(home)}


async def signed_in_as_admin(page: Page, stack: DashStack) -> None:
    await sign_in(page, stack.dashboard, "admin", ADMIN_PASSWORD)
    await expect(page.locator(".who .user")).to_have_text("admin")


# --- signing in ----------------------------------------------------------------------


async def test_the_first_admin_sets_a_password_from_the_setup_url_then_signs_in(
    stack: DashStack, page: Page, shots: Path
) -> None:
    setup_url = (stack.data_dir / "admin-setup-url").read_text().strip()
    await page.goto(setup_url)
    await page.screenshot(path=shots / "setup.png", full_page=True)
    await set_up_admin(page, stack)
    assert not (stack.data_dir / "admin-setup-url").exists()
    await expect(page.get_by_role("status")).to_contain_text("Password set")
    # The link works once.
    await page.goto(setup_url)
    await page.get_by_label("New password").fill("another password")
    await page.get_by_label("Repeat it").fill("another password")
    await page.get_by_role("button", name="Set password").click()
    await expect(page.get_by_role("alert")).to_contain_text("unknown, used or expired")

    await page.goto(f"{stack.dashboard}/bentos")
    assert "/login?next=/bentos" in page.url  # a page asks to sign in first, then returns
    await page.screenshot(path=shots / "login.png", full_page=True)
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{stack.dashboard}/bentos")
    await expect(page.locator(".who .user")).to_have_text("admin")

    cookies = await page.context.cookies()
    cookie = next(c for c in cookies if c["name"] == "ekiben_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    assert "ekiben_session" not in await page.evaluate("document.cookie")
    # Signing out ends the gateway session, not just the cookie.
    secret = cookie["value"]
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/login")
    after = httpx.get(f"{stack.gateway}/api/v1/auth/current", headers={"X-Ekiben-Session": secret})
    assert after.status_code == 401


async def test_a_form_without_its_csrf_token_is_refused(admin_ready: DashStack, page: Page) -> None:
    await signed_in_as_admin(page, admin_ready)
    forged = await page.request.post(
        f"{admin_ready.dashboard}/tokens", form={"name": "forged", "csrf": "guess"}
    )
    assert forged.status == 403
    assert "This form has expired" in await forged.text()
    login = await page.request.post(
        f"{admin_ready.dashboard}/login", form={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert login.status == 403
    names = [t["name"] for t in admin_ready.api("GET", "/api/v1/api_tokens").json()["items"]]
    assert "forged" not in names


async def test_sign_in_with_an_api_token(admin_ready: DashStack, page: Page) -> None:
    await page.goto(f"{admin_ready.dashboard}/login")
    await page.get_by_label("API token").fill(admin_ready.admin_token)
    await page.get_by_role("button", name="Sign in with the token").click()
    await page.wait_for_url(f"{admin_ready.dashboard}/")
    await expect(page.locator(".who .user")).to_have_text("admin")
    await page.goto(f"{admin_ready.dashboard}/login")
    await page.get_by_label("API token").fill("ekb_" + "x" * 43)
    await page.get_by_role("button", name="Sign in with the token").click()
    await expect(page.get_by_role("alert")).to_have_text("invalid API token")


async def test_a_wrong_password_is_refused_then_throttled(
    admin_ready: DashStack, page: Page, shots: Path
) -> None:
    user_with_password(admin_ready, "wendy", "developer", "wendy's password")
    for _ in range(5):
        await sign_in(page, admin_ready.dashboard, "wendy", "not it")
        await expect(page.get_by_role("alert")).to_have_text("wrong username or password")
        assert "/login" in page.url
    # Throttled now: even the right password waits, and the page says for how long.
    async with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as answer:
        await sign_in(page, admin_ready.dashboard, "wendy", "wendy's password")
    assert (await answer.value).status == 429
    await expect(page.get_by_role("alert")).to_contain_text("too many failed sign-ins for 'wendy'")
    await page.screenshot(path=shots / "throttled.png", full_page=True)
    # Another user is not affected.
    await signed_in_as_admin(page, admin_ready)


# --- artifacts -----------------------------------------------------------------------


async def test_a_pushed_bento_shows_its_services_apis_and_models_and_labels_persist(
    admin_ready: DashStack, pushed: dict[str, str], page: Page, shots: Path
) -> None:
    stack = admin_ready
    name, version = pushed["bento"].split(":")
    model_name, model_version = pushed["model"].split(":")
    await signed_in_as_admin(page, stack)
    await page.goto(f"{stack.dashboard}/bentos")
    row = page.get_by_role("link", name=pushed["bento"])
    await expect(row).to_be_visible()
    await page.screenshot(path=shots / "bentos.png", full_page=True)
    await row.click()
    await page.wait_for_url(f"**/bentos/{name}/{version}")
    await expect(page.get_by_role("heading", name="Florist entry")).to_be_visible()
    await expect(page.get_by_role("heading", name="/classify")).to_be_visible()
    await page.get_by_text("Input schema").first.click()
    await expect(page.locator(".api pre").first).to_contain_text("petal_width")
    await expect(page.get_by_role("link", name=pushed["model"]).first).to_be_visible()
    await expect(page.locator(".facts")).to_contain_text("admin")  # the creator

    await page.get_by_label("Edit labels").fill("team=nlp\nstage=staging")
    await page.get_by_role("button", name="Save labels").click()
    await expect(page.get_by_role("status")).to_have_text("Labels saved.")
    await page.reload()
    await expect(page.locator(".label", has_text="team=nlp")).to_be_visible()
    await page.screenshot(path=shots / "bento.png", full_page=True)
    stored = stack.api("GET", f"/api/v1/bento_repositories/{name}/bentos/{version}").json()
    assert {lb["key"]: lb["value"] for lb in stored["labels"]} == {
        "team": "nlp",
        "stage": "staging",
    }
    # A label filter on the list finds it, a wrong one does not.
    await page.goto(f"{stack.dashboard}/bentos?labels=team%3Dnlp")
    await expect(page.get_by_role("link", name=pushed["bento"])).to_be_visible()
    await page.goto(f"{stack.dashboard}/bentos?labels=team%3Dcv")
    await expect(page.get_by_text("No bentos match these filters.")).to_be_visible()

    # From the bento to its model, and back.
    await page.goto(f"{stack.dashboard}/bentos/{name}/{version}")
    await page.get_by_role("link", name=pushed["model"]).first.click()
    await page.wait_for_url(f"**/models/{model_name}/{model_version}")
    await expect(page.locator(".label", has_text="stage=test")).to_be_visible()  # its own
    back = page.get_by_role("link", name=pushed["bento"])
    await expect(back).to_be_visible()
    await page.screenshot(path=shots / "model.png", full_page=True)
    await back.click()
    await page.wait_for_url(f"**/bentos/{name}/{version}")


async def test_a_token_created_in_the_ui_logs_the_real_client_in_until_revoked(
    admin_ready: DashStack, bentoml_client: Client, page: Page, shots: Path, tmp_path: Path
) -> None:
    await signed_in_as_admin(page, admin_ready)
    await page.goto(f"{admin_ready.dashboard}/tokens")
    await page.get_by_text("Create a token").click()
    await page.get_by_label("Name").fill("laptop")
    await page.get_by_role("button", name="Create token").click()
    line = await page.get_by_label("Log the BentoML client in").input_value()
    await page.screenshot(path=shots / "token-created.png", full_page=True)
    args = shlex.split(line)
    assert args[:4] == ["bentoml", "cloud", "login", "--endpoint"]
    assert args[4] == admin_ready.gateway
    logged = await asyncio.to_thread(bentoml_client.run, tmp_path, *args[1:], check=False)
    assert logged.returncode == 0, logged.stderr
    # The token shows in the list (never its secret again); revoke it there.
    await page.goto(f"{admin_ready.dashboard}/tokens")
    assert args[-1] not in await page.content()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Revoke laptop").click()
    await expect(page.get_by_role("status")).to_contain_text("Token revoked")
    await expect(page.locator("tr[data-token=laptop]")).to_have_count(0)
    refused = await asyncio.to_thread(bentoml_client.run, tmp_path, *args[1:], check=False)
    assert refused.returncode != 0
    assert "revoked" in (refused.stdout + refused.stderr).lower() or refused.returncode != 0


async def test_a_guest_sees_no_write_buttons_and_the_api_refuses_writes_anyway(
    admin_ready: DashStack, pushed: dict[str, str], page: Page, shots: Path
) -> None:
    stack = admin_ready
    name, version = pushed["bento"].split(":")
    user_with_password(stack, "gail", "guest", "gail's password")
    await sign_in(page, stack.dashboard, "gail", "gail's password")
    await expect(page.locator(".who .role")).to_have_text("guest")
    await page.goto(f"{stack.dashboard}/bentos/{name}/{version}")
    await expect(page.get_by_role("heading", name="Florist entry")).to_be_visible()
    await expect(page.get_by_role("button", name="Save labels")).to_have_count(0)
    await expect(page.get_by_role("link", name="Delete…")).to_have_count(0)
    await page.screenshot(path=shots / "guest-bento.png", full_page=True)
    await page.goto(f"{stack.dashboard}/deployments")
    await expect(page.locator("form[data-deploy-form]")).to_have_count(0)
    await page.goto(f"{stack.dashboard}/tokens")
    await expect(page.get_by_role("button", name="Create token")).to_have_count(0)
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    await expect(page.get_by_role("link", name="Members")).to_have_count(0)
    await page.goto(f"{stack.dashboard}/members")
    await expect(page.get_by_role("alert")).to_contain_text("Only admins")

    # The buttons are absent, and a write sent anyway (with a valid form token) is refused
    # by the gateway, whose message the page shows.
    forced = await page.request.post(
        f"{stack.dashboard}/bentos/{name}/{version}/labels",
        form={"labels": "hacked=yes", "csrf": csrf or ""},
    )
    assert forced.status == 403
    assert "needs the developer role" in await forced.text()
    deleted = await page.request.post(
        f"{stack.dashboard}/bentos/{name}/{version}/delete", form={"csrf": csrf or ""}
    )
    assert deleted.status == 403
    session = httpx.post(
        f"{stack.gateway}/api/ekiben/v1/sessions",
        json={"username": "gail", "password": "gail's password"},
    ).json()["session"]
    direct = httpx.patch(
        f"{stack.gateway}/api/v1/bento_repositories/{name}/bentos/{version}",
        headers={"X-Ekiben-Session": session},
        json={"labels": [{"key": "hacked", "value": "yes"}]},
    )
    assert direct.status_code == 403
    labels = stack.api("GET", f"/api/v1/bento_repositories/{name}/bentos/{version}").json()
    assert "hacked" not in {lb["key"] for lb in labels["labels"]}


# --- live ----------------------------------------------------------------------------


def push_model(stack: DashStack, name: str, version: str) -> None:
    """A model version pushed through the API the way the client does (presigned)."""
    base = f"/api/v1/model_repositories/{name}/models/{version}"
    if stack.api("GET", f"/api/v1/model_repositories/{name}").status_code == 404:
        made = stack.api("POST", "/api/v1/model_repositories", json={"name": name})
        assert made.status_code == 200, made.text
    body: dict[str, Any] = {
        "version": version,
        "manifest": {"module": "bentoml.sklearn", "api_version": "v1", "bentoml_version": "1.4.40",
                     "size_bytes": 5, "metadata": {}, "context": {}, "options": {}},
        "labels": [],
    }  # fmt: skip
    created = stack.api("POST", f"/api/v1/model_repositories/{name}/models", json=body)
    assert created.status_code == 200, created.text
    signed = stack.api("PATCH", f"{base}/presign_upload_url").json()
    stack.api("PATCH", f"{base}/start_upload")
    assert httpx.put(signed["presigned_upload_url"], content=b"model").status_code == 200
    done = stack.api("PATCH", f"{base}/finish_upload", json={"status": "success", "reason": ""})
    assert done.status_code == 200, done.text


async def test_an_event_shows_live_without_a_reload(
    admin_ready: DashStack, page: Page, shots: Path
) -> None:
    await signed_in_as_admin(page, admin_ready)
    await page.goto(f"{admin_ready.dashboard}/events?type=model.pushed")
    await expect(page.locator("[data-live-feed]")).to_have_attribute("data-state", "live")
    await page.evaluate("window.__notReloaded = true")
    push_model(admin_ready, "live-model", "v1")
    item = page.locator('li[data-type="model.pushed"]', has_text="live-model:v1")
    await expect(item).to_be_visible(timeout=10_000)
    assert await page.evaluate("window.__notReloaded") is True
    await page.screenshot(path=shots / "events-live.png", full_page=True)
    # The home page's feed and the models list notice hear the same event.
    await page.goto(f"{admin_ready.dashboard}/models")
    await expect(page.locator("[data-live-notice]")).to_be_hidden()
    await page.wait_for_timeout(500)
    push_model(admin_ready, "live-model", "v2")
    await expect(page.locator("[data-live-notice]")).to_contain_text("live-model:v2")


# --- deployments ---------------------------------------------------------------------


def latest_scaling(stack: DashStack, name: str) -> dict[str, Any]:
    found = stack.api("GET", f"/api/v2/deployments/{name}").json()
    (target,) = found["latest_revision"]["targets"]
    scaling = target["config"]["services"]["Florist"]["scaling"]
    return {
        "revision": found["latest_revision"]["number"],
        "status": found["status"],
        "min_replicas": scaling["min_replicas"],
        "max_replicas": scaling["max_replicas"],
    }


async def test_a_deployment_made_in_the_form_runs_on_screen_then_rolls_back_and_terminates(
    admin_ready: DashStack,
    pushed: dict[str, str],
    page: Page,
    browser: Browser,
    axe_source: str,
    shots: Path,
) -> None:
    stack = admin_ready
    await signed_in_as_admin(page, stack)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(f"{stack.dashboard}/deployments")
    form = page.locator("form[data-deploy-form]")
    await expect(form).to_be_visible()  # open: there is no deployment yet
    # A mistake is named next to the form, with what was typed kept.
    await form.get_by_label("Bento", exact=True).fill("florist")
    await form.get_by_role("button", name="Deploy").click()
    await expect(page.locator("#deploy-error")).to_contain_text("name:version")
    await expect(form.get_by_label("Bento", exact=True)).to_have_value("florist")
    # The gateway's own refusal too: a bento it does not have.
    await form.get_by_label("Bento", exact=True).fill("no-such-bento:v1")
    await form.get_by_role("button", name="Deploy").click()
    await expect(page.locator("#deploy-error")).to_contain_text("no-such-bento")

    await form.get_by_label("Bento", exact=True).fill(pushed["bento"])
    await form.get_by_label("Name", exact=True).fill("florist-web")
    await form.get_by_label("Min replicas 1").fill("1")
    await form.get_by_label("Max replicas 1").fill("2")
    await form.get_by_label("Memory 1").fill("256Mi")
    await form.get_by_label("Environment").fill("MODE=browser")
    await expect(form.get_by_label("Enable the ingress")).to_be_checked()
    await form.get_by_label("Ingress host").fill("florist.example.test")
    await page.screenshot(path=shots / "deploy-form.png", full_page=True)
    await form.get_by_role("button", name="Deploy").click()
    await page.wait_for_url("**/deployments/*/florist-web?deployed=1")
    await expect(page.locator("[data-live-feed]")).to_have_attribute("data-state", "live")
    await page.evaluate("window.__notReloaded = true")
    status = page.locator("[data-deployment-status]")
    # The bento is built by the real builder, then deployed on the kwok nodes: the status
    # changes on this page from the event stream alone.
    await expect(status).to_contain_text("running", timeout=600_000)
    # Its Kubernetes events follow too: the section is drawn again after the deployment's
    # events, with what the controllers reported about its Deployment by then.
    live_events = page.locator("[data-live-events]")
    await expect(live_events).to_have_attribute("data-refreshed", re.compile(r"^[1-9]"))
    await expect(live_events.locator("table.events tbody tr").first).to_be_visible()
    assert await page.evaluate("window.__notReloaded") is True
    feed = page.locator("[data-live-feed] li")
    await expect(feed.filter(has_text="running").first).to_be_visible()
    await expect(page.locator('li[data-type="deployment.requested"]')).to_have_count(1)
    assert await feed.count() >= 3  # requested, then each status it went through
    await page.screenshot(path=shots / "deployment-running.png", full_page=True)
    assert latest_scaling(stack, "florist-web") == {
        "revision": 1, "status": "running", "min_replicas": 1, "max_replicas": 2,
    }  # fmt: skip
    found = stack.api("GET", "/api/v2/deployments/florist-web").json()
    cluster = found["cluster"]["name"]
    assert {"name": "MODE", "value": "browser"} in found["latest_revision"]["targets"][0]["config"][
        "envs"
    ]
    ingress = found["latest_revision"]["targets"][0]["config"]["ingress"]
    assert (ingress["enabled"], ingress["host"]) == (True, "florist.example.test")
    assert await scan(page, axe_source) == []

    # Edit: a second revision from the form filled with the first.
    await page.get_by_text("Edit the deployment").click()
    edit = page.locator("form[data-deploy-form]")
    await expect(edit.get_by_label("Max replicas 1")).to_have_value("2")
    await expect(edit.get_by_label("Ingress host")).to_have_value("florist.example.test")
    await expect(edit.get_by_label("Enable the ingress")).to_be_checked()
    await edit.get_by_label("Max replicas 1").fill("3")
    await edit.get_by_role("button", name="Deploy this revision").click()
    await page.wait_for_url("**/deployments/*/florist-web?deployed=1")
    await expect(page.get_by_role("cell", name="2 (current)")).to_be_visible()
    assert latest_scaling(stack, "florist-web")["max_replicas"] == 3

    # Roll back to revision 1: a third revision with the first one's configuration.
    await page.get_by_role("button", name="Roll back to revision 1").click()
    await expect(page.get_by_role("cell", name="3 (current)")).to_be_visible()
    rolled = latest_scaling(stack, "florist-web")
    assert (rolled["revision"], rolled["max_replicas"]) == (3, 2)
    await page.screenshot(path=shots / "deployment-revisions.png", full_page=True)
    # What Kubernetes said about it (the deployer's and the controller-manager's Events).
    await expect(page.get_by_role("heading", name="Kubernetes events")).to_be_visible()
    events = page.locator("table.events tbody tr")
    await expect(events.first).to_be_visible()
    kinds = await page.locator("table.events tbody tr td:nth-child(3)").all_inner_texts()
    assert any(k.startswith(("BentoDeployment/", "Deployment/")) for k in kinds), kinds
    assert await scan(page, axe_source) == []
    await page.locator("#kube-events").scroll_into_view_if_needed()
    await page.screenshot(path=shots / "deployment-events.png", full_page=True)

    # A guest on the same page: no write button, and the writes sent anyway are refused.
    user_with_password(stack, "gwen", "guest", "gwen's password")
    guest_context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        guest = await guest_context.new_page()
        await sign_in(guest, stack.dashboard, "gwen", "gwen's password")
        await expect(guest.locator(".who .role")).to_have_text("guest")
        await guest.goto(f"{stack.dashboard}/deployments/{cluster}/florist-web")
        await expect(guest.get_by_role("heading", name="Revisions")).to_be_visible()
        for button in ("Terminate", "Roll back to revision 1", "Deploy this revision"):
            await expect(guest.get_by_role("button", name=button)).to_have_count(0)
        await expect(guest.get_by_role("link", name="Delete…")).to_have_count(0)
        await expect(guest.get_by_text("Edit the deployment")).to_have_count(0)
        await expect(guest.locator("table.events tbody tr").first).to_be_visible()  # reads
        await guest.screenshot(path=shots / "guest-deployment.png", full_page=True)
        csrf = await guest.locator("input[name=csrf]").first.get_attribute("value") or ""
        base = f"{stack.dashboard}/deployments/{cluster}/florist-web"
        for path, form_fields in [
            ("/terminate", {}), ("/rollback", {"revision": "1"}), ("/delete", {}),
            ("", {"bento": pushed["bento"], "ingress_enabled": "1"}),
        ]:  # fmt: skip
            forced = await guest.request.post(base + path, form={"csrf": csrf, **form_fields})
            assert forced.status == 403, (path, forced.status)
    finally:
        await guest_context.close()
    session = httpx.post(
        f"{stack.gateway}/api/ekiben/v1/sessions",
        json={"username": "gwen", "password": "gwen's password"},
    ).json()["session"]
    for method, path in [
        ("POST", "/api/v2/deployments/florist-web/terminate"),
        ("POST", "/api/ekiben/v1/deployments/florist-web/rollback"),
        ("DELETE", "/api/v2/deployments/florist-web"),
    ]:
        direct = httpx.request(
            method, f"{stack.gateway}{path}", headers={"X-Ekiben-Session": session},
            json={"revision": 1} if path.endswith("rollback") else None,
        )  # fmt: skip
        assert direct.status_code == 403, (method, path, direct.text)
    assert latest_scaling(stack, "florist-web")["revision"] == 3
    assert latest_scaling(stack, "florist-web")["status"] == "running"

    await page.goto(f"{stack.dashboard}/clusters")
    await expect(page.get_by_role("link", name="florist-web")).to_be_visible()
    assert await scan(page, axe_source) == []
    await page.screenshot(path=shots / "clusters.png", full_page=True)

    # Terminate: the status on screen says so, and so does the API.
    await page.goto(f"{stack.dashboard}/deployments/{cluster}/florist-web")
    await page.get_by_role("button", name="Terminate").click()
    await expect(page.locator("[data-deployment-status]")).to_contain_text(
        "terminat", timeout=60_000
    )
    assert stack.api("GET", "/api/v2/deployments/florist-web").json()["status"] in (
        "terminating", "terminated",
    )  # fmt: skip

    # Delete, after a confirmation page.
    await page.get_by_role("link", name="Delete…").click()
    await page.wait_for_url("**/florist-web/delete")
    assert await scan(page, axe_source) == []
    await page.get_by_role("button", name="Delete florist-web").click()
    await page.wait_for_url("**/deployments?deleted=florist-web")
    await expect(page.locator("p.notice", has_text="Deleted florist-web")).to_be_visible()
    gone = stack.api("GET", "/api/v2/deployments/florist-web")
    assert gone.status_code == 404 or gone.json()["status"] in ("deleting", "terminated"), gone.text


async def test_a_rebuilds_log_follows_live_on_its_page_as_text_and_passes_an_axe_scan(
    admin_ready: DashStack, pushed: dict[str, str], page: Page, axe_source: str, shots: Path
) -> None:
    """A rebuild asked for from a build's page, opened from /builds while it runs: its log
    streams into the page (as text nodes) and its status changes from the event stream,
    with no reload, until the build ends. (After the deployment test, which waits for the
    push's own build from the deployment's page.)"""
    stack = admin_ready
    bento = pushed["bento"]
    await signed_in_as_admin(page, stack)
    await page.goto(f"{stack.dashboard}/builds?bento={bento}")
    await page.get_by_role("link", name=f"Log of the build of {bento}").first.click()
    await page.wait_for_url("**/builds/*")
    first = page.url.rsplit("/", 1)[1]
    await expect(page.locator("pre[data-build-log]")).to_have_attribute("data-state", "ended")
    await page.get_by_role("button", name=f"Rebuild {bento}").click()
    await page.wait_for_url("**/builds?bento=*")
    await page.get_by_role("link", name=f"Log of the build of {bento}").first.click()
    await page.wait_for_url("**/builds/*")
    build_id = page.url.rsplit("/", 1)[1]
    assert build_id != first
    await page.evaluate("window.__notReloaded = true")
    status = page.locator("[data-build-status]")
    at_load = await status.text_content()
    assert at_load in ("pending", "building"), at_load
    log = page.locator("pre[data-build-log]")
    await expect(log).to_have_attribute("data-state", "following")
    await expect(log).to_have_attribute("data-lines", re.compile(r"^[1-9]"), timeout=300_000)
    await page.screenshot(path=shots / "build-log-following.png", full_page=True)
    # The real builder's build (warm layers): it ends, and the page says so by itself.
    await expect(log).to_have_attribute("data-state", "ended", timeout=600_000)
    await expect(status).to_have_text("succeeded", timeout=30_000)
    assert await page.evaluate("window.__notReloaded") is True
    shown = (await log.inner_text()).splitlines()
    whole = stack.api("GET", f"/api/ekiben/v1/builds/{build_id}/logs", params={"follow": "false"})
    assert shown == whole.text.splitlines()
    assert await log.locator("code *").count() == 0  # text only, never markup
    await expect(page.get_by_role("status").filter(has_text="The build has ended")).to_be_visible()
    assert await scan(page, axe_source) == []
    await page.screenshot(path=shots / "build-log.png", full_page=True)


# --- accessibility, screenshots ------------------------------------------------------

PAGES = [
    "/",
    "/bentos",
    "/models",
    "/builds",
    "/deployments",
    "/clusters",
    "/events",
    "/tokens",
    "/members",
    "/audit",
]


Scheme = Literal["light", "dark"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_every_page_passes_an_axe_scan_and_is_photographed(
    admin_ready: DashStack,
    pushed: dict[str, str],
    browser: Browser,
    axe_source: str,
    scheme: Scheme,
    shots: Path,
) -> None:
    name, version = pushed["bento"].split(":")
    model_name, model_version = pushed["model"].split(":")
    builds = admin_ready.api("GET", "/api/ekiben/v1/builds", params={"bento": pushed["bento"]})
    build = builds.json()["items"][0]["id"]
    paths = [*PAGES, f"/bentos/{name}/{version}", f"/models/{model_name}/{model_version}",
             f"/bentos/{name}/{version}/delete", f"/bentos/{name}", f"/builds/{build}"]  # fmt: skip
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800},
        color_scheme=scheme,
        bypass_csp=True,
    )
    try:
        page = await context.new_page()
        await page.goto(f"{admin_ready.dashboard}/login")
        found = await scan(page, axe_source)
        await page.screenshot(path=shots / "login.png", full_page=True)
        await sign_in(page, admin_ready.dashboard, "admin", ADMIN_PASSWORD)
        await expect(page.locator(".who .user")).to_have_text("admin")
        problems = {"/login": found}
        for path in paths:
            await page.goto(f"{admin_ready.dashboard}{path}")
            await page.wait_for_load_state("networkidle") if path == "/" else None
            problems[path] = await scan(page, axe_source)
            slug = path.strip("/").replace("/", "_") or "home"
            await page.screenshot(path=shots / f"{slug}.png", full_page=True)
        # A narrow window (a phone): the same pages still fit.
        await page.set_viewport_size({"width": 390, "height": 800})
        for path in ("/", "/bentos", f"/bentos/{name}/{version}"):
            await page.goto(f"{admin_ready.dashboard}{path}")
            slug = path.strip("/").replace("/", "_") or "home"
            await page.screenshot(path=shots / f"narrow-{slug}.png", full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"{path} scrolls sideways at 390 px: {width}"
    finally:
        await context.close()
    serious = {path: found for path, found in problems.items() if found}
    assert not serious, json.dumps(serious, indent=2)


async def scan(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is."""
    await page.evaluate(axe_source)
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
    )
    return [v for v in violations if v["impact"] in ("serious", "critical")]


async def test_keyboard_alone_reaches_sign_in_and_the_main_content(
    admin_ready: DashStack, page: Page
) -> None:
    await page.goto(f"{admin_ready.dashboard}/login")
    # The first field has the focus; Tab goes on to the password, Enter submits.
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.keyboard.type("admin")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Password", exact=True)).to_be_focused()
    await page.keyboard.type(ADMIN_PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{admin_ready.dashboard}/")
    await expect(page.locator(".who .user")).to_have_text("admin")
    # On every page the first Tab is the skip link, which moves the focus to the content.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.closest('main') !== null")
    assert focused, "Tab after the skip link stays in the main content"
