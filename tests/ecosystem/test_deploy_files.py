"""deploy/: the Dockerfile, checked statically (no base image can be pulled here, so it is
not built), its HEALTHCHECK command run against a live control plane, and the stack files
read as YAML. tests/ecosystem/test_stack_swarm.py gives the stack files to a real engine."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sami_agent import cli as agent_cli
from sami_control import cli as control_cli
from sami_control.core.settings import Settings
from sami_control.server import ControlServer, ServeConfig
from tests.control.conftest import LiveServer
from tests.harness import free_port

from . import deploy_files as df
from .gha import REPO

FINAL = df.stages()[-1]


def final(keyword: str) -> list[df.Instruction]:
    return [i for i in FINAL.instructions if i.keyword == keyword]


# -- Dockerfile ------------------------------------------------------------------------------


def test_bases() -> None:
    stages = df.stages()
    assert FINAL.base == "python:3.11-slim"
    assert FINAL.name == ""
    for stage in stages:
        # Every base is pinned to a version, none is `latest`.
        assert ":" in stage.base and not stage.base.endswith(":latest"), stage.base
    names = {s.name for s in stages if s.name}
    for ins in FINAL.instructions:
        for ref in re.findall(r"--from=([\w.-]+)", ins.args):
            assert ref in names, f"line {ins.line}: --from={ref} is no stage"


def test_runs_as_a_non_root_user() -> None:
    (user,) = final("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root uid (runAsNonRoot checks it)"
    assert gid.isdigit() and int(gid) != 0
    run = " ".join(i.args for i in final("RUN"))
    assert f"--uid {uid}" in run and f"--gid {gid}" in run, "the user is created in the image"
    # The stack file's secrets are given to that user.
    stack = df.load_stack()
    for service in stack["services"].values():
        for secret in service.get("secrets", []):
            if isinstance(secret, dict) and "uid" in secret:
                assert (secret["uid"], secret["gid"]) == (uid, gid)
        if "user" in service:
            assert service["user"].split(":")[0] == uid


def test_copies_every_package_and_installs_them() -> None:
    """Every package pyproject ships is copied into the build, so a new one is not
    forgotten; every COPY source exists."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = {
        p.rstrip("*").rstrip(".")
        for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set()
    for stage in df.stages():
        for ins in stage.instructions:
            if ins.keyword == "COPY" and "--from" not in ins.args:
                *sources, _ = ins.args.split()
                for source in sources:
                    assert (REPO / source).exists(), f"line {ins.line}: COPY {source}: missing"
                    copied.add(source)
    assert wanted <= copied, f"not copied: {wanted - copied}"
    # The context holds only what is copied (deploy/Dockerfile.dockerignore lets it in).
    ignore = (df.DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :].count("*") == 1
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {c.rstrip("/") for c in copied} == allowed
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    run = " ".join(i.args for i in final("RUN"))
    assert "pip install" in run and "--no-index" in run


def test_default_command_and_entrypoints_are_console_scripts() -> None:
    scripts = df.console_scripts()
    assert {"sami", "sami-control", "sami-agent"} <= set(scripts)
    assert final("ENTRYPOINT") == [], "no ENTRYPOINT: the command picks the program"
    (cmd,) = final("CMD")
    argv = df.exec_form(cmd.args)
    assert argv[0] in scripts
    # What the default command runs parses with sami-control's own parser.
    args = control_cli._parser().parse_args(argv[1:])
    assert (args.command, args.listen, args.data) == ("serve", "0.0.0.0:7443", "/data")
    env = " ".join(i.args for i in final("ENV"))
    assert "SAMI_DATA=/data" in env


def healthcheck() -> tuple[str, list[str]]:
    (check,) = final("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    return options, df.exec_form(command)


def test_healthcheck_is_a_grpc_health_one_liner() -> None:
    options, argv = healthcheck()
    assert "--interval=" in options and "--timeout=" in options
    assert argv[:2] == ["python", "-c"] and len(argv) == 3
    assert "HealthStub" in argv[2] and "\n" not in argv[2]


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    _, argv = healthcheck()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    return subprocess.run(
        [sys.executable, *argv[1:]],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


def test_healthcheck_passes_on_a_serving_control_plane(live_server: LiveServer) -> None:
    ok = run_healthcheck({"SAMI_HEALTH_ADDR": live_server.addr})
    assert ok.returncode == 0, ok.stderr
    down = run_healthcheck({"SAMI_HEALTH_ADDR": f"127.0.0.1:{free_port()}"})
    assert down.returncode != 0


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The control plane with TLS (certificates from `sami-control tls init`), in a thread."""
    tlsinit = pytest.importorskip("sami_control.tlsinit")
    made = tlsinit.init(tmp_path / "tls", [], [], [])
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        srv = ControlServer(
            ServeConfig(
                listen=f"127.0.0.1:{port}",
                data_dir=tmp_path / "data",
                settings=Settings(),
                grace=0.5,
                tls_cert=made.server_cert,
                tls_key=made.server_key,
            )
        )
        await srv.start()
        ready.set()
        await stop.wait()
        await srv.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20), "server did not start"
    try:
        yield f"127.0.0.1:{port}", made.ca_cert
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_healthcheck_speaks_tls_with_sami_ca(tls_server: tuple[str, Path]) -> None:
    """As in the stack: SAMI_CA set, the server's certificate valid for 127.0.0.1."""
    addr, ca = tls_server
    ok = run_healthcheck({"SAMI_HEALTH_ADDR": addr, "SAMI_CA": str(ca)})
    assert ok.returncode == 0, ok.stderr
    assert run_healthcheck({"SAMI_HEALTH_ADDR": addr}).returncode != 0


# -- stack files -----------------------------------------------------------------------------


def service(name: str, path: Path = df.STACK) -> dict[str, Any]:
    return df.load_stack(path)["services"][name]


def secret_file(svc: dict[str, Any], name: str) -> str:
    """Where a service's secret is mounted, for the secret whose external name is `name`."""
    stack_secrets = df.load_stack()["secrets"]
    for entry in svc.get("secrets", []):
        source = entry["source"] if isinstance(entry, dict) else entry
        target = entry.get("target", source) if isinstance(entry, dict) else entry
        if stack_secrets[source].get("name", source) == name:
            assert stack_secrets[source].get("external") is True
            return target if target.startswith("/") else f"/run/secrets/{target}"
    raise AssertionError(f"no secret {name}")


def test_control_plane_service() -> None:
    control = service("control")
    args = control_cli._parser().parse_args(control["command"][1:])
    assert control["command"][0] in df.console_scripts()
    assert args.command == "serve" and args.listen == "0.0.0.0:7443"
    # Listening beyond loopback only behind TLS, with the certificate from secrets.
    assert args.tls_cert == secret_file(control, "sami-tls-cert")
    assert args.tls_key == secret_file(control, "sami-tls-key")
    assert not args.insecure
    # Its data on a named volume, one replica pinned to the node that holds it, never two
    # at once on the SQLite file.
    (mount,) = control["volumes"]
    assert mount["type"] == "volume" and mount["target"] == args.data == "/data"
    assert df.load_stack()["volumes"][mount["source"]]["name"] == "sami-control-data"
    deploy = control["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["update_config"]["order"] == "stop-first"
    assert deploy["placement"]["constraints"] == ["node.labels.sami.control == true"]
    assert control["environment"]["SAMI_CA"] == secret_file(control, "sami-ca")
    assert [p["target"] for p in control["ports"]] == [7443]


@pytest.mark.parametrize("path", [df.STACK, df.AGENT_STACK], ids=lambda p: p.name)
def test_agent_service(path: Path) -> None:
    agent = service("agent", path)
    assert agent["command"][0] in df.console_scripts()
    args = agent_cli.parse_args(agent["command"][1:])
    assert agent["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert agent["deploy"]["mode"] == "global"  # one agent per manager
    assert {"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"} in (
        agent["volumes"]
    )
    stack_secrets = df.load_stack(path)["secrets"]
    targets = {
        stack_secrets[e["source"]]["name"]: f"/run/secrets/{e['target']}" for e in agent["secrets"]
    }
    assert args.token_file == targets["sami-agent-token"]
    assert args.ca == targets["sami-ca"]
    # Its age key from a Swarm secret, not a file made in the container (lost on restart).
    assert args.key_file == targets["sami-agent-key"]
    key = next(e for e in agent["secrets"] if e["source"] == "sami_agent_key")
    assert key["mode"] == 0o400 and key["uid"] == "10001"
    assert "SAMI_TOKEN" not in agent.get("environment", {})
    assert agent["hostname"] == "{{.Node.Hostname}}", "a stable agent id across restarts"
    assert agent["healthcheck"] == {"disable": True}
    assert agent["user"].startswith("10001:")


@pytest.mark.parametrize("path", [df.STACK, df.AGENT_STACK], ids=lambda p: p.name)
def test_the_env_example_sets_every_variable(path: Path) -> None:
    assert df.variables(path) <= set(df.stack_env()), path.name
