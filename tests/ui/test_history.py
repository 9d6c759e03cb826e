"""Which deployment a service's history marks live, over HTTP against real processes (the
CLI deploys, a dry-run agent applies): in an environment the newest SUCCEEDED deploy; among
previews, the newest of each pull request, none for one torn down."""

from __future__ import annotations

import re

from tests.ui.conftest import UiStack
from tests.ui.webclient import WebClient


def live_marked(body: str) -> list[str]:
    row = r'<tr class="is-live">\s*<td data-label="Deployment">'
    return re.findall(row + r'<a href="/deployments/(dep_[0-9a-f]+)"', body)


def test_the_history_marks_what_runs_in_each_environment_and_preview(ui: UiStack) -> None:
    ui.agent("a1", "--dry-run-step-seconds", "0.02")
    wait = ("--wait", "--timeout", "60")
    stage_1 = ui.deploy("stage", *wait)
    stage_2 = ui.deploy("stage", *wait)
    pr_1 = ui.deploy("pull_request", "--pr", "1", *wait)
    pr_2 = ui.deploy("pull_request", "--pr", "2", *wait)
    r = ui.sami("teardown", "web", "--pr", "1", "--wait")
    assert r.rc == 0, r.err
    web = WebClient(ui.ui_port)
    web.sign_in(ui.admin)
    stage = web.get("/services/web/stage").body
    assert live_marked(stage) == [stage_2]
    assert f"/deployments/{stage_1}/rollback" in stage
    assert f"/deployments/{stage_2}/rollback" not in stage
    previews = web.get("/services/web/pull_request").body
    assert live_marked(previews) == [pr_2]
    assert pr_1 in previews
