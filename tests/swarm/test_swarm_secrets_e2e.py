"""Secrets and variables end to end on the real swarm: `sami secret set` encrypts on the
client to the key the real agent registered, the control plane stores ciphertext, the
agent opens it and creates a Swarm secret named by content, the task reads it at
/run/secrets/NAME; a new value rolls out and the old version is removed; a rollback brings
the old value back; `${VAR}` is filled from `sami var set`. The values are never found in
the control plane's data folder or in any answer."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sami_dev.devswarm import DevSwarm
from tests.harness import PY, Result, base_env, wait_for
from tests.swarm.conftest import Images
from tests.swarm.test_swarm_e2e import MANIFEST, Sami, running

pytestmark = pytest.mark.timeout(400)

SERVICE = "vault"
STACK = """\
version: "3.8"
services:
  web:
    image: example.invalid/replaced-by-sami:latest
    environment:
      GREETING: ${GREETING}
      LITERAL: "$$HOME"
    secrets: [db_password]
    healthcheck:
      test: ["CMD", "test", "-f", "/app/healthy"]
      interval: 1s
      timeout: 10s
      retries: 3
    stop_grace_period: 2s
    deploy:
      replicas: 1
      update_config:
        failure_action: rollback
        monitor: 2s
        order: stop-first
secrets:
  db_password:
    external: true
"""


@pytest.fixture
def live(tmp_path: Path, devswarm: DevSwarm) -> Iterator[Sami]:
    folder = f"services/{SERVICE}/swarm/stage"
    files = {
        f"{folder}/sami.yaml": MANIFEST.format(service=SERVICE, extra="").encode(),
        f"{folder}/stack.yml": STACK.encode(),
    }
    with running(tmp_path, devswarm, files) as s:
        yield s


def _with_stdin(live: Sami, stdin: str, *args: str) -> Result:
    env = base_env(SAMI_ADDR=live.control.addr, SAMI_TOKEN=live.admin)
    p = subprocess.run(
        [PY, "-m", "sami_client", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def _in_task(devswarm: DevSwarm, *cmd: str) -> str:
    client = devswarm.client()
    containers = client.containers.list(
        filters={"label": f"com.docker.swarm.service.name=stage_{SERVICE}_web"}
    )
    assert len(containers) == 1, [c.name for c in containers]
    code, out = containers[0].exec_run(list(cmd))
    assert code == 0, out
    return out.decode()


def _sami_secrets(devswarm: DevSwarm) -> list[str]:
    return sorted(
        s.name
        for s in devswarm.client().secrets.list()
        if s.name.startswith(f"stage_{SERVICE}_db_password_")
    )


def _everything_in(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_secret_and_variable_roll_out_rotate_and_roll_back(live: Sami, images: Images) -> None:
    key = live.tmp / "agent-key" / "age.key"
    live.agent("m1", "--key-file", str(key))
    wait_for(lambda: key.exists(), what="the agent's key file")
    wait_for(
        lambda: "age1" in live.sami("cluster", "recipients", "local").out,
        what="the agent's recipient registered",
    )
    first_value = f"first-{uuid.uuid4().hex}"
    second_value = f"second-{uuid.uuid4().hex}"
    r = _with_stdin(live, first_value, "secret", "set", SERVICE, "db_password", "--env", "stage")
    assert r.rc == 0, r.out + r.err
    assert live.sami("var", "set", SERVICE, "GREETING=hello", "--env", "stage").rc == 0

    v1 = live.register(SERVICE, images.v1)
    first = live.deploy_wait(SERVICE, "stage", v1)
    assert first.rc == 0, first.out + first.err
    assert _in_task(live.devswarm, "cat", "/run/secrets/db_password") == first_value
    env = _in_task(live.devswarm, "env")
    assert "GREETING=hello" in env
    # `$$` is compose's escape for a literal dollar: neither Sami nor docker filled it.
    assert "LITERAL=$HOME" in env
    (first_secret,) = _sami_secrets(live.devswarm)

    r = _with_stdin(live, second_value, "secret", "set", SERVICE, "db_password", "--env", "stage")
    assert r.rc == 0, r.out + r.err
    v2 = live.register(SERVICE, images.v2)
    second = live.deploy_wait(SERVICE, "stage", v2)
    assert second.rc == 0, second.out + second.err
    assert _in_task(live.devswarm, "cat", "/run/secrets/db_password") == second_value

    history = json.loads(live.sami("history", SERVICE, "--env", "stage", "-o", "json").out)
    first_dep = history[-1]["id"]
    back = live.sami(
        "rollback", SERVICE, "--env", "stage", "--to", first_dep, "--wait", "--timeout", "180"
    )
    assert back.rc == 0, back.out + back.err
    # The rollback used the versions of the deployment it went back to: the same Swarm
    # secret (named by content) as the first deployment. The second value's secret stays
    # while Swarm's rollback spec names it.
    assert _in_task(live.devswarm, "cat", "/run/secrets/db_password") == first_value
    secrets_now = _sami_secrets(live.devswarm)
    assert len(secrets_now) == 2 and first_secret in secrets_now, secrets_now

    # Ciphertext only: in the control plane's data folder, its log and the agent's (all in
    # the test's folder) and in what it answers.
    stored = _everything_in(live.tmp)
    answers = "".join(
        live.sami(*args).out
        for args in (
            ("secret", "list", "-o", "json"),
            ("history", SERVICE, "--env", "stage", "-o", "json"),
            ("audit",),
        )
    )
    for value in (first_value, second_value):
        assert value.encode() not in stored
        assert value not in answers
