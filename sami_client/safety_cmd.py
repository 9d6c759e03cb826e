"""`sami lock|unlock|locks|queue`: the brakes on deployments, and what waits.

    sami lock --env ENV [--service S] --reason R [--expires DURATION]
    sami unlock --env ENV [--service S]
    sami locks [--env ENV] [--service S]
    sami queue [--env ENV] [--service S]

A lock refuses every deployment to its target (an environment, or one service in it) until
it is unlocked or expires; `sami deploy --wait-lock` waits for it instead. Admins and
deployers scoped to the target lock, and unlock their own locks; an admin may break any
lock (audited). `sami queue` lists the QUEUED deployments, and those AWAITING_APPROVAL,
oldest first, and why each waits. `register(subparsers)` adds the group to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import grpc

from sami_client import argtypes, render
from sami_client.client import SamiClient
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode, SamiError
from sami_client.follow import lock_target, locked_reason, queued_reason
from sami_client.pb import cluster_pb2, deployment_pb2, lock_pb2
from sami_manifests import QUEUE_SUPERSEDE

SUPERSEDE_RULE = (
    "a newer deployment of the same service and environment (and pull request) supersedes "
    "a queued one: at most one waits per target, the newest"
)
FIFO_RULE = (
    "`queue: fifo` in the target's manifest: a newer deployment waits behind the queued ones, "
    "and they run one at a time, oldest first"
)
QUEUE_RULES_TEXT = f"supersede (the default): {SUPERSEDE_RULE}; fifo: {FIFO_RULE}"
# How often `sami deploy --wait-lock` asks whether the lock is gone (seconds).
LOCK_POLL = 2.0


def register(commands: Subparsers) -> None:
    p = commands.add_parser("lock", help="refuse deployments to an environment or a service")
    _target_options(p, env_required=True)
    p.add_argument("--reason", required=True, help="why (shown to whoever is refused)")
    p.add_argument(
        "--expires",
        type=argtypes.duration,
        metavar="DURATION",
        help="the lock ends by itself after DURATION (90, 15m, 2h, 1d; default: never)",
    )
    p.set_defaults(run=run_lock)

    p = commands.add_parser("unlock", help="remove a lock (an admin breaks another's)")
    _target_options(p, env_required=True)
    p.set_defaults(run=run_unlock)

    p = commands.add_parser("locks", help="the locks that hold now: who, why, since, until")
    _target_options(p, env_required=False)
    p.set_defaults(run=run_locks)

    p = commands.add_parser(
        "queue",
        help="the QUEUED (and AWAITING_APPROVAL) deployments, oldest first, and why each waits",
    )
    _target_options(p, env_required=False)
    p.set_defaults(run=run_queue)


def _target_options(p: argparse.ArgumentParser, *, env_required: bool) -> None:
    p.add_argument(
        "--env", required=env_required, default="", help="stage, production or pull_request"
    )
    p.add_argument(
        "--service", default="", help="one service (default: every service of the environment)"
    )


def locks_table(locks: list[lock_pb2.Lock]) -> str:
    return render.table(
        ("ENVIRONMENT", "SERVICE", "HOLDER", "SINCE", "UNTIL", "REASON"),
        [
            (
                lk.environment,
                lk.service or "*",
                lk.holder,
                render.timestamp(lk.create_time),
                render.timestamp(lk.expire_time) if lk.HasField("expire_time") else "unlocked",
                lk.reason,
            )
            for lk in locks
        ],
    )


def run_lock(args: argparse.Namespace, ctx: Context) -> int:
    lock = ctx.client().create_lock(args.env, args.service, args.reason, args.expires or 0.0)
    until = (
        f" until {render.timestamp(lock.expire_time)}"
        if lock.HasField("expire_time")
        else " until `sami unlock`"
    )
    ctx.show(f"locked {lock_target(lock)}{until}: {lock.reason}", lock)
    return int(ExitCode.SUCCEEDED)


def run_unlock(args: argparse.Namespace, ctx: Context) -> int:
    lock = ctx.client().delete_lock(args.env, args.service)
    ctx.show(f"unlocked {lock_target(lock)} (held by {lock.holder}: {lock.reason})", lock)
    return int(ExitCode.SUCCEEDED)


def run_locks(args: argparse.Namespace, ctx: Context) -> int:
    locks = ctx.client().list_locks(args.env, args.service)
    text = locks_table(locks) if locks else "no locks hold"
    ctx.show(text, {"locks": [render.to_dict(lk) for lk in locks]})
    return int(ExitCode.SUCCEEDED)


# queue


def why_waiting(
    d: deployment_pb2.Deployment,
    active: list[deployment_pb2.Deployment],
    locks: list[lock_pb2.Lock],
    agents: Callable[[str], list[cluster_pb2.Agent]],
    now: float,
    ahead: Sequence[deployment_pb2.Deployment] = (),
) -> str:
    """Why the QUEUED deployment `d` waits: a lock, a deployment in flight on its target,
    an older queued one of its target (`queue: fifo`; `ahead` are the queued deployments
    older than `d`), no agent connected for its cluster (first that applies)."""
    for lk in locks:
        if lk.environment == d.environment and lk.service in ("", d.service):
            return locked_reason(lk)
    key = (d.service, d.environment, d.pull_request)
    for a in active:
        if (a.service, a.environment, a.pull_request) == key:
            return (
                f"deployment {a.id} of the same target is {render.state_name(a.state)}: "
                "one at a time per service and environment"
            )
    before = [a for a in ahead if (a.service, a.environment, a.pull_request) == key]
    if before:
        return (
            f"deployment {before[-1].id} of the same target, queued before it: "
            "they run in order (queue: fifo)"
        )
    found = agents(d.cluster)
    if not any(a.connected for a in found):
        return queued_reason(d, found, now)
    return f"next for the agents of cluster {d.cluster}"


def queue_rule(d: deployment_pb2.Deployment, rules: dict[tuple[str, str, str], str]) -> str:
    """supersede or fifo: what a new request for `d`'s target does to `d`, by the current
    manifests (a new deployment is resolved against them, and its rule decides)."""
    return rules.get((d.service, d.deployment_type, d.environment)) or QUEUE_SUPERSEDE


def current_queue_rules(client: SamiClient) -> dict[tuple[str, str, str], str]:
    """(service, deployment type, environment) -> its manifest's `queue` rule."""
    try:
        revision = client.get_manifest_revision("current")
    except SamiError as err:
        if err.code is grpc.StatusCode.NOT_FOUND:  # nothing synced yet: nothing deploys
            return {}
        raise
    return {(e.service, e.deployment_type, e.environment): e.queue for e in revision.entries}


def queue_rows(
    client: SamiClient, environment: str, service: str
) -> list[tuple[deployment_pb2.Deployment, str, str]]:
    def listed(state: deployment_pb2.DeploymentState) -> list[deployment_pb2.Deployment]:
        return list(client.list_deployments(service=service, environment=environment, state=state))

    def by_age(found: list[deployment_pb2.Deployment]) -> list[deployment_pb2.Deployment]:
        return sorted(found, key=lambda d: d.create_time.ToNanoseconds())

    queued = by_age(listed(deployment_pb2.QUEUED))
    awaiting = listed(deployment_pb2.AWAITING_APPROVAL)
    if not queued and not awaiting:
        return []
    active = listed(deployment_pb2.ASSIGNED) + listed(deployment_pb2.IN_PROGRESS)
    locks = client.list_locks(environment, service)
    by_cluster: dict[str, list[cluster_pb2.Agent]] = {}

    def agents(cluster: str) -> list[cluster_pb2.Agent]:
        if cluster not in by_cluster:
            by_cluster[cluster] = client.list_agents(cluster)
        return by_cluster[cluster]

    rules = current_queue_rules(client)
    now = time.time()
    why = {
        d.id: why_waiting(d, active, locks, agents, now, queued[:i]) for i, d in enumerate(queued)
    }
    # Not queued yet: the rule applies once approved (docs/release-safety.md).
    why.update({d.id: awaiting_reason(d) for d in awaiting})
    return [(d, why[d.id], queue_rule(d, rules)) for d in by_age(queued + awaiting)]


def awaiting_reason(d: deployment_pb2.Deployment) -> str:
    """`awaiting approval by alice or admin until …`, as the control plane says it."""
    return d.status_message or "awaiting approval"


def run_queue(args: argparse.Namespace, ctx: Context) -> int:
    rows = queue_rows(ctx.client(), args.env, args.service)
    table = render.table(
        ("ID", "SERVICE", "ENVIRONMENT", "QUEUED", "RULE", "WAITS FOR"),
        [
            (
                d.id,
                d.service,
                d.environment + (f" #{d.pull_request}" if d.pull_request else ""),
                render.timestamp(d.create_time),
                rule,
                why,
            )
            for d, why, rule in rows
        ],
    )
    text = (table if rows else "nothing is queued") + f"\n\nrules: {QUEUE_RULES_TEXT}"
    value = {
        "queue": [
            {"deployment": render.to_dict(d), "waits_for": why, "rule": rule}
            for d, why, rule in rows
        ],
        "rule": QUEUE_RULES_TEXT,
    }
    ctx.show(text, value)
    return int(ExitCode.SUCCEEDED)


# deploy --wait-lock


def create_when_unlocked(
    ctx: Context,
    service: str,
    environment: str,
    create: Callable[[], deployment_pb2.Deployment],
    deadline: float | None,
    poll: float = LOCK_POLL,
) -> deployment_pb2.Deployment:
    """`create()`, and while it is refused because a lock covers the target, wait for the
    unlock (until `deadline`, time.monotonic(); None: forever) and try again."""
    said = ""
    retried = False
    while True:
        try:
            return create()
        except SamiError as err:
            if err.code.name != "FAILED_PRECONDITION":
                raise
            if not ctx.client().list_locks(environment, service):
                if retried:
                    raise  # refused for another reason than a lock
                retried = True  # the lock may have gone between the refusal and the listing
                continue
            retried = False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                err.message += " (still locked when --timeout ran out)"
                raise
            line = f"waiting for the unlock: {err.message}"
            if line != said and not ctx.json_output:
                ctx.console.note(line)
            said = line
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - now)))
