"""Figure 18: `sami logs` (agent → sami-control → CLI) next to `docker service logs`, on the
same service of the same engine (issue 17, item 6).

A private engine + swarm + registry (sami_dev.devswarm), `sami-control` and a real
`sami-agent` (Swarm executor) as processes, as figures 8 and 16. Sami deploys a one-task
service that prints `logs_lines` lines of about 110 bytes (a structured access log) and
then sleeps. Each round runs, alternating which goes first,

    sami logs loud --env stage --tail N          (the CLI as a process, as a user runs it)
    docker service logs --timestamps --tail N stage_loud_web   (the same `TIME TASK | TEXT`)

for N = 1 (what each command's start-up costs: processes, connections, the first answer)
and for each N of `logs_tails`, output to a file. Lines/s is shown raw (N / wall time) and
with the start-up taken off ((N - 1) / (median time at N - median time at 1), per task),
which is the stream's own rate.

The control plane runs first with `--query-lines-per-second 0` (no rate bound: what the
relay itself costs), then again, the agent reconnecting, with its default bound (2,000
lines/s per stream, one second of burst), for the largest N only.

A read that does not end within LOGS_TIMEOUT is killed and counted as stalled, with the
lines it got; one that ends with fewer lines than asked counts as failed too. Swarm's log
broker (Docker 20.10 here) stops sending the tail of a service of two tasks or more
(`--set logs_replicas=2`) from about 1,000 lines a task, without ending the response. The
agent means to end such a read after 10 s without data and say so
(sami_agent/executors/swarm_query.py); seen here, the read ends only at the Docker SDK's
60 s read timeout, and `sami logs` exits 0 with the lines it got. Needs root and the engine packages
(scripts/install-engine.sh); skipped otherwise. Run it on its own:
`python -m bench --only logs`.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import PY, Row, Skipped, cpu_seconds, median
from bench.control import CLUSTER, ControlPlane, deployments_repo
from bench.figures.shared import Ctx, ratio_of
from bench.swarm import MANIFEST, _run, start_agent, stop_agent

FIGURE = "18"
SERVICE = "loud"
SWARM_SERVICE = f"stage_{SERVICE}_web"
# A read that takes longer than this has stalled (the largest reads here take seconds).
LOGS_TIMEOUT = 90.0
NO_BOUND = ("--query-lines-per-second", "0")

STACK = """\
version: "3.8"
services:
  web:
    image: example.invalid/replaced-by-sami:latest
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
      restart_policy:
        condition: none
"""


def _printer(lines: int) -> list[str]:
    """The service's command: `lines` lines of a structured access log, then sleep."""
    line = (
        'echo "level=info ts=2026-12-03T08:00:00Z msg=\\"request handled\\" '
        'request_id=$i method=GET path=/api/v1/items/$i status=200 took_ms=12"'
    )
    loop = f"i=0; while [ $i -lt {lines} ]; do i=$((i+1)); {line}; done"
    return ["sh", "-c", f"{loop}; sleep 1000000"]


@dataclass
class Read:
    seconds: float
    lines: int
    stalled: bool  # killed after LOGS_TIMEOUT
    error: str = ""  # the command failed: the last line of its stderr
    said: str = ""  # the last line of its stderr, whatever its exit status
    # CPU seconds meanwhile: the command itself (user + sys), the control plane, the agent
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.stalled or bool(self.error)


def _read(argv: list[str], env: dict[str, str], out: Path) -> Read:
    """Run a logs command with its output in a file; its wall time, the lines it wrote, and
    whether it stalled (killed, by pid, after LOGS_TIMEOUT) or failed."""
    err = out.with_suffix(".err")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "wb") as f, open(err, "wb") as e:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, env=env, stdout=f, stderr=e, start_new_session=True)
        try:
            rc = p.wait(LOGS_TIMEOUT)
            stalled = False
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
            rc, stalled = 0, True
        took = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    with open(out, "rb") as f:
        lines = sum(1 for line in f if b"request_id=" in line)
    text = err.read_text(errors="replace").strip().splitlines()
    said = text[-1][:300] if text else ""
    error = (said or f"exit status {rc}") if rc != 0 else ""
    return Read(took, lines, stalled, error, said, {"command": own})


class Tools:
    """The two commands, run the same way."""

    def __init__(
        self, env: dict[str, str], cli_env: dict[str, str], folder: Path, pids: dict[str, int]
    ) -> None:
        self.env = env
        self.cli_env = cli_env
        self.out = folder / "logs.out"
        # The processes whose CPU a `sami logs` costs besides its own (control, agent).
        self.pids = pids

    def sami(self, tail: int) -> Read:
        argv = [PY, "-m", "sami_client", "logs", SERVICE, "--env", "stage", "--tail", str(tail)]
        c0 = {k: cpu_seconds(pid) for k, pid in self.pids.items()}
        r = _read(argv, self.cli_env, self.out)
        r.cpu.update({k: cpu_seconds(pid) - c0[k] for k, pid in self.pids.items()})
        return r

    def docker(self, tail: int) -> Read:
        argv = ["docker", "service", "logs", "--timestamps", "--tail", str(tail), SWARM_SERVICE]
        return _read(argv, self.env, self.out)


def _rounds(
    ctx: Ctx, tools: Tools, tails: list[int], rounds: int, which: tuple[str, ...]
) -> dict[tuple[str, int], list[Read]]:
    """`rounds` reads of each tail by each tool, alternating which goes first."""
    got: dict[tuple[str, int], list[Read]] = {}
    for i in range(rounds):
        for tail in tails:
            order = which if i % 2 == 0 else which[::-1]
            for name in order:
                r = tools.sami(tail) if name.startswith("sami") else tools.docker(tail)
                got.setdefault((name, tail), []).append(r)
                ctx.say(
                    f"logs: round {i + 1}/{rounds} {name} --tail {tail}: {r.lines} lines in "
                    f"{r.seconds:.2f} s{' (STALLED)' if r.stalled else ''}"
                    f"{' (FAILED: ' + r.error + ')' if r.error else ''}"
                )
    return got


def _wait_printed(env: dict[str, str], lines: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    marker = f"request_id={lines} "
    while time.monotonic() < deadline:
        p = subprocess.run(
            ["docker", "service", "logs", "--tail", "1", SWARM_SERVICE],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if marker in p.stdout + p.stderr:
            return
        time.sleep(1)
    raise TimeoutError(f"the service did not print its {lines} lines in {timeout:.0f} s")


def _wait_sami_logs(tools: Tools, timeout: float = 90.0) -> None:
    """Until `sami logs --tail 1` answers (the agent reconnected to the new control plane)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = tools.sami(1)
        if r.lines >= 1 and not r.failed:
            return
        time.sleep(1)
    raise TimeoutError("sami logs did not answer after the control plane's restart")


def fig_logs(ctx: Ctx) -> list[Row]:
    try:
        from sami_dev.devswarm import DevSwarm, missing_requirements
    except ImportError as exc:
        raise Skipped(f"sami_dev.devswarm unavailable: {exc}") from None
    missing = missing_requirements()
    if missing:
        raise Skipped(f"DevSwarm needs {', '.join(missing)} (scripts/install-engine.sh, root)")
    if shutil.which("docker") is None:
        raise Skipped("the docker CLI is not installed")

    p = ctx.params
    tails = sorted({int(t) for t in p.logs_tails.split(",") if t.strip()})
    printed = max(p.logs_lines, *tails)
    root = Path(tempfile.mkdtemp(prefix="sami-blg-", dir="/tmp"))
    swarm = DevSwarm(root / "swarm", progress=ctx.say)
    cp: ControlPlane | None = None
    agent: subprocess.Popen[bytes] | None = None
    try:
        swarm.start()
        ref, _ = swarm.build_image("loud", "v1", {"app/healthy": "ok\n"}, cmd=_printer(printed))
        cp = ControlPlane(root / "control", *NO_BOUND)
        cp.create_cluster()
        admin = cp.token("admin", name="bench-admin")
        agent_token = cp.token("agent", cluster=CLUSTER, name="bench-logs-agent")
        cp.start()
        stack = STACK.replace("{replicas}", str(p.logs_replicas))
        cp.sync_manifests(admin, deployments_repo([SERVICE], stack=stack, manifest=MANIFEST))
        cp.register_artifact(admin, SERVICE, ref)

        agent, env = start_agent(cp, swarm.env, agent_token, root, "bench-logs")
        cli_env = {**env, "SAMI_ADDR": cp.addr, "SAMI_TOKEN": admin}
        _run(
            [PY, "-m", "sami_client", "deploy", SERVICE, "--env", "stage", "--artifact", ref,
             "--wait", "--timeout", "180"],
            cli_env,
            210,
        )  # fmt: skip
        ctx.say(f"logs: waiting for the service to print its {printed} lines")
        _wait_printed(env, printed)
        tools = Tools(env, cli_env, root, {"control": cp.pid, "agent": agent.pid})
        unbound = _rounds(ctx, tools, [1, *tails], p.logs_rounds, ("sami", "docker"))

        # The same control plane (data, port) with its default rate bound.
        cp.stop()
        cp.extra = [a for a in cp.extra if a not in NO_BOUND]
        cp.start()
        tools.pids["control"] = cp.pid
        _wait_sami_logs(tools)
        bound = _rounds(ctx, tools, [1, tails[-1]], p.logs_rounds, ("sami-bound",))
    finally:
        if agent is not None:
            stop_agent(agent)
        if cp is not None:
            cp.stop()
        swarm.stop()
        # Kept with the run's data (`--keep`): what the agent and the control plane said.
        for log in (root / "agent.log", root / "control" / "control.log"):
            if log.exists():
                shutil.copy(log, ctx.folder("logs") / log.name)
        shutil.rmtree(root, ignore_errors=True)
    return _rows(p.logs_rounds, tails, printed, p.logs_replicas, {**unbound, **bound})


def _rows(
    rounds: int,
    tails: list[int],
    printed: int,
    tasks: int,
    got: dict[tuple[str, int], list[Read]],
) -> list[Row]:
    def start(name: str) -> float:
        return median([r.seconds for r in got[(name, 1)]])

    label = {
        "sami": "sami logs (no rate bound)",
        "docker": "docker service logs",
        "sami-bound": "sami logs (default bound, 2,000 lines/s)",
    }
    rows: list[Row] = []
    for tail in tails:
        rates: dict[str, float] = {}
        notes: dict[str, str] = {}
        extras: dict[str, dict[str, object]] = {}
        for name in ("sami", "docker", "sami-bound"):
            reads = got.get((name, tail))
            if not reads:
                continue
            took = median([r.seconds for r in reads])
            lines = median([float(r.lines) for r in reads])
            # A read that ends well with fewer lines than asked failed too (a stall the agent
            # ended without saying so: sami logs exits 0).
            failed = [r for r in reads if r.failed or (tail > 1 and r.lines < tail * tasks)]
            startup = start(name)
            first = median([float(r.lines) for r in got[(name, 1)]])
            net = (lines - first) / (took - startup) if took > startup and lines > first else None
            raw = lines / took if took else None
            cpu = {
                k: median([r.cpu.get(k, 0.0) for r in reads])
                for k in ("command", "control", "agent")
            }
            extras[name] = {
                "cpu_s_median": cpu,
                "seconds": [r.seconds for r in reads],
                "lines": [r.lines for r in reads],
                "stalled": sum(1 for r in reads if r.stalled),
                "errors": [r.error for r in reads if r.error],
                "stderr_last_lines": [r.said for r in reads],
                "startup_s": [r.seconds for r in got[(name, 1)]],
                "lines_per_s_raw": raw,
                "lines_per_s_net": net,
            }
            if failed:
                how = "; ".join(
                    f"{'stalled: killed' if r.stalled else r.error or 'ended, exit status 0,'}"
                    f" after {r.seconds:.1f} s "
                    f"with {r.lines} of {tail * tasks} lines"
                    for r in failed
                )
                notes[name] = f"FAILED in {len(failed)} of {len(reads)} reads ({how})"
                rates[name] = float("nan")
                continue
            rates[name] = net if net is not None else float("nan")
            where = f"CPU: the command {cpu['command']:.2f} s"
            if name != "docker":
                where += f", sami-control {cpu['control']:.2f} s, the agent {cpu['agent']:.2f} s"
            notes[name] = (
                f"{lines:.0f} lines in {took:.2f} s (raw {raw:,.0f} lines/s); "
                f"start-up (--tail 1) {startup:.2f} s; {where}"
            )
        for name in ("sami", "sami-bound", "docker"):
            if name not in rates:
                continue
            baseline = name == "docker"
            rows.append(
                Row(
                    FIGURE,
                    f"{label[name]} --tail {tail:,}"
                    + (f" ({tasks} tasks)" if tasks > 1 else "")
                    + f", start-up off, median of {rounds}",
                    None if rates[name] != rates[name] else rates[name],
                    "lines/s",
                    "",
                    None if baseline else ratio_of(rates[name], rates.get("docker")),
                    None,
                    note=("the baseline; " if baseline else "") + notes[name],
                    extra={"tail": tail, "printed": printed, "tasks": tasks, **extras[name]},
                )
            )
    return rows
