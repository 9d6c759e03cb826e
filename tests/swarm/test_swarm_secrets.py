"""Secrets, configs and variables on a real swarm (see conftest.py): decrypted by the agent,
versioned by content, read by the running task, rotated, rolled back, removed when unused,
and never written in plain text.

The ciphertexts are made here as `sami secret set` makes them (age, with pyrage, to the
agent's recipient); the Job carries them as an Assignment would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets as random_secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pyrage
import pytest
import structlog

from sami_agent.executor import ExecutionResult, Job, Outcome, SecretPayload, SecretRef
from sami_agent.executors import swarm_apply
from sami_agent.executors.swarm import SwarmExecutor
from sami_agent.executors.swarm_apply import LABEL_DEPLOYMENT
from sami_agent.keys import AgentKey, generate_key_file
from sami_agent.queries import QueryError
from sami_dev.devswarm import DevSwarm
from tests.swarm.conftest import Image, Images
from tests.swarm.test_swarm_executor import Recorder

pytestmark = pytest.mark.timeout(300)

STACK = """\
version: "3.8"
services:
  web:
    image: example.invalid/replaced-by-sami:latest
    secrets: [db_password]
    configs:
      - source: app_conf
        target: /app/conf
    environment:
      GREETING: ${GREETING}
      PRICE: "costs $$5"
    healthcheck:
      test: ["CMD", "test", "-f", "/app/healthy"]
      interval: 1s
      timeout: 10s
      retries: 3
    stop_grace_period: 2s
    deploy:
      replicas: 1
      update_config:
        parallelism: 1
        delay: 0s
        failure_action: rollback
        monitor: 1s
        order: stop-first
      restart_policy:
        condition: any
        delay: 1s
secrets:
  db_password:
    external: true
configs:
  app_conf:
    file: ./app.conf
"""


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> AgentKey:
    return generate_key_file(str(tmp_path_factory.mktemp("agent-state") / "age-key.txt"))


@pytest.fixture(scope="module")
def secret_executor(devswarm: DevSwarm, key: AgentKey) -> SwarmExecutor:
    return SwarmExecutor(docker_env=devswarm.env, poll_interval=0.25, key=key)


@pytest.fixture
def stack(devswarm: DevSwarm, request: pytest.FixtureRequest) -> Iterator[str]:
    """A stack name for the test; its services, secrets and configs removed afterwards."""
    name = "sec" + request.node.name.removeprefix("test_")[:8].replace("_", "")
    yield name
    client = devswarm.client()
    label = f"com.docker.stack.namespace={name}"
    for s in client.services.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            s.remove()
    for _ in range(40):
        left = 0
        for kind in ("secret", "config"):
            listing = client.api.secrets if kind == "secret" else client.api.configs
            remove = client.api.remove_secret if kind == "secret" else client.api.remove_config
            for obj in listing(filters={"label": label}):
                left += 1
                with contextlib.suppress(docker.errors.APIError):  # in use a moment more
                    remove(obj["ID"])
        if not left:
            break
        time.sleep(0.5)


def encrypt(value: bytes, recipient: str) -> bytes:
    return bytes(pyrage.encrypt(value, [pyrage.x25519.Recipient.from_str(recipient)]))


def secret_job(
    stack: str,
    image: Image,
    deployment_id: str,
    recipient: str,
    value: bytes,
    version: int,
    *,
    config: bytes = b"colour=blue\n",
    variables: dict[str, str] | None = None,
) -> Job:
    return Job(
        deployment_id=deployment_id,
        service="shop",
        environment="stage",
        pull_request=0,
        deployment_type="swarm",
        stack_name=stack,
        artifact_name="shop",
        artifact_ref=image.tagless_repo + ":latest",
        artifact_digest=image.digest,
        attempt=1,
        converge_timeout=90.0,
        files={"stack.yml": STACK.encode(), "app.conf": config},
        stack_files=("stack.yml",),
        image_services=("web",),
        secrets=(SecretRef("db_password", version),),
        secret_payloads=(SecretPayload("db_password", version, encrypt(value, recipient)),),
        variables={"GREETING": "hello"} if variables is None else variables,
    )


def run(executor: SwarmExecutor, job: Job) -> tuple[ExecutionResult, Recorder]:
    recorder = Recorder()
    return executor.execute(job, recorder, threading.Event()), recorder


def in_task(devswarm: DevSwarm, stack: str, command: str, expected: str) -> str:
    """What `command` prints in the stack's running web task, once it prints `expected`
    in every running one (the previous task may still be stopping); the last answer else."""
    client = devswarm.client()
    deadline = time.monotonic() + 30
    outputs: set[str] = set()
    while time.monotonic() < deadline:
        containers = client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={stack}_web", "status": "running"}
        )
        outputs = set()
        for c in containers:
            with contextlib.suppress(docker.errors.APIError):
                code, out = c.exec_run(["sh", "-c", command])
                outputs.add(out.decode() if code == 0 else f"exit {code}: {out.decode()}")
        if outputs == {expected}:
            return expected
        time.sleep(0.5)
    return " | ".join(sorted(outputs))


def sami_objects(devswarm: DevSwarm, stack: str, kind: str) -> dict[str, dict[str, str]]:
    api = devswarm.client().api
    listing = api.secrets if kind == "secret" else api.configs
    return {
        o["Spec"]["Name"]: o["Spec"].get("Labels") or {}
        for o in listing(filters={"label": f"sami.stack={stack}"})
    }


def web_spec(devswarm: DevSwarm, stack: str) -> dict[str, Any]:
    spec: dict[str, Any] = devswarm.client().api.inspect_service(f"{stack}_web")
    return spec


def test_secret_rotates_rolls_back_and_unused_versions_are_removed(
    devswarm: DevSwarm, images: Images, secret_executor: SwarmExecutor, key: AgentKey, stack: str
) -> None:
    first = secret_job(stack, images.v1, "dep-s1", key.recipient, b"first-password", 1)
    result, rec = run(secret_executor, first)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert in_task(devswarm, stack, "cat /run/secrets/db_password", "first-password") == (
        "first-password"
    )
    assert in_task(devswarm, stack, "cat /app/conf", "colour=blue\n") == "colour=blue\n"
    secrets_now = sami_objects(devswarm, stack, "secret")
    (old_name,) = secrets_now
    assert old_name.startswith(f"{stack}_db_password_") and len(old_name) == len(stack) + 21
    assert secrets_now[old_name] == {
        "sami.stack": stack,
        "sami.secret": "db_password",
        "sami.version": "1",
        "com.docker.stack.namespace": stack,
    }
    assert any(f"created secret db_password v1 as {old_name}" in m for m in rec.messages())
    (old_config,) = sami_objects(devswarm, stack, "config")

    # A new value and a changed config file roll out (no "only updates to Labels").
    second = secret_job(
        stack, images.v1, "dep-s2", key.recipient, b"second-password", 2, config=b"colour=red\n"
    )
    result, _ = run(secret_executor, second)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert in_task(devswarm, stack, "cat /run/secrets/db_password", "second-password") == (
        "second-password"
    )
    assert in_task(devswarm, stack, "cat /app/conf", "colour=red\n") == "colour=red\n"
    # The old versions stay while Swarm's rollback spec (PreviousSpec) still uses them.
    assert old_name in sami_objects(devswarm, stack, "secret")
    assert old_config in sami_objects(devswarm, stack, "config")

    # The next success leaves them used by neither spec: removed. What Sami did not make
    # stays, unused or not.
    by_hand = f"{stack}_by_hand"
    devswarm.client().api.create_secret(
        by_hand, b"x", labels={"com.docker.stack.namespace": stack, "sami.stack": stack}
    )
    third = dataclasses.replace(second, deployment_id="dep-s3")
    result, rec = run(secret_executor, third)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    secrets_now = sami_objects(devswarm, stack, "secret")
    assert old_name not in secrets_now
    assert by_hand in secrets_now and len(secrets_now) == 2
    assert old_config not in sami_objects(devswarm, stack, "config")
    cleanup = rec.messages("cleanup")
    assert any(f"removed secret {old_name} (db_password v1)" in m for m in cleanup), cleanup

    # A rollback deploys the versions of the deployment it goes back to: the old value.
    back = dataclasses.replace(first, deployment_id="dep-s4")
    result, _ = run(secret_executor, back)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert in_task(devswarm, stack, "cat /run/secrets/db_password", "first-password") == (
        "first-password"
    )
    assert old_name in sami_objects(devswarm, stack, "secret")


def test_a_secret_for_another_key_fails_in_the_plan_and_changes_nothing(
    devswarm: DevSwarm,
    images: Images,
    secret_executor: SwarmExecutor,
    key: AgentKey,
    stack: str,
    tmp_path: Path,
) -> None:
    good = secret_job(stack, images.v1, "dep-w1", key.recipient, b"good-password", 1)
    result, _ = run(secret_executor, good)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    before_spec = web_spec(devswarm, stack)
    before_secrets = sami_objects(devswarm, stack, "secret")
    before_configs = sami_objects(devswarm, stack, "config")

    other = generate_key_file(str(tmp_path / "other-key.txt"))
    wrong = secret_job(
        stack, images.v2, "dep-w2", other.recipient, b"new-password", 2, config=b"changed\n"
    )
    result, rec = run(secret_executor, wrong)

    assert result.outcome is Outcome.FAILED
    assert "secret db_password v2 cannot be decrypted" in result.reason
    assert key.recipient in result.reason and "sami secret rekey" in result.reason
    assert not rec.messages("apply")  # failed in the plan: nothing applied
    after_spec = web_spec(devswarm, stack)
    assert after_spec["Version"] == before_spec["Version"]
    assert after_spec["Spec"]["Labels"][LABEL_DEPLOYMENT] == "dep-w1"
    assert sami_objects(devswarm, stack, "secret") == before_secrets
    assert sami_objects(devswarm, stack, "config") == before_configs


def test_variables_fill_the_stack_and_an_undefined_one_fails_before_any_change(
    devswarm: DevSwarm,
    images: Images,
    secret_executor: SwarmExecutor,
    key: AgentKey,
    stack: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GREETING", "from-the-agent-environment")
    missing = secret_job(stack, images.v1, "dep-v0", key.recipient, b"pw", 1, variables={})
    result, rec = run(secret_executor, missing)
    assert result.outcome is Outcome.FAILED
    assert "stack.yml: undefined variable: GREETING" in result.reason
    assert rec.lines == []  # nothing was even looked at
    assert (
        devswarm.client().services.list(filters={"label": f"com.docker.stack.namespace={stack}"})
        == []
    )
    assert sami_objects(devswarm, stack, "secret") == {}

    job = secret_job(stack, images.v1, "dep-v1", key.recipient, b"pw", 1)
    result, _ = run(secret_executor, job)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    env = web_spec(devswarm, stack)["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert sorted(env) == ["GREETING=hello", "PRICE=costs $5"]


def test_no_secret_value_is_written_in_plain_text(
    devswarm: DevSwarm,
    images: Images,
    secret_executor: SwarmExecutor,
    key: AgentKey,
    stack: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = "canary-" + random_secrets.token_hex(8)
    written: list[str] = []
    original = swarm_apply.write_stack

    def write_and_look(plan: swarm_apply.StackPlan, folder: Path) -> list[Path]:
        files = original(plan, folder)
        for path in folder.rglob("*"):
            if path.is_file() and canary.encode() in path.read_bytes():
                written.append(str(path))
        written.append("looked")
        return files

    monkeypatch.setattr(swarm_apply, "write_stack", write_and_look)
    job = secret_job(stack, images.v1, "dep-p1", key.recipient, canary.encode(), 1)
    with structlog.testing.capture_logs() as logs:
        result, rec = run(secret_executor, job)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert in_task(devswarm, stack, "cat /run/secrets/db_password", canary) == canary
    assert written == ["looked"]  # the job's folder (what docker reads) holds no value
    assert canary not in repr(logs) and canary not in repr(rec.lines) + result.reason
    state = Path(key.path).parent
    for path in state.rglob("*"):
        assert not path.is_file() or canary.encode() not in path.read_bytes()


def test_the_plan_names_secret_versions_without_decrypting_or_creating_anything(
    devswarm: DevSwarm, images: Images, secret_executor: SwarmExecutor, key: AgentKey, stack: str
) -> None:
    job = secret_job(stack, images.v1, "dep-q1", key.recipient, b"pw-one", 1)
    result, _ = run(secret_executor, job)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    (running,) = sami_objects(devswarm, stack, "secret")
    configs = sami_objects(devswarm, stack, "config")

    # A plan carries the versions, never the ciphertexts.
    same = dataclasses.replace(job, deployment_id="plan", secret_payloads=())
    (web,) = secret_executor.stack_diff(same).services
    assert web.action == "unchanged", web

    newer = dataclasses.replace(same, secrets=(SecretRef("db_password", 2),))
    (web,) = secret_executor.stack_diff(newer).services
    assert web.action == "update"
    assert [(c.field, c.before, c.after) for c in web.changes] == [
        ("secrets", running, f"{stack}_db_password_v2")
    ]
    assert list(sami_objects(devswarm, stack, "secret")) == [running]  # nothing created
    assert sami_objects(devswarm, stack, "config") == configs

    with pytest.raises(QueryError) as caught:
        secret_executor.stack_diff(dataclasses.replace(same, variables={}))
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "undefined variable: GREETING" in str(caught.value)
