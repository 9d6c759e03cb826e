"""`python -m bench [--quick] [--only NAME ...] [--profile]`: run the benchmarks, print one
table, write bench/results/<full|quick>.json. See bench/__init__.py."""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import drift, logs_throughput, report, status_load, swarm
from bench import profile as prof
from bench.common import REPO, Row, Skipped, machine_info, raise_fd_limit
from bench.figures import calls, dashboard, delivery, idle, lifecycle, notify, replicas
from bench.figures.params import FULL, QUICK, override
from bench.figures.shared import Ctx

RESULTS = REPO / "bench" / "results"

# name -> (figure number, function, baselines it needs first)
FIGURES: dict[str, tuple[str, Callable[[Ctx], list[Row]], tuple[str, ...]]] = {
    "echo": ("1", calls.fig_echo, ()),
    "create": ("2", calls.fig_create, ("echo",)),
    "lifecycle": ("3", lifecycle.fig_lifecycle, ("echo",)),
    "pickup": ("4", delivery.fig_pickup, ()),
    "idle": ("5", idle.fig_idle, ()),
    "fanout": ("6", delivery.fig_fanout, ()),
    "footprint": ("7", idle.fig_footprint, ()),
    "swarm": ("8", swarm.fig_swarm, ()),
    "dashboard": ("9", dashboard.fig_dashboard, ()),
    # On PostgreSQL, one and two replicas; 10 and 11 next to 2 and 3 on SQLite.
    "pg-create": ("10", replicas.fig_pg_create, ("echo", "create")),
    "pg-lifecycle": ("11", replicas.fig_pg_lifecycle, ("echo", "lifecycle")),
    "pg-pickup": ("12", replicas.fig_pg_pickup, ()),
    "pg-watch": ("13", replicas.fig_pg_watch, ()),
    "pg-idle": ("14", replicas.fig_pg_idle, ()),
    # Lifecycles with 3 notification targets vs none, in the same run.
    "notify": ("15", notify.fig_notify, ()),
    "drift": ("16", drift.fig_drift, ()),
    # The control plane with agents idle, then reporting live status.
    "status": ("17", status_load.fig_status, ()),
    # `sami logs` next to `docker service logs` on a real swarm.
    "logs": ("18", logs_throughput.fig_logs, ()),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Sami benchmarks: numbers, not assertions. Prints one table and writes "
        "bench/results/<full|quick>.json.",
    )
    p.add_argument("--quick", action="store_true", help="smaller counts (about a minute)")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=sorted(FIGURES),
        help=f"run only these ({', '.join(FIGURES)}); baselines they need run too",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the control plane with py-spy during 2-4 (bench/results/profile-*)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="override a parameter of bench/figures/params.py's Params (e.g. pickup_agents=900)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    p.add_argument("--output", type=Path, help="JSON file (default bench/results/<name>.json)")
    return p


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raise_fd_limit()
    params = QUICK if args.quick else FULL
    try:
        params = override(params, args.set)
    except ValueError as exc:
        _parser().error(str(exc))
    wanted = list(FIGURES) if not args.only else list(args.only)
    if args.quick and not args.only:
        wanted.remove("swarm")  # minutes of engine start and rollouts: run it on its own
        wanted.remove("drift")  # likewise
        wanted.remove("logs")  # likewise
    order = [n for n in FIGURES if n in wanted or any(n in FIGURES[w][2] for w in wanted)]
    tmp = Path(tempfile.mkdtemp(prefix="sami-bench-", dir="/tmp"))
    profile_dir = RESULTS if args.profile else None
    if args.profile and prof.py_spy() is None:
        _say("--profile: py-spy not found (.venv/bin/pip install py-spy); not profiling")
        profile_dir = None
    ctx = Ctx(params, tmp, profile_dir, _say)
    rows: list[Row] = []
    failures: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    started = time.time()
    machine = machine_info()
    try:
        for name in order:
            fig, fn, _ = FIGURES[name]
            _say(f"{fig} {name} ...")
            t0 = time.monotonic()
            try:
                got = fn(ctx)
            except Skipped as exc:
                got = [Row(fig, name, None, "", note=f"skipped: {exc}")]
            except Exception as exc:
                tb = traceback.format_exc()
                _say(f"{name} failed:\n{tb}")
                failures.append({"figure": name, "error": str(exc), "traceback": tb})
                got = [Row(fig, name, None, "", note=f"FAILED: {str(exc).splitlines()[0]}")]
            timings[name] = time.monotonic() - t0
            if name in wanted:
                rows += got
            _say(f"{fig} {name} done in {timings[name]:.1f} s")
    finally:
        ctx.resources.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _say(f"data kept in {tmp}")
    if "swarm" in FIGURES and args.quick and not args.only:
        rows.append(
            Row("8", "swarm: sami deploy --wait vs docker service update", None, "",
                note="not in --quick; run `python -m bench --only swarm`")
        )  # fmt: skip
    print(report.table(rows))
    if ctx.profiles:
        text = "".join(prof.render(k, v) for k, v in ctx.profiles.items())
        (RESULTS / f"profile-{params.name}.txt").write_text(text)
        _say(f"profile summary in {RESULTS / f'profile-{params.name}.txt'}")
    doc = {
        "name": params.name,
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "machine": {**machine, "loadavg_at_end": machine_info().get("loadavg")},
        "params": params.__dict__,
        "figures": [r.to_json() for r in rows],
        "seconds_per_figure": {k: round(v, 1) for k, v in timings.items()},
        "failures": failures,
        "profiles": ctx.profiles,
    }
    out = args.output or RESULTS / f"{params.name}.json"
    report.write_json(out, doc)
    _say(f"wrote {out} ({doc['duration_s']} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
