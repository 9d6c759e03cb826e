"""Queries answered by the agent from the real swarm, through sami-control, to the `sami`
CLI (real processes): a service's logs (`sami logs`, `--tail`, `--follow`) and the plan of a
deployment (`sami diff`, `sami deploy --plan`), which changes nothing."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from sami_agent.executor import Outcome
from sami_agent.executors.swarm import SwarmExecutor
from sami_dev.devswarm import DevSwarm
from tests.harness import sami, sami_popen, wait_for
from tests.swarm.conftest import Image, Images
from tests.swarm.test_swarm_e2e import Sami, deployments_repo, running
from tests.swarm.test_swarm_executor import STACK, job

pytestmark = pytest.mark.timeout(300)

# Prints a numbered line on stdout and one on stderr, every 0.2 s.
TALKER_CMD = [
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo out-$i; echo err-$i >&2; sleep 0.2; done",
]


@pytest.fixture
def live(tmp_path: Path, devswarm: DevSwarm) -> Iterator[Sami]:
    files = deployments_repo(["talk", "plan-a", "plan-b"])
    # plan-a's manifest asks for 3 replicas where the running stack has 2.
    files["services/plan-a/swarm/stage/stack.yml"] = STACK.replace(
        "replicas: 2", "replicas: 3"
    ).encode()
    with running(tmp_path, devswarm, files) as s:
        yield s


@pytest.fixture(scope="module")
def talker(devswarm: DevSwarm) -> Image:
    ref, digest = devswarm.build_image("talker", "v1", {"app/healthy": "ok\n"}, cmd=TALKER_CMD)
    return Image(ref, digest)


def _numbers(text: str, prefix: str) -> list[int]:
    return [int(n) for n in re.findall(rf"\| {prefix}-(\d+)$", text, flags=re.M)]


def test_logs_tail_and_follow_then_the_caller_leaves(live: Sami, talker: Image) -> None:
    agent = live.agent("m1")
    art = live.register("talk", talker)
    up = live.deploy_wait("talk", "stage", art)
    assert up.rc == 0, up.out + up.err

    last: list[str] = []

    def some_lines() -> bool:
        r = live.sami("logs", "talk", "--env", "stage", "--tail", "4")
        last[:] = [f"rc {r.rc}\n{r.out}\n{r.err}"]
        return r.rc == 0 and len(_numbers(r.out, "out")) >= 2

    try:
        wait_for(some_lines, timeout=30, interval=0.5, what="the talker's lines")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last `sami logs`: {last}") from None
    tail = live.sami("logs", "talk", "--env", "stage", "--tail", "4")
    assert tail.rc == 0, tail.err
    # The last four lines of each of the two tasks (the talker alternates stdout and
    # stderr), stdout on stdout and stderr on stderr, each with its time and task.
    assert len(_numbers(tail.out, "out")) + len(_numbers(tail.err, "err")) == 8, tail
    assert _numbers(tail.out, "out") and _numbers(tail.err, "err"), tail
    tasks = {line.split()[1] for line in (tail.out + tail.err).splitlines()}
    assert len(tasks) == 2, tasks
    first = tail.out.splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z stage_talk_web\.\d\.\w+ \| out-\d+$", first), first
    # Two lines per task: the talker alternates, so one of each stream (with one line,
    # both tasks' last lines are often stderr).
    as_json = [
        json.loads(line)
        for line in live.sami(
            "logs", "talk", "--env", "stage", "--tail", "2", "-o", "json"
        ).out.splitlines()
    ]
    assert {j["stream"] for j in as_json} == {"stdout", "stderr"}
    assert all(j["task"].startswith("stage_talk_web.") for j in as_json)

    before = max(_numbers(tail.out, "out"))
    follow = sami_popen(
        live.control, live.admin, "logs", "talk", "--env", "stage", "--tail", "1", "--follow"
    )
    seen: list[str] = []
    errors: list[str] = []

    def read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line)

    # Both pipes are read: the talker's stderr lines go to the CLI's stderr, and a full
    # pipe would block the CLI in a write, and then in its flush at exit after the Ctrl-C.
    for stream, into in ((follow.stdout, seen), (follow.stderr, errors)):
        threading.Thread(target=read, args=(stream, into), daemon=True).start()
    try:
        # New lines keep arriving: later numbers than any the --tail call saw.
        wait_for(
            lambda: any(n > before + 5 for n in _numbers("".join(seen), "out")),
            timeout=30,
            interval=0.2,
            what="followed lines",
        )
        follow.send_signal(signal.SIGINT)
        assert follow.wait(15) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    # The caller left: the agent was told to stop, and stopped.
    wait_for(lambda: "query_cancelled" in agent.log(), timeout=15, what="the agent to stop")
    assert "the caller left" in agent.log()


def test_logs_refused_without_the_scope(live: Sami) -> None:
    live.agent("m1")
    other = live.control.token("deployer", "--service", "plan-a", "--env", "stage", name="other")
    reader = live.control.token("reader", name="looker")
    prod = live.control.token("deployer", "--service", "talk", "--env", "production", name="prod")
    for token, why in (
        (other, "may read the logs of only plan-a, not 'talk'"),
        (reader, "role reader, which may not read service logs"),
        (prod, "may read the logs of only in production, not 'stage'"),
    ):
        r = sami(live.control, token, "logs", "talk", "--env", "stage", "--tail", "1")
        assert r.rc == 2, r.out + r.err
        assert why in r.err, r.err


def _swarm_services(devswarm: DevSwarm, stack: str) -> list[tuple[str, str, int]]:
    """(name, image, replicas) of the stack's services: what a plan must not change."""
    out = []
    for s in devswarm.client().api.services(
        filters={"label": f"com.docker.stack.namespace={stack}"}
    ):
        spec = s["Spec"]
        out.append(
            (
                spec["Name"],
                spec["TaskTemplate"]["ContainerSpec"]["Image"],
                spec["Mode"]["Replicated"]["Replicas"],
            )
        )
    return sorted(out)


def test_plan_shows_an_image_and_a_replica_change_and_changes_nothing(
    live: Sami, images: Images, executor: SwarmExecutor
) -> None:
    # plan-a runs v1 with 2 replicas (deployed as Sami would); the synced manifest says 3.
    running = executor.execute(
        job("stage_plan-a", images.v1, "dep_a"), lambda p, m: None, threading.Event()
    )
    assert running.outcome is Outcome.SUCCEEDED, running.reason
    live.agent("m1")
    wait_for(lambda: "m1" in live.sami("agents").out, what="m1 connected")
    before = _swarm_services(live.devswarm, "stage_plan-a")
    v2 = live.register("plan-a", images.v2)

    r = live.sami("diff", "plan-a", "--env", "stage", "--artifact", v2, "-o", "json")
    assert r.rc == 0, r.out + r.err
    plan = json.loads(r.out)
    assert plan["stack_name"] == "stage_plan-a" and plan["agent_id"] == "m1"
    (web,) = plan["services"]
    assert web["name"] == "stage_plan-a_web" and web["action"] == "update"
    changes = {c["field"]: (c["before"], c["after"]) for c in web["changes"]}
    assert changes["image"] == (images.v1.ref, images.v2.ref), changes
    assert changes["replicas"] == ("2", "3"), changes
    # Sami's own labels change on every deployment: not shown as a change.
    assert "labels" not in changes, changes

    text = live.sami("deploy", "plan-a", "--env", "stage", "--artifact", v2, "--plan")
    assert text.rc == 0, text.out + text.err
    assert "~ stage_plan-a_web: update" in text.out
    assert f"image: {images.v1.ref} -> {images.v2.ref}" in text.out
    assert "replicas: 2 -> 3" in text.out
    assert _swarm_services(live.devswarm, "stage_plan-a") == before
    assert json.loads(live.sami("list", "--service", "plan-a", "-o", "json").out) == []


def test_plan_of_a_missing_service_shows_a_create_and_changes_nothing(
    live: Sami, images: Images
) -> None:
    live.agent("m1")
    wait_for(lambda: "m1" in live.sami("agents").out, what="m1 connected")
    v1 = live.register("plan-b", images.v1)
    r = live.sami("deploy", "plan-b", "--env", "stage", "--artifact", v1, "--plan")
    assert r.rc == 0, r.out + r.err
    assert "+ stage_plan-b_web: create" in r.out, r.out
    assert f"image: {images.v1.ref}" in r.out and "replicas: 2" in r.out
    assert "1 to create" in r.out
    time.sleep(1)  # a deploy would have created the service by now
    assert _swarm_services(live.devswarm, "stage_plan-b") == []
    assert json.loads(live.sami("list", "--service", "plan-b", "-o", "json").out) == []
