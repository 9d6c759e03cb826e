"""deploy/sami-stack.yml and deploy/sami-agent-stack.yml against the real engine of the
session's devswarm (tests/swarm/conftest.py; skipped without the engine packages, failing
when CI is set): `docker stack config` normalizes them, and `docker stack deploy` creates
the services on a real swarm, whose specs are then read back.

The Sami image cannot be built here (no base image can be pulled), so the deployed stack
runs a busybox stand-in of it: its `sami-control` checks what the real one would need (its
arguments, TLS secrets, the data volume) and leaves a note on the volume.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sami_dev.devswarm import DevSwarm

from . import deploy_files as df

STACK_NAME = "samitest"
SECRETS = ("sami-tls-cert", "sami-tls-key", "sami-ca", "sami-agent-token", "sami-agent-key")
VOLUME = "sami-control-data"

STAND_IN_CONTROL = """#!/bin/sh
# Stand-in for sami-control: check what the real one reads, then stay up.
note=/data/stand-in.txt
{
  echo "args: $*"
  echo "uid: $(id -u)"
  for f in /run/secrets/sami_tls_cert /run/secrets/sami_tls_key /run/secrets/sami_ca; do
    [ -r "$f" ] && echo "readable: $f $(cat "$f")"
  done
} > "$note"
trap 'exit 0' TERM INT
while :; do sleep 1; done
"""


def docker_cli_with_stack_config() -> str | None:
    """A docker CLI that has `docker stack config` (added in 20.10.? of the CLI; Debian's
    20.10 package lacks it), or None."""
    for candidate in (shutil.which("docker"), "/usr/local/bin/docker", "/usr/bin/docker"):
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "stack", "config", "--help"], capture_output=True, text=True
        )
        if probe.returncode == 0 and "--compose-file" in probe.stdout:
            return candidate
    return None


def docker(
    devswarm: DevSwarm, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cli = shutil.which("docker") or "docker"
    proc = subprocess.run(
        [cli, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **devswarm.env, **(env or {})},
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc


def stack_variables(devswarm: DevSwarm, image: str = "") -> dict[str, str]:
    values = df.stack_env()
    if image:
        values["SAMI_IMAGE"] = image
    return {**values, **devswarm.env}


@pytest.mark.parametrize("path", [df.STACK, df.AGENT_STACK], ids=lambda p: p.name)
def test_stack_config_of_the_real_cli(devswarm: DevSwarm, path: Path) -> None:
    cli = docker_cli_with_stack_config()
    if cli is None:
        pytest.skip("no docker CLI here has `docker stack config` (the deploy test still runs)")
    env = {**os.environ, **stack_variables(devswarm)}
    proc = subprocess.run(
        [cli, "stack", "config", "-c", str(path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    agent = config["services"]["agent"]
    assert agent["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert {"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"} in (
        agent["volumes"]
    )
    token = next(s for s in agent["secrets"] if s["source"] == "sami_agent_token")
    assert config["secrets"]["sami_agent_token"] == {"name": "sami-agent-token", "external": True}
    assert agent["command"][agent["command"].index("--token-file") + 1] == (
        f"/run/secrets/{token['target']}"
    )
    # The agents' age key: one Swarm secret, readable by the agent's user only (the agent
    # refuses a key others may read).
    key = next(s for s in agent["secrets"] if s["source"] == "sami_agent_key")
    assert config["secrets"]["sami_agent_key"] == {"name": "sami-agent-key", "external": True}
    assert (key["uid"], key["mode"]) == ("10001", 0o400)
    assert agent["command"][agent["command"].index("--key-file") + 1] == (
        f"/run/secrets/{key['target']}"
    )
    assert agent["user"] == f"10001:{df.stack_env()['DOCKER_GID']}"
    assert agent["image"] == df.stack_env()["SAMI_IMAGE"]
    if path == df.STACK:
        control = config["services"]["control"]
        (mount,) = control["volumes"]
        assert (mount["type"], mount["target"]) == ("volume", "/data")
        assert config["volumes"][mount["source"]]["name"] == VOLUME

    # A variable left unset stops the deploy with the stack file's own message.
    missing = {k: v for k, v in env.items() if k != "SAMI_IMAGE"}
    refused = subprocess.run(
        [cli, "stack", "config", "-c", str(path)], capture_output=True, text=True, env=missing
    )
    assert refused.returncode != 0
    assert "set SAMI_IMAGE to the image built from deploy/Dockerfile" in refused.stderr


@pytest.fixture
def swarm_ready(devswarm: DevSwarm) -> Iterator[DevSwarm]:
    """The secrets and node label the bootstrap (docs/sami-on-swarm.md) creates; removed
    afterwards with the stack and its volume."""
    node = docker(devswarm, "node", "ls", "-q").stdout.split()[0]
    for name in SECRETS:
        subprocess.run(
            [shutil.which("docker") or "docker", "secret", "create", name, "-"],
            input=f"{name}-content\n",
            capture_output=True,
            text=True,
            env={**os.environ, **devswarm.env},
            check=True,
        )
    docker(devswarm, "node", "update", "--label-add", "sami.control=true", node)
    try:
        yield devswarm
    finally:
        docker(devswarm, "stack", "rm", STACK_NAME, check=False)
        deadline = time.monotonic() + 60
        ours = f"label=com.docker.stack.namespace={STACK_NAME}"
        while time.monotonic() < deadline:
            left = docker(devswarm, "ps", "-aq", "--filter", ours, check=False)
            services = docker(devswarm, "service", "ls", "-q", "--filter", ours, check=False)
            if not left.stdout.strip() and not services.stdout.strip():
                break
            time.sleep(0.5)
        docker(devswarm, "secret", "rm", *SECRETS, check=False)
        docker(devswarm, "node", "update", "--label-rm", "sami.control", node, check=False)
        docker(devswarm, "volume", "rm", VOLUME, check=False)


def spec(devswarm: DevSwarm, name: str) -> dict[str, Any]:
    return devswarm.client().services.get(f"{STACK_NAME}_{name}").attrs["Spec"]


def test_stack_deploys_on_a_real_swarm(swarm_ready: DevSwarm) -> None:
    devswarm = swarm_ready
    image, _ = devswarm.build_image(
        "sami-stand-in", "v1", {"usr/local/bin/sami-control": STAND_IN_CONTROL}
    )
    docker(devswarm, "stack", "deploy", "-c", str(df.STACK), STACK_NAME,
           env=stack_variables(devswarm, image))  # fmt: skip

    agent = spec(devswarm, "agent")
    task = agent["TaskTemplate"]
    assert agent["Mode"] == {"Global": {}}
    assert task["Placement"]["Constraints"] == ["node.role == manager"]
    container = task["ContainerSpec"]
    assert {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"} in (
        container["Mounts"]
    )
    secrets = {s["SecretName"]: s["File"] for s in container["Secrets"]}
    assert secrets["sami-agent-token"] == {
        "Name": "sami_agent_token",
        "UID": "10001",
        "GID": "10001",
        "Mode": 0o400,
    }
    assert secrets["sami-agent-key"] == {
        "Name": "sami_agent_key",
        "UID": "10001",
        "GID": "10001",
        "Mode": 0o400,
    }
    args = container["Args"]
    assert args[args.index("--token-file") + 1] == "/run/secrets/sami_agent_token"
    assert args[args.index("--key-file") + 1] == "/run/secrets/sami_agent_key"
    assert container["Hostname"] == "{{.Node.Hostname}}"
    assert container["User"] == f"10001:{df.stack_env()['DOCKER_GID']}"

    control = spec(devswarm, "control")
    container = control["TaskTemplate"]["ContainerSpec"]
    assert control["Mode"] == {"Replicated": {"Replicas": 1}}
    assert control["UpdateConfig"]["Order"] == "stop-first"
    assert control["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.labels.sami.control == true"
    ]
    (mount,) = container["Mounts"]
    assert (mount["Type"], mount["Source"], mount["Target"]) == ("volume", VOLUME, "/data")

    # The stand-in control plane runs, with its secrets and the volume.
    volume = devswarm.client().volumes
    deadline = time.monotonic() + 60
    note = None
    while time.monotonic() < deadline:
        try:
            note = Path(volume.get(VOLUME).attrs["Mountpoint"]) / "stand-in.txt"
            if note.exists() and "sami_ca" in note.read_text():
                break
        except Exception:  # the volume appears with the first task
            pass
        time.sleep(0.5)
    assert note is not None and note.exists(), "the control plane's task never ran"
    text = note.read_text()
    assert "args: serve --listen 0.0.0.0:7443 --data /data --tls-cert" in text
    assert "readable: /run/secrets/sami_tls_key sami-tls-key-content" in text
    assert "readable: /run/secrets/sami_ca sami-ca-content" in text
