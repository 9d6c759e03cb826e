"""The agent's own secrets stay out of the docker CLI's environment (issue 15.9): `docker
stack deploy` (and whatever plugin or wrapper `docker` is on the host) ran with everything
the agent had, SAMI_TOKEN included."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sami_agent.executor import Job
from sami_agent.executors import swarm_apply

DIGEST = "sha256:" + "ab" * 32
TOKEN = "sami_abcdef_" + "s" * 43


def fake_docker(folder: Path, record: Path) -> None:
    """A `docker` that writes its environment to `record`, one NAME=value a line."""
    folder.mkdir()
    script = folder / "docker"
    script.write_text(f"#!/bin/sh\nenv > '{record}'\necho 'Creating service web_web'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def recorded(record: Path) -> dict[str, str]:
    lines = record.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def a_plan() -> swarm_apply.StackPlan:
    return swarm_apply.plan(
        Job(
            deployment_id="dep-1",
            service="web",
            environment="stage",
            pull_request=0,
            deployment_type="swarm",
            stack_name="stage_web",
            artifact_name="web",
            artifact_ref="registry.example:5000/web",
            artifact_digest=DIGEST,
            attempt=1,
            converge_timeout=60.0,
            files={"stack.yml": b"services:\n  web:\n    image: app\n"},
            stack_files=("stack.yml",),
            image_services=("web",),
        )
    )


def test_stack_deploy_hands_docker_no_sami_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "env.txt"
    fake_docker(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SAMI_TOKEN", TOKEN)
    monkeypatch.setenv("SAMI_CLIENT_KEY", "/etc/sami/agent-key.pem")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    reports: list[tuple[str, str]] = []

    swarm_apply.stack_deploy(
        a_plan(), lambda phase, message: reports.append((phase, message)), env={"DOCKER_TLS": "1"}
    )

    env = recorded(record)
    assert TOKEN not in record.read_text()
    assert not [name for name in env if name.startswith("SAMI_")]
    assert "AWS_SECRET_ACCESS_KEY" not in env
    # What the CLI needs to find itself, its config, the engine and the registries.
    assert env["PATH"].startswith(str(tmp_path / "bin"))
    assert env["HOME"] == os.environ["HOME"]
    assert env["DOCKER_HOST"] == "unix:///run/user/1000/docker.sock"
    assert env["DOCKER_CONFIG"] == str(tmp_path / "docker-config")
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert env["DOCKER_TLS"] == "1"  # the executor's docker_env, set by the operator
    assert ("apply", "Creating service web_web") in reports


def test_docker_cli_env_keeps_only_what_the_cli_needs() -> None:
    agent = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "DOCKER_CERT_PATH": "/certs",
        "SAMI_TOKEN": TOKEN,
        "SAMI_CONTROL": "sami.example:7443",
        "PYTHONPATH": "/opt/sami",
        "GITHUB_TOKEN": "ghp_x",
    }
    env = swarm_apply.docker_cli_env({"DOCKER_HOST": "tcp://10.0.0.1:2376"}, agent)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "DOCKER_CERT_PATH": "/certs",
        "DOCKER_HOST": "tcp://10.0.0.1:2376",
    }
