"""Preview stacks on a real swarm: listed for reconciliation only when Sami deployed them,
torn down with `docker stack rm` and waited for until really gone."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading

import pytest

from sami_agent.executor import Outcome
from sami_agent.executors.swarm import SwarmExecutor
from sami_dev.devswarm import DevSwarm
from tests.swarm.conftest import Images
from tests.swarm.test_swarm_executor import job, run

pytestmark = pytest.mark.timeout(180)

FOREIGN = """\
version: "3.8"
services:
  app:
    image: {image}
    deploy:
      replicas: 1
"""


def test_preview_listed_torn_down_and_foreign_stacks_left_alone(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor, tmp_path: object
) -> None:
    preview = dataclasses.replace(
        job("pr-7_shop", images.v1, "dep_pr7"), pull_request=7, environment="pull_request"
    )
    result, _ = run(executor, preview)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    # A stack named like a preview but not deployed by Sami is never reported.
    stack_file = os.path.join(str(tmp_path), "foreign.yml")
    with open(stack_file, "w") as f:
        f.write(FOREIGN.format(image=images.v1.ref))
    subprocess.run(
        ["docker", "stack", "deploy", "-c", stack_file, "pr-8_other"],
        env={**os.environ, **devswarm.env},
        check=True,
        capture_output=True,
    )
    try:
        listed = executor.list_previews()
        assert [(p.stack_name, p.service, p.pull_request, p.deployment_id) for p in listed] == [
            ("pr-7_shop", "shop", 7, "dep_pr7")
        ]
        down = dataclasses.replace(preview, deployment_id="dep_td", action="teardown")
        result, recorder = run(executor, down)
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        assert any("docker stack rm pr-7_shop" in m for m in recorder.messages("teardown"))
        client = devswarm.client()
        left = client.services.list(filters={"label": "com.docker.stack.namespace=pr-7_shop"})
        assert left == []
        assert executor.list_previews() == []
        again, _ = run(executor, down)
        assert again.outcome is Outcome.SUCCEEDED and "already gone" in again.reason
        refused = dataclasses.replace(down, stack_name="stage_shop")
        result = executor.execute(refused, lambda p, m: None, threading.Event())
        assert result.outcome is Outcome.FAILED and "only preview stacks" in result.reason
        assert client.services.list(filters={"label": "com.docker.stack.namespace=pr-8_other"})
    finally:
        subprocess.run(
            ["docker", "stack", "rm", "pr-8_other"],
            env={**os.environ, **devswarm.env},
            capture_output=True,
        )
