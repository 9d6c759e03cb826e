"""Cron jobs on a real swarm (docs/cron.md).

First the engine side on its own (swarm_cron.py): a cron deployment installs dormant
replicated jobs and runs nothing; a run is one versioned service update that Swarm refuses
when it is stale; a run's outcome, exit code and output are read from its tasks; a
deployment during a run interrupts it. Then end to end with real processes: sami-control,
a sami-agent with the Swarm executor whose cron clock runs 20 times faster (a minute every
3 s, so real runs happen within the test), and the sami CLI: `sami deploy` of a cron
manifest, then `sami cron runs` shows the runs the agent started and how they ended.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sami_agent.cron import CronJob, RunMark, RunState, ScaledClock, run_id_for
from sami_agent.executor import Job, Outcome
from sami_agent.executors.swarm import SwarmExecutor
from sami_agent.executors.swarm_cron import SwarmCronExecutor
from sami_dev.devswarm import DevSwarm
from tests.harness import ControlPlane, Proc, Result, agent, sami, wait_for
from tests.swarm.conftest import Image

pytestmark = pytest.mark.timeout(240)

JOB_STACK = """\
services:
  {job}:
    image: example.invalid/replaced-by-sami:latest
    command: ["sh", "-c", {script}]
    deploy:
      replicas: {replicas}
"""
OK_SCRIPT = '"echo hi from $$HOSTNAME"'
FAIL_SCRIPT = '"echo something broke; exit 3"'


@pytest.fixture(scope="module")
def job_image(devswarm: DevSwarm) -> Image:
    ref, digest = devswarm.build_image("cronjob", "v1", {"app/job": "1\n"})
    return Image(ref, digest)


def cron_job(
    stack: str, image: Image, deployment_id: str, script: str, *, replicas: int = 1, **kw: Any
) -> Job:
    job_name = stack.split("_", 1)[1]
    files = {"job.yml": JOB_STACK.format(job=job_name, script=script, replicas=replicas).encode()}
    fields: dict[str, Any] = {
        "deployment_id": deployment_id,
        "service": job_name,
        "environment": "stage",
        "pull_request": 0,
        "deployment_type": "cron",
        "stack_name": stack,
        "artifact_name": "cronjob",
        "artifact_ref": image.ref,
        "artifact_digest": image.digest,
        "attempt": 1,
        "converge_timeout": 60.0,
        "files": files,
        "stack_files": ("job.yml",),
        "image_services": (job_name,),
        "cron_schedule": "*/5 * * * *",
    }
    fields.update(kw)
    return Job(**fields)


def deploy(cron: SwarmCronExecutor, job: Job) -> tuple[Outcome, str, list[str]]:
    lines: list[str] = []
    result = cron.execute(job, lambda phase, message: lines.append(message), threading.Event())
    return result.outcome, result.reason, lines


def the_job(cron: SwarmCronExecutor, stack: str) -> CronJob:
    (found,) = [j for j in cron.list_cron_jobs() if j.stack == stack]
    return found


def wait_ended(cron: SwarmCronExecutor, job: CronJob, mark: RunMark) -> RunState:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = cron.run_state(job.key, mark, the_job(cron, job.stack).iteration)
        if state.finished:
            return state
        time.sleep(0.25)
    raise AssertionError("the run did not end within 60 s")


def start(cron: SwarmCronExecutor, job: CronJob, replicas: int = 1) -> RunMark:
    now = cron.now()
    mark = RunMark(
        run_id_for(job.key, now // 60 * 60), now // 60 * 60, now, job.iteration + 1, replicas
    )
    assert cron.start_run(job, mark)
    return mark


@pytest.fixture
def cron(executor: SwarmExecutor, devswarm: DevSwarm) -> Iterator[SwarmCronExecutor]:
    made = SwarmCronExecutor(executor, clock=ScaledClock())
    yield made
    made._reset()


def _remove_stack(devswarm: DevSwarm, stack: str) -> None:
    client = devswarm.client()
    for s in client.services.list(filters={"label": f"com.docker.stack.namespace={stack}"}):
        s.remove()


def test_a_cron_deployment_installs_a_dormant_job_and_runs_nothing(
    cron: SwarmCronExecutor, job_image: Image, devswarm: DevSwarm
) -> None:
    stack = "stage_nightly"
    outcome, reason, lines = deploy(
        cron, cron_job(stack, job_image, "dep_c1", OK_SCRIPT, replicas=2)
    )
    try:
        assert outcome is Outcome.SUCCEEDED, reason
        assert f"installed on {job_image.ref}" in reason and "next run" in reason
        assert any("installed dormant" in line for line in lines)
        raw = devswarm.client().api.inspect_service(f"{stack}_nightly")
        spec = raw["Spec"]
        assert spec["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 0}}
        assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
        assert spec["TaskTemplate"]["ContainerSpec"]["Image"].endswith("@" + job_image.digest)
        labels = spec["Labels"]
        assert labels["sami.deployment-id"] == "dep_c1"
        assert labels["sami.cron-schedule"] == "*/5 * * * *"
        assert labels["sami.cron-replicas"] == "2"
        assert (labels["sami.service"], labels["sami.environment"]) == ("nightly", "stage")
        time.sleep(1.5)
        assert devswarm.client().api.tasks(filters={"service": raw["ID"]}) == []  # nothing ran
        job = the_job(cron, stack)
        assert (job.deployment_id, job.job, job.replicas, job.run) == ("dep_c1", "nightly", 2, None)
        # A run: both tasks, once each.
        mark = start(cron, job, replicas=2)
        state = wait_ended(cron, job, mark)
        assert state.finished and state.succeeded, state
        assert state.exit_code == 0 and state.message == "2/2 task(s) completed"
        seen = the_job(cron, stack).run
        assert seen is not None
        assert (seen.run_id, seen.scheduled_for, seen.iteration, seen.completions) == (
            mark.run_id,
            mark.scheduled_for,
            mark.iteration,
            2,
        )
    finally:
        _remove_stack(devswarm, stack)


def test_a_stale_start_is_refused_by_swarm(
    cron: SwarmCronExecutor, job_image: Image, devswarm: DevSwarm
) -> None:
    stack = "stage_race"
    outcome, reason, _ = deploy(cron, cron_job(stack, job_image, "dep_c2", OK_SCRIPT))
    try:
        assert outcome is Outcome.SUCCEEDED, reason
        job = the_job(cron, stack)
        first = start(cron, job)
        # A second agent that listed the job before the first start: its update is stale.
        assert not cron.start_run(job, dataclasses.replace(first, run_id="cron_other"))
        assert the_job(cron, stack).run is not None
        assert the_job(cron, stack).run.run_id == first.run_id  # type: ignore[union-attr]
        assert wait_ended(cron, job, first).succeeded
    finally:
        _remove_stack(devswarm, stack)


def test_a_failed_run_says_its_exit_code_and_output(
    cron: SwarmCronExecutor, job_image: Image, devswarm: DevSwarm
) -> None:
    stack = "stage_broken"
    outcome, reason, _ = deploy(cron, cron_job(stack, job_image, "dep_c3", FAIL_SCRIPT))
    try:
        assert outcome is Outcome.SUCCEEDED, reason
        job = the_job(cron, stack)
        state = wait_ended(cron, job, start(cron, job))
        assert state.finished and not state.succeeded
        assert state.exit_code == 3
        assert "non-zero exit (3)" in state.message
        assert "last output: something broke" in state.message
    finally:
        _remove_stack(devswarm, stack)


def test_a_deployment_during_a_run_interrupts_it(
    cron: SwarmCronExecutor, job_image: Image, devswarm: DevSwarm
) -> None:
    stack = "stage_slow"
    slow = '"sleep 30"'
    outcome, reason, _ = deploy(cron, cron_job(stack, job_image, "dep_c4", slow))
    try:
        assert outcome is Outcome.SUCCEEDED, reason
        job = the_job(cron, stack)
        mark = start(cron, job)
        time.sleep(1.0)
        assert not cron.run_state(job.key, mark, the_job(cron, stack).iteration).finished
        again = cron_job(stack, job_image, "dep_c5", slow, cron_schedule="0 3 * * *")
        outcome, reason, _ = deploy(cron, again)
        assert outcome is Outcome.SUCCEEDED, reason
        after = the_job(cron, stack)
        assert after.run is None and after.deployment_id == "dep_c5"
        state = cron.run_state(job.key, mark, after.iteration)
        assert state.finished and not state.succeeded
        assert state.message.startswith("interrupted: the job service was updated")
    finally:
        _remove_stack(devswarm, stack)


@pytest.mark.parametrize(
    ("stack_text", "says"),
    [
        ("    deploy:\n      mode: global\n", "remove `mode: global`"),
        ("    deploy:\n      update_config:\n        parallelism: 1\n", "update config"),
    ],
)
def test_stacks_swarm_cannot_run_as_jobs_fail_before_anything_changes(
    cron: SwarmCronExecutor, job_image: Image, devswarm: DevSwarm, stack_text: str, says: str
) -> None:
    files = {
        "job.yml": (
            'services:\n  bad:\n    image: x\n    command: ["true"]\n' + stack_text
        ).encode()
    }
    job = cron_job(
        "stage_bad", job_image, "dep_c6", OK_SCRIPT, files=files, image_services=("bad",)
    )
    outcome, reason, _ = deploy(cron, job)
    assert outcome is Outcome.FAILED and says in reason
    assert not devswarm.client().services.list(
        filters={"label": "com.docker.stack.namespace=stage_bad"}
    )


# End to end: real processes.

CRON_MANIFEST = """\
version: v1beta
service_name: {service}
type: cron
cron:
  schedule: "* * * * *"
  stack_files: [job.yml]
converge_timeout: 60s
"""


def write_repo(root: Path) -> Path:
    for service, script in (("tick", OK_SCRIPT), ("oops", FAIL_SCRIPT)):
        folder = root / "services" / service / "cron" / "stage"
        folder.mkdir(parents=True)
        (folder / "sami.yaml").write_text(CRON_MANIFEST.format(service=service))
        (folder / "job.yml").write_text(JOB_STACK.format(job=service, script=script, replicas=1))
    (root / "README.md").write_text("# deployments\n")
    return root


def runs(control: ControlPlane, token: str, service: str) -> list[dict[str, Any]]:
    r = sami(control, token, "cron", "runs", service, "--env", "stage", "-o", "json")
    assert r.rc == 0, r.err
    found: list[dict[str, Any]] = json.loads(r.out)
    return found


def test_cron_jobs_run_on_their_schedule_end_to_end(
    tmp_path: Path, devswarm: DevSwarm, job_image: Image
) -> None:
    control = ControlPlane(tmp_path, "--heartbeat-interval", "0.5")
    control.cluster("local", "stage")
    admin = control.token("admin", name="ci")
    reader = control.token("reader", name="dashboard")
    agent_token = control.token("agent", "--cluster", "local", name="manager")
    control.start()
    procs: list[Proc] = []
    try:
        synced = sami(
            control, admin, "manifests", "sync", str(write_repo(tmp_path / "deployments"))
        )
        assert synced.rc == 0, synced.err
        procs.append(
            agent(
                control,
                agent_token,
                "m1",
                tmp_path,
                "--cron-time-scale",
                "20",
                "--cron-interval",
                "0.5",
                env=devswarm.env,
            )
        )
        for service in ("tick", "oops"):
            art = sami(control, admin, "artifact", "register", service, "--ref", job_image.ref)
            assert art.rc == 0, art.err
            deployed: Result = sami(
                control, admin, "deploy", service, "--env", "stage", "--artifact", art.last,
                "--wait", "--timeout", "90",
            )  # fmt: skip
            assert deployed.rc == 0, deployed.out + deployed.err
            assert "installed dormant" in deployed.out, deployed.out

        def enough() -> bool:
            ok = [r for r in runs(control, reader, "tick") if r["outcome"] == "SUCCEEDED"]
            failed = runs(control, reader, "oops")
            return len(ok) >= 2 and len(failed) >= 1

        wait_for(enough, timeout=60, interval=1.0, what="two runs of tick and one of oops")
        ticks = runs(control, reader, "tick")
        assert len({r["run_id"] for r in ticks}) == len(ticks)  # each run reported once
        newest = ticks[0]
        assert newest["outcome"] == "SUCCEEDED" and newest["exit_code"] == 0
        assert (newest["service"], newest["environment"], newest["stack"], newest["job"]) == (
            "tick",
            "stage",
            "stage_tick",
            "tick",
        )
        assert newest["agent_id"] == "m1" and newest["cluster"] == "local"
        assert newest["message"] == "1/1 task(s) completed"
        assert newest["scheduled_time"].endswith(":00Z")  # on the minute (the agent's clock)
        scheduled = sorted(r["scheduled_time"] for r in ticks)
        assert len(set(scheduled)) == len(scheduled)  # one run per scheduled minute
        (oops, *_) = runs(control, reader, "oops")
        assert oops["outcome"] == "FAILED" and oops["exit_code"] == 3
        assert "non-zero exit (3)" in oops["message"] and "something broke" in oops["message"]
        text = sami(control, reader, "cron", "runs", "oops", "--env", "stage")
        assert text.rc == 0, text.err
        header, first, *_ = text.out.splitlines()
        assert header.split()[:4] == ["SCHEDULED", "(UTC)", "OUTCOME", "EXIT"]
        assert " FAILED " in first and " 3 " in first and "non-zero exit (3)" in first
    finally:
        for p in procs:
            p.kill()
        control.kill()
        for stack in ("stage_tick", "stage_oops"):
            _remove_stack(devswarm, stack)
