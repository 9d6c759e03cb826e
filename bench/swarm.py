"""Figure 8: a one-service image update on a real swarm, through Sami and bare.

A private engine + swarm + registry (sami_dev.devswarm), two busybox images differing by
one file, `sami-control` and a real `sami-agent` (Swarm executor) as processes. Two services
with the same stack: Sami updates one (`sami deploy --wait`, the CLI as a process), the
docker CLI the other (`docker service update --image REF --detach=false`). Rounds alternate
v1 -> v2 -> v1 ... and which of the two goes first; both see the same change each round.
Needs root and the engine packages (scripts/install-engine.sh); skipped otherwise."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import PY, Row, Skipped, median, wait_for_text
from bench.control import CLUSTER, ControlPlane, deployments_repo
from bench.figures.shared import Ctx


def start_agent(
    cp: ControlPlane, swarm_env: dict[str, str], token: str, root: Path, agent_id: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A real sami-agent on the private swarm, connected to `cp` (logging to root/agent.log),
    once it is; and the environment the figure runs its commands with (the swarm's, none of
    the caller's SAMI_* or GITHUB_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMI_", "GITHUB_"))}
    env.update(swarm_env)
    agent_log = root / "agent.log"
    with open(agent_log, "ab") as log:
        agent = subprocess.Popen(
            [PY, "-m", "sami_agent", "--control", cp.addr, "--agent-id", agent_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "SAMI_TOKEN": token, "SAMI_LOG_FORMAT": "json"},
            start_new_session=True,
        )
    wait_for_text(agent_log, "control_plane_connected", 60)
    return agent, env


def stop_agent(agent: subprocess.Popen[bytes]) -> None:
    """Stop the agent start_agent started (by its pid), killing it if it lingers."""
    if agent.poll() is not None:
        return
    os.kill(agent.pid, signal.SIGTERM)
    try:
        agent.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(5)


# Like tests/swarm/test_swarm_executor.py's stack: no published port, a fast health check.
STACK = """\
version: "3.8"
services:
  web:
    image: example.invalid/replaced-by-sami:latest
    healthcheck:
      test: ["CMD", "test", "-f", "/app/healthy"]
      interval: 1s
      timeout: 1s
      retries: 2
    stop_grace_period: 2s
    deploy:
      replicas: 2
      update_config:
        parallelism: 1
        delay: 0s
        failure_action: rollback
        monitor: 2s
        order: start-first
      rollback_config:
        parallelism: 0
        monitor: 1s
      restart_policy:
        condition: any
        delay: 1s
"""
MANIFEST = """\
version: v1beta
service_name: {service}
type: swarm
stack_files: [stack.yml]
image_services: [web]
converge_timeout: 120s
"""
SAMI_SERVICE = "sami-web"
BARE_SERVICE = "bare-web"
DEPLOY_TIMEOUT = 180.0


def _run(argv: list[str], env: dict[str, str], timeout: float = DEPLOY_TIMEOUT) -> float:
    """Run to completion; the wall time in seconds. Fails on a non-zero exit."""
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... exited {p.returncode}:\n{p.stdout[-800:]}{p.stderr[-800:]}"
        )
    return elapsed


def fig_swarm(ctx: Ctx) -> list[Row]:
    try:
        from sami_dev.devswarm import DevSwarm, missing_requirements
    except ImportError as exc:  # the docker SDK is a Sami dependency; be safe anyway
        raise Skipped(f"sami_dev.devswarm unavailable: {exc}") from None
    missing = missing_requirements()
    if missing:
        raise Skipped(f"DevSwarm needs {', '.join(missing)} (scripts/install-engine.sh, root)")
    if shutil.which("docker") is None:
        raise Skipped("the docker CLI is not installed")

    rounds = ctx.params.swarm_rounds
    # A short path: the engine's unix sockets live under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="sami-bsw-", dir="/tmp"))
    swarm = DevSwarm(root / "swarm", progress=ctx.say)
    cp: ControlPlane | None = None
    agent: subprocess.Popen[bytes] | None = None
    try:
        swarm.start()
        ctx.say("swarm: building and pushing two images")
        v1, _ = swarm.build_image("bench", "v1", {"app/version": "1\n", "app/healthy": "ok\n"})
        v2, _ = swarm.build_image("bench", "v2", {"app/version": "2\n", "app/healthy": "ok\n"})

        cp = ControlPlane(root / "control")
        cp.create_cluster()
        admin = cp.token("admin", name="bench-admin")
        agent_token = cp.token("agent", cluster=CLUSTER, name="bench-swarm-agent")
        cp.start()
        cp.sync_manifests(
            admin,
            deployments_repo([SAMI_SERVICE, BARE_SERVICE], stack=STACK, manifest=MANIFEST),
        )
        for ref in (v1, v2):
            cp.register_artifact(admin, "bench", ref)

        agent, env = start_agent(cp, swarm.env, agent_token, root, "bench-swarm")

        cli_env = {**env, "SAMI_ADDR": cp.addr, "SAMI_TOKEN": admin}

        def sami_deploy(service: str, ref: str) -> float:
            return _run(
                [
                    PY,
                    "-m",
                    "sami_client",
                    "deploy",
                    service,
                    "--env",
                    "stage",
                    "--artifact",
                    ref,
                    "--wait",
                    "--timeout",
                    str(int(DEPLOY_TIMEOUT)),
                ],
                cli_env,
                DEPLOY_TIMEOUT + 30,
            )

        ctx.say("swarm: first deployment of both services (v1)")
        sami_deploy(SAMI_SERVICE, v1)
        sami_deploy(BARE_SERVICE, v1)
        names = subprocess.run(
            ["docker", "service", "ls", "--format", "{{.Name}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        bare = next(n for n in names if n.endswith(f"{BARE_SERVICE}_web"))

        def docker_update(ref: str) -> float:
            return _run(
                ["docker", "service", "update", "--quiet", "--detach=false", "--image", ref, bare],
                env,
            )

        # What the CLI's start-up alone costs (a Python process importing grpc).
        cli_start = min(_run([PY, "-m", "sami_client", "--help"], cli_env, 60) for _ in range(3))
        sami_times: list[float] = []
        docker_times: list[float] = []
        for i in range(rounds):
            ref = v2 if i % 2 == 0 else v1
            first_sami = i % 2 == 0
            for which in ("sami", "docker") if first_sami else ("docker", "sami"):
                if which == "sami":
                    sami_times.append(sami_deploy(SAMI_SERVICE, ref))
                else:
                    docker_times.append(docker_update(ref))
            ctx.say(
                f"swarm: round {i + 1}/{rounds}: sami {sami_times[-1]:.2f} s, "
                f"docker {docker_times[-1]:.2f} s"
            )
    finally:
        if agent is not None:
            stop_agent(agent)
        if cp is not None:
            cp.stop()
        swarm.stop()
        shutil.rmtree(root, ignore_errors=True)

    s_med, d_med = median(sami_times), median(docker_times)
    ratio = s_med / d_med if d_med else None
    extra = {
        "sami_s": sami_times,
        "docker_s": docker_times,
        "rounds": rounds,
        "sami_cli_startup_s": cli_start,
    }
    return [
        Row(
            "8",
            f"swarm update: sami deploy --wait, median of {rounds}",
            s_med,
            "s",
            "≤ 1.10 x docker",
            ratio,
            None if ratio is None else ratio <= 1.10,
            note=f"includes the sami CLI's start-up ({cli_start:.2f} s for `sami --help`)",
            extra=extra,
        ),
        Row(
            "8",
            f"swarm update: docker service update --detach=false, median of {rounds}",
            d_med,
            "s",
            note="the baseline",
        ),
    ]
