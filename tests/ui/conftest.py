"""The dashboard in a real browser: Debian's chromium, driven headless by Playwright (never
`playwright install`: the browser is the distribution's), against a real sami-control
process serving `--ui-listen`, with the CLI and a dry-run agent as real processes.

Without /usr/bin/chromium the browser tests skip, except in CI (CI is set), where they
fail: scripts/install-engine.sh installs chromium."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.conftest import FAST, REF, sync
from tests.harness import ControlPlane, Proc, Result, agent, free_port, sami


@dataclass
class UiStack:
    """A control plane process with the dashboard, a cluster, tokens, synced manifests and
    an artifact; dry-run agents on demand."""

    tmp: Path
    control: ControlPlane
    ui_port: int
    admin: str
    reader: str
    agent_token: str
    artifact: str = ""
    agents: list[Proc] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def agent(self, agent_id: str, *extra: str) -> Proc:
        p = agent(self.control, self.agent_token, agent_id, self.tmp, "--dry-run", *extra)
        self.agents.append(p)
        return p

    def sami(self, *args: str, token: str = "") -> Result:
        return sami(self.control, token or self.admin, *args)

    def deploy(self, env: str = "stage", *extra: str) -> str:
        """A deployment made with the CLI; its id."""
        r = self.sami("deploy", "web", "--env", env, "--artifact", self.artifact, *extra)
        assert r.rc == 0, r.err
        found = re.search(r"\bdep_[0-9a-f]+", r.out)
        assert found, r.out
        return found.group(0)


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[UiStack]:
    port = free_port()
    control = ControlPlane(tmp_path, *FAST, "--ui-listen", f"127.0.0.1:{port}")
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="ci")
    reader = control.token("reader", name="alice")
    agent_token = control.token("agent", "--cluster", "local", name="agent")
    control.start()
    s = UiStack(tmp_path, control, port, admin, reader, agent_token)
    try:
        sync(control, admin)
        r = sami(control, admin, "artifact", "register", "web", "--ref", REF)
        assert r.rc == 0, r.err
        s.artifact = r.last
        yield s
    finally:
        for p in s.agents:
            p.kill()
        if control.proc is not None:
            control.kill()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A fresh headless chromium (its own user-data folder): a Playwright BrowserContext."""
    if not CHROMIUM.exists():
        message = (
            f"the browser tests need {CHROMIUM}: run scripts/install-engine.sh as root "
            "(installs chromium)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 720},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()
