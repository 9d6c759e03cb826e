"""Figure 16: from a manual change on a real swarm to the drift visible in GetStatus.

A private engine + swarm + registry (sami_dev.devswarm), two busybox images, `sami-control`
and a real `sami-agent` (Swarm executor) as processes. Sami deploys v1; then each round runs
`docker service update --detach --image` by hand, alternately to v2 (drift: another
digest) and back to v1 (healed), and polls GetStatus every 20 ms until the row says so.
The time is measured from the start of the docker command (its own start-up included) and
from its return. Goal (issue 17): p99 ≤ 2 s. Needs root and the engine packages
(scripts/install-engine.sh); skipped otherwise. Run it on its own:
`python -m bench --only drift`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from bench.common import PY, Row, Skipped, median, percentile
from bench.control import CLUSTER, ControlPlane, deployments_repo
from bench.figures.shared import Ctx
from bench.swarm import MANIFEST, STACK, _run, start_agent, stop_agent
from sami.v1 import status_pb2, status_pb2_grpc

SERVICE = "drift-web"
POLL = 0.02
GIVE_UP = 60.0


def fig_drift(ctx: Ctx) -> list[Row]:
    try:
        from sami_dev.devswarm import DevSwarm, missing_requirements
    except ImportError as exc:
        raise Skipped(f"sami_dev.devswarm unavailable: {exc}") from None
    missing = missing_requirements()
    if missing:
        raise Skipped(f"DevSwarm needs {', '.join(missing)} (scripts/install-engine.sh, root)")
    if shutil.which("docker") is None:
        raise Skipped("the docker CLI is not installed")

    rounds = ctx.params.drift_rounds
    root = Path(tempfile.mkdtemp(prefix="sami-bdr-", dir="/tmp"))
    swarm = DevSwarm(root / "swarm", progress=ctx.say)
    cp: ControlPlane | None = None
    agent: subprocess.Popen[bytes] | None = None
    from_start: list[float] = []
    from_return: list[float] = []
    try:
        swarm.start()
        ctx.say("drift: building and pushing two images")
        v1, _ = swarm.build_image("bench", "v1", {"app/version": "1\n", "app/healthy": "ok\n"})
        v2, _ = swarm.build_image("bench", "v2", {"app/version": "2\n", "app/healthy": "ok\n"})
        cp = ControlPlane(root / "control")
        cp.create_cluster()
        admin = cp.token("admin", name="bench-admin")
        agent_token = cp.token("agent", cluster=CLUSTER, name="bench-drift-agent")
        cp.start()
        cp.sync_manifests(admin, deployments_repo([SERVICE], stack=STACK, manifest=MANIFEST))
        cp.register_artifact(admin, "bench", v1)

        agent, env = start_agent(cp, swarm.env, agent_token, root, "bench-drift")
        cli_env = {**env, "SAMI_ADDR": cp.addr, "SAMI_TOKEN": admin}
        _run(
            [PY, "-m", "sami_client", "deploy", SERVICE, "--env", "stage", "--artifact", v1,
             "--wait", "--timeout", "180"],
            cli_env,
            210,
        )  # fmt: skip
        swarm_name = f"stage_{SERVICE}_web"
        channel = grpc.insecure_channel(cp.addr)
        stub = status_pb2_grpc.StatusServiceStub(channel)
        md = (("authorization", f"Bearer {admin}"),)

        def drifted() -> bool | None:
            rows = stub.GetStatus(
                status_pb2.GetStatusRequest(service=SERVICE), metadata=md, timeout=5
            ).services
            return rows[0].drifted if rows else None

        deadline = time.monotonic() + 60
        while drifted() is not False:
            if time.monotonic() > deadline:
                raise RuntimeError("the agent's live status never arrived")
            time.sleep(0.2)
        for i in range(rounds):
            ref, want = (v2, True) if i % 2 == 0 else (v1, False)
            start = time.monotonic()
            _run(["docker", "service", "update", "--detach", "--quiet", "--image", ref,
                  swarm_name], env, 60)  # fmt: skip
            returned = time.monotonic()
            while drifted() is not want:
                if time.monotonic() - start > GIVE_UP:
                    raise RuntimeError(f"round {i + 1}: drift={want} not seen in {GIVE_UP} s")
                time.sleep(POLL)
            seen = time.monotonic()
            from_start.append(seen - start)
            from_return.append(seen - returned)
            ctx.say(
                f"drift: round {i + 1}/{rounds} ({'drift' if want else 'healed'}): "
                f"{from_start[-1]:.2f} s from the command, {from_return[-1]:.2f} s after it"
            )
        channel.close()
    finally:
        if agent is not None:
            stop_agent(agent)
        if cp is not None:
            cp.stop()
        swarm.stop()
        shutil.rmtree(root, ignore_errors=True)

    p99 = percentile(from_start, 99)
    extra = {"from_command_start_s": from_start, "from_command_return_s": from_return}
    return [
        Row(
            "16",
            f"manual docker service update -> drift visible (GetStatus), p99 of {rounds}",
            p99,
            "s",
            "≤ 2 s",
            None,
            p99 <= 2.0,
            note=f"median {median(from_start):.2f} s; from the command's return: median "
            f"{median(from_return):.2f} s, p99 {percentile(from_return, 99):.2f} s",
            extra=extra,
        )
    ]
