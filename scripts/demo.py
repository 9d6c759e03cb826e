"""`make run`: the whole of Sami on this machine, and one deployment through it.

Starts sami-control (embedded SQLite in .sami-demo/), creates a cluster and tokens, starts a
sami-agent, syncs examples/demo, registers an artifact and deploys it with `sami deploy
--wait`, the way a CI job would. With a Docker engine available (scripts/install-engine.sh,
as root) the agent deploys on a real, private, local swarm with a locally built image;
otherwise it runs with --dry-run and says so. Then it keeps running for you to try the CLI
(Ctrl-C stops everything it started), or exits with --once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sami_manifests import ENVIRONMENTS

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# sami_dev (the local swarm) is not installed with Sami: it is imported from this checkout.
sys.path.insert(0, str(ROOT))


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port() -> int:
    if port_free(7443):
        return 7443
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline(data: Path, *args: str) -> str:
    out = subprocess.run(
        [PY, "-m", "sami_control", *args, "--data", str(data)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def sami(
    env: dict[str, str], *args: str, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "sami_client", *args], env=env, text=True, capture_output=capture
    )


def wait_ready(addr: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sami-control exited:\n{log.read_text()}")
        try:
            with grpc.insecure_channel(addr) as ch:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
        except grpc.RpcError:
            time.sleep(0.2)
    sys.exit(f"sami-control did not become ready:\n{log.read_text()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--once", action="store_true", help="exit after the demo deployment")
    p.add_argument(
        "--engine",
        choices=["auto", "swarm", "dry-run"],
        default="auto",
        help="swarm: a private local engine (needs root and the engine packages)",
    )
    p.add_argument("--data", default=str(ROOT / ".sami-demo"))
    args = p.parse_args()

    data = Path(args.data)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    swarm = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["SAMI_LOG_FORMAT"] = "console"

    engine = args.engine
    if engine != "dry-run":
        from sami_dev.devswarm import DevSwarm, missing_requirements

        missing = missing_requirements()
        if missing or os.geteuid() != 0:
            why = ", ".join(missing) if missing else "not running as root"
            if engine == "swarm":
                sys.exit(
                    f"cannot start a local swarm: {why}. Run `sudo bash "
                    "scripts/install-engine.sh`, then `make run` as root"
                )
            say(
                f"No local Docker engine ({why}): the agent runs with --dry-run. "
                "For a real swarm: sudo bash scripts/install-engine.sh, then make run as root"
            )
            engine = "dry-run"
        else:
            engine = "swarm"
    try:
        ref = "127.0.0.1:5000/hello@sha256:" + "0" * 63 + "1"
        agent_env = dict(env)
        if engine == "swarm":
            say("Starting a private Docker engine, a one-node swarm and a registry")
            swarm = DevSwarm(data / "swarm", progress=lambda line: print(f"   {line}", flush=True))
            swarm.start()
            agent_env.update(swarm.env)
            say("Building the demo image (busybox httpd) and pushing it to the local registry")
            ref, _ = swarm.build_image(
                "hello",
                "v1",
                {"www/index.html": "<h1>Hello from Sami</h1>\n"},
                cmd=["httpd", "-f", "-p", "8080", "-h", "/www"],
            )
            print(f"   {ref}")

        say("Creating a cluster that serves every environment, and tokens")
        control_data = data / "control"
        print(
            "   "
            + offline(
                control_data,
                "cluster",
                "create",
                "local",
                *(arg for env in ENVIRONMENTS for arg in ("--env", env)),
            )
        )
        admin = offline(control_data, "token", "create", "--role", "admin", "--name", "demo")
        agent_token = offline(
            control_data,
            "token",
            "create",
            "--role",
            "agent",
            "--cluster",
            "local",
            "--name",
            "demo-agent",
        )

        port = pick_port()
        addr = f"127.0.0.1:{port}"
        say(f"Starting sami-control on {addr} (data in {control_data})")
        log = data / "control.log"
        procs.append(
            subprocess.Popen(
                [PY, "-m", "sami_control", "serve", "--listen", addr, "--data", str(control_data)],
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        wait_ready(addr, procs[-1], log)

        say(f"Starting sami-agent ({'real swarm' if engine == 'swarm' else 'dry run'})")
        agent_env["SAMI_TOKEN"] = agent_token
        agent_log = data / "agent.log"
        procs.append(
            subprocess.Popen(
                [
                    PY,
                    "-m",
                    "sami_agent",
                    "--control",
                    addr,
                    "--agent-id",
                    "demo-agent",
                    # The key that opens the demo cluster's secrets stays with the demo's
                    # data (the default is the host's /var/lib/sami-agent).
                    "--key-file",
                    str(data / "agent-key" / "age-key.txt"),
                    *(["--dry-run"] if engine == "dry-run" else []),
                ],
                stdout=agent_log.open("wb"),
                stderr=subprocess.STDOUT,
                env=agent_env,
            )
        )

        cli_env = dict(env, SAMI_ADDR=addr, SAMI_TOKEN=admin)
        say("sami manifests sync examples/demo")
        if sami(cli_env, "manifests", "sync", str(ROOT / "examples" / "demo")).returncode:
            return 1
        say(f"sami artifact register hello --ref {ref}")
        if sami(cli_env, "artifact", "register", "hello", "--ref", ref).returncode:
            return 1
        say(f"sami deploy hello --env stage --artifact {ref} --wait")
        rc = sami(
            cli_env,
            "deploy",
            "hello",
            "--env",
            "stage",
            "--artifact",
            ref,
            "--wait",
            "--timeout",
            "300",
            "--reason",
            "make run",
        ).returncode
        if rc != 0:
            say(f"The demo deployment did not succeed (exit {rc}); logs: {log}, {agent_log}")
            return rc
        say("Sami is running. In another terminal:")
        print(f"   export SAMI_ADDR={addr} SAMI_TOKEN={admin}")
        print("   .venv/bin/sami list          # deployments, newest first")
        print("   .venv/bin/sami agents        # connected agents")
        if swarm is not None:
            print(f"   DOCKER_HOST={swarm.docker_host} docker service ls")
        if args.once:
            return 0
        print("\nCtrl-C stops everything the demo started.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if swarm is not None:
            swarm.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
