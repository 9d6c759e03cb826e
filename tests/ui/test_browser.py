"""The dashboard as people use it, in headless chromium: sign in, read the overview, follow
a deployment live, cancel one (and not as a reader), sign out, lose the session when the
token is revoked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import grpc
from playwright.sync_api import BrowserContext, Page, expect

from sami.v1 import agent_pb2
from tests.security.conftest import AgentStream, Stubs, live_service
from tests.ui.conftest import UiStack

LIVE_TIMEOUT = 30_000


def sign_in(context: BrowserContext, ui: UiStack, token: str, path: str = "/") -> Page:
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(ui.base + path)
    expect(page).to_have_url(f"{ui.base}/login?next={path.replace('/', '%2F')}")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(ui.base + path)
    return page


def timeline_sequences(page: Page) -> list[int]:
    return [
        int(s) for s in page.locator("#timeline li").evaluate_all("l => l.map(e => e.dataset.seq)")
    ]


def test_sign_in_then_the_overview_shows_a_deployment_made_with_the_cli(
    ui: UiStack, browser: BrowserContext
) -> None:
    ui.agent("a1", "--dry-run-step-seconds", "0.05")
    dep = ui.deploy("stage", "--wait", "--timeout", "60")
    page = browser.new_page()
    page.goto(ui.base + "/")
    page.get_by_label("Token").fill("sami_000000000000_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page = sign_in(browser, ui, ui.reader)
    expect(page.locator(".who")).to_have_text("alice · reader")
    web = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="web"))
    stage = web.get_by_role("cell").nth(0)
    expect(stage).to_contain_text("web")
    expect(stage).to_contain_text("sha256:aaaaaaaaaaaa")
    expect(stage.locator(".state")).to_have_text("✓ succeeded")
    expect(web.get_by_role("cell").nth(1)).to_contain_text("no deployment yet")
    stage.locator(".state").click()
    expect(page).to_have_url(f"{ui.base}/deployments/{dep}")


def test_a_deployment_page_follows_a_dry_run_agent_live(
    ui: UiStack, browser: BrowserContext
) -> None:
    dep = ui.deploy("stage")
    page = sign_in(browser, ui, ui.admin, f"/deployments/{dep}")
    expect(page.locator("#state")).to_have_text("◷ queued")
    assert timeline_sequences(page) == [1]
    expect(page.locator("#live")).to_have_text("following live…")
    # Only now does an agent pick it up: everything after is what the page was sent.
    ui.agent("a1", "--dry-run-step-seconds", "0.3")
    expect(page.locator("#state")).to_have_text("▸ in progress", timeout=LIVE_TIMEOUT)
    expect(page.locator("#state")).to_have_text("✓ succeeded", timeout=LIVE_TIMEOUT)
    expect(page.locator("#live")).to_have_text("finished")
    seqs = timeline_sequences(page)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 6
    expect(page.locator("#timeline")).to_contain_text("converge")
    # The page as served now holds the same timeline as the one built live.
    page.reload()
    assert timeline_sequences(page) == seqs


def test_a_reader_gets_no_cancel_button_and_forged_posts_are_refused(
    ui: UiStack, browser: BrowserContext
) -> None:
    dep = ui.deploy("stage")
    page = sign_in(browser, ui, ui.reader, f"/deployments/{dep}")
    expect(page.locator("#state")).to_have_text("◷ queued")
    expect(page.get_by_role("link", name="Cancel…")).to_have_count(0)
    page.goto(f"{ui.base}/services/web/stage")
    expect(page.get_by_role("link", name="Cancel…")).to_have_count(0)
    expect(page.get_by_role("columnheader", name="Actions")).to_have_count(0)
    # The browser's own session, but no (or a wrong) CSRF token: refused.
    url = f"{ui.base}/deployments/{dep}/cancel"
    origin = {"Origin": ui.base}
    assert page.request.post(url, form={"reason": "x"}, headers=origin).status == 403
    assert page.request.post(url, form={"csrf": "nope"}, headers=origin).status == 403
    # With the right token, the core still says no: a reader may not cancel.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    answer = page.request.post(url, form={"csrf": csrf}, headers=origin, max_redirects=0)
    assert answer.status == 403
    assert "may not deploy or cancel" in answer.text()
    assert "QUEUED" in ui.sami("get", dep).out


def test_an_admin_cancels_after_confirming(ui: UiStack, browser: BrowserContext) -> None:
    dep = ui.deploy("stage")
    page = sign_in(browser, ui, ui.admin, "/services/web/stage")
    page.get_by_role("link", name="Cancel…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Cancel this deployment?")
    page.get_by_label("Reason").fill("wrong artifact")
    page.get_by_role("button", name="Cancel the deployment").click()
    expect(page).to_have_url(f"{ui.base}/deployments/{dep}")
    expect(page.locator("#state")).to_have_text("⊘ cancelled")
    expect(page.locator("#timeline")).to_contain_text("cancelled by ci: wrong artifact")


def test_sign_out_ends_the_session(ui: UiStack, browser: BrowserContext) -> None:
    page = sign_in(browser, ui, ui.reader)
    cookies = browser.cookies()
    assert [c["name"] for c in cookies] == ["sami_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(ui.base + "/login")
    page.goto(ui.base + "/agents")
    expect(page).to_have_url(f"{ui.base}/login?next=%2Fagents")
    # The old cookie, brought back, opens nothing: the session ended on the server.
    browser.add_cookies(cookies)  # type: ignore[arg-type]
    page.goto(ui.base + "/agents")
    expect(page).to_have_url(f"{ui.base}/login?next=%2Fagents")


def test_revoking_the_token_ends_its_session_and_its_live_page(
    ui: UiStack, browser: BrowserContext
) -> None:
    dep = ui.deploy("stage")
    page = sign_in(browser, ui, ui.reader, f"/deployments/{dep}")
    expect(page.locator("#live")).to_have_text("following live…")
    r = ui.sami("token", "revoke", ui.reader[5:17])
    assert r.rc == 0, r.err
    # The live stream ends with the token, and the page goes to sign-in.
    expect(page).to_have_url(f"{ui.base}/login", timeout=LIVE_TIMEOUT)
    page.goto(ui.base + "/")
    expect(page).to_have_url(f"{ui.base}/login?next=%2F")
    page.get_by_label("Token").fill(ui.reader)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("revoked")


def test_pages_run_without_csp_violations_read_at_phone_width_and_by_keyboard(
    ui: UiStack, browser: BrowserContext
) -> None:
    """Also takes the README's screenshots: SAMI_UI_SCREENSHOTS=docs copies them there."""
    a1 = ui.agent("a1", "--dry-run-step-seconds", "0.05")
    ok = ui.deploy("stage", "--wait", "--timeout", "60", "--reason", "release 1.4")
    ui.deploy("production", "--wait", "--timeout", "60")
    ui.deploy("pull_request", "--pr", "12", "--wait", "--timeout", "60")
    a1.kill()
    r = ui.sami("deploy", "api", "--env", "stage", "--artifact", ui.artifact)
    assert r.rc == 0, r.err  # queued: no agent now
    problems: list[str] = []
    page = sign_in(browser, ui, ui.admin)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    shots = ui.tmp / "screenshots"
    shots.mkdir()
    page.set_viewport_size({"width": 960, "height": 420})
    page.reload()
    page.screenshot(path=shots / "dashboard-overview.png")
    page.set_viewport_size({"width": 960, "height": 760})
    page.goto(f"{ui.base}/deployments/{ok}")
    expect(page.locator("#state")).to_have_text("✓ succeeded")
    page.screenshot(path=shots / "dashboard-deployment.png")
    for path in (
        "/status",
        "/agents",
        "/audit",
        "/services/web/stage",
        f"/deployments/{ok}/rollback",
    ):
        page.goto(ui.base + path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
    # Keyboard: the first Tab reaches the skip link, which leads to the content.
    page.goto(ui.base + "/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # Phone width: nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 740})
    for path in ("/", "/status", f"/deployments/{ok}", "/services/web/stage", "/agents"):
        page.goto(ui.base + path)
        width: Any = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
    assert problems == []
    target = os.environ.get("SAMI_UI_SCREENSHOTS")
    if target:
        for png in shots.iterdir():
            shutil.copy(png, Path(target) / png.name)


def test_rollback_to_an_earlier_deployment_after_confirming(
    ui: UiStack, browser: BrowserContext
) -> None:
    ui.agent("a1", "--dry-run-step-seconds", "0.05")
    first = ui.deploy("stage", "--wait", "--timeout", "60")
    r = ui.sami("artifact", "register", "web", "--ref", "127.0.0.1:5000/web@sha256:" + "b" * 64)
    assert r.rc == 0, r.err
    second = r.last
    r = ui.sami("deploy", "web", "--env", "stage", "--artifact", second, "--wait")
    assert r.rc == 0, r.err
    page = sign_in(browser, ui, ui.admin, "/services/web/stage")
    rows = page.get_by_role("row")
    expect(rows.filter(has_text="★ live")).to_contain_text("sha256:bbbbbbbbbbbb")
    old = rows.filter(has=page.get_by_role("link", name=first))
    expect(old.get_by_role("link", name="Rollback to this…")).to_have_count(1)
    # The live deployment is no rollback target.
    expect(
        rows.filter(has_text="★ live").get_by_role("link", name="Rollback to this…")
    ).to_have_count(0)
    old.get_by_role("link", name="Rollback to this…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Roll back to this deployment?")
    page.get_by_label("Reason").fill("bad release")
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator("#state")).to_have_text("✓ succeeded", timeout=LIVE_TIMEOUT)
    expect(page.locator(".facts").get_by_role("link", name=first)).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("sha256:aaaaaaaaaaaa")
    expect(page.locator(".reason")).to_have_text(f"rollback to {first}: bad release")


def test_the_status_page_shows_a_drift_as_it_starts(ui: UiStack, browser: BrowserContext) -> None:
    """An agent (its gRPC stream driven by the test) reports what runs; the open status
    page shows the row, then the drift when someone runs another image by hand, without a
    reload; the overview marks the drifted target."""
    dep = ui.deploy("stage")
    with grpc.insecure_channel(ui.control.addr) as channel:
        stream = AgentStream(Stubs(channel), ui.agent_token, "a1")
        try:
            lease = stream.succeed(dep, timeout=20)
            service = live_service(lease, "sha256:" + "a" * 64)
            stream.send(live_status=agent_pb2.LiveStatus(full=True, services=[service]))
            problems: list[str] = []
            page = sign_in(browser, ui, ui.reader, "/status")
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            row = page.locator("#status-rows tr").filter(has_text="stage_web_web")
            expect(row).to_contain_text("2/2")
            expect(row).to_contain_text("healthy")
            expect(row).not_to_have_class("drifted")
            # status.js has connected when it says when it last updated.
            expect(page.locator("#status-live")).to_contain_text("updated", timeout=LIVE_TIMEOUT)
            service.image = "web@sha256:" + "c" * 64
            stream.send(live_status=agent_pb2.LiveStatus(full=False, services=[service]))
            expect(row).to_have_class("drifted", timeout=LIVE_TIMEOUT)
            expect(row).to_contain_text("drift: image: runs sha256:cccccccccccc")
            page.get_by_role("link", name="Overview").first.click()
            expect(page.locator(".drift")).to_contain_text("drift: image: runs")
            assert problems == []
        finally:
            stream.close()
