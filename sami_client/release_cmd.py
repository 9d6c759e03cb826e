"""`sami history`, `sami rollback`, `sami promote` and `sami teardown`: a service's deployments
in one environment, and the deployments made from them.

    sami history SERVICE --env ENV [--pr N] [--limit N]

lists the deployments of SERVICE in ENV, newest first, and marks the live one with `*` (see
`sami_client.history`).

    sami rollback SERVICE --env ENV [--pr N] [--to DEPLOYMENT_ID]
    sami promote SERVICE --from stage --to production
    sami teardown SERVICE --pr N

request a deployment like `sami deploy` does, and take its options: --reason, --request-id,
--wait, --timeout and --queue-timeout, with the same output and exit statuses. A rollback
deploys again the artifact of an earlier SUCCEEDED deployment (without --to: the newest one
that carries another artifact than the live deployment; repeat it to go further back); a
promotion deploys the exact artifact (same id, same digest) of the newest SUCCEEDED
deployment of the source environment, nothing rebuilt or retagged; a teardown removes a
pull-request preview's stack. When there is nothing to roll back to or to promote, or --to names a
deployment that cannot be rolled back to, they exit 2 and say why.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import grpc

from sami_client import argtypes, history, render
from sami_client.client import DEFAULT_PAGE_SIZE, SamiClient
from sami_client.context import Context
from sami_client.errors import ExitCode, SamiError, UsageError
from sami_client.follow import add_wait_options, check_wait_options
from sami_client.pb import deployment_pb2
from sami_common import durations

PREVIEWS = "pull_request"
_DEFAULT_LIMIT = 50
# How far back a retry with --request-id looks for the deployment it already requested.
_RETRY_LOOKBACK = DEFAULT_PAGE_SIZE
# How much of a history quarantine is read from (the server reads as far: core/quarantine.py).
_QUARANTINE_LOOKBACK = 100


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "history",
        help="a service's deployments in one environment, newest first; * marks the live one",
    )
    p.add_argument("service")
    p.add_argument("--env", required=True, help="stage, production or pull_request")
    p.add_argument(
        "--pr",
        type=_pull_request,
        help="with --env pull_request: only this pull request's preview (default: all)",
    )
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=_DEFAULT_LIMIT,
        help=f"at most N (0: all; default {_DEFAULT_LIMIT})",
    )
    p.set_defaults(run=run_history)

    p = subparsers.add_parser(
        "rollback",
        help="deploy again the artifact of an earlier SUCCEEDED deployment; prints the id",
        description="Without --to, go back to the newest SUCCEEDED deployment whose artifact "
        "differs from the live one; run it again to go back further.",
    )
    p.add_argument("service")
    p.add_argument("--env", required=True, help="stage, production or pull_request")
    p.add_argument("--pr", type=_pull_request, help="pull request number (env pull_request)")
    p.add_argument(
        "--to",
        metavar="DEPLOYMENT_ID",
        help="the SUCCEEDED deployment to go back to (`sami history` lists them)",
    )
    _add_request_options(p)
    p.set_defaults(run=run_rollback)

    p = subparsers.add_parser(
        "promote",
        help="deploy the artifact that succeeded in one environment to another; prints the id",
        description="Deploys the exact artifact (same id, same digest) of the newest "
        "SUCCEEDED deployment in --from: nothing is rebuilt or retagged.",
    )
    p.add_argument("service")
    p.add_argument("--from", dest="source", required=True, metavar="ENV", help="e.g. stage")
    p.add_argument("--to", dest="dest", required=True, metavar="ENV", help="e.g. production")
    p.add_argument(
        "--type",
        dest="deployment_type",
        default="",
        metavar="TYPE",
        help="needed only when the service has --to under several deployment types",
    )
    _add_request_options(p)
    p.set_defaults(run=run_promote)

    p = subparsers.add_parser(
        "teardown", help="remove a pull request's preview stack; prints the deployment id"
    )
    p.add_argument("service")
    p.add_argument("--pr", type=_pull_request, required=True, help="pull request number")
    _add_request_options(p)
    p.set_defaults(run=run_teardown)


def _add_request_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request-id", default="", help="idempotency key: a retry with it acts once")
    p.add_argument("--reason", default="", help="why (shown in the history)")
    add_wait_options(p)


def _pull_request(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pull request number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _where(service: str, env: str, pr: int | None) -> str:
    return f"{service} in {env}" + (f" #{pr}" if pr else "")


def _history_hint(service: str, env: str, pr: int | None) -> str:
    return f"`sami history {service} --env {env}" + (f" --pr {pr}`" if pr else "`")


def _check_pr(env: str, pr: int | None) -> None:
    if pr is not None and env != PREVIEWS:
        raise UsageError(f"--pr goes with --env {PREVIEWS}: drop --pr, or use --env {PREVIEWS}")


def _prior(
    client: SamiClient,
    request_id: str,
    service: str,
    env: str,
    same_request: Callable[[deployment_pb2.Deployment], bool],
) -> deployment_pb2.Deployment | None:
    """The deployment an earlier run with this --request-id requested, if it is among the
    latest of SERVICE in ENV and was the same kind of request: a retry then follows it rather
    than choosing again (the history changed since, so it would choose another target and
    the server would refuse the key). Anything else is left to the server to judge."""
    if not request_id:
        return None
    recent = itertools.islice(client.history(service, env), _RETRY_LOOKBACK)
    prior = next((d for d in recent if d.request_id == request_id), None)
    return prior if prior is not None and same_request(prior) else None


# history


def run_history(args: argparse.Namespace, ctx: Context) -> int:
    _check_pr(args.env, args.pr)
    # Full pages even for a small --limit: the live deployment may be further back.
    found = ctx.client().history(args.service, args.env, pull_request=args.pr)
    shown = argtypes.take(found, args.limit)
    live = history.live_ids(shown)
    # One service+environment(+PR): when none of the deployments shown decides what is live,
    # look further back for it.
    older_live = None
    one_key = args.env != PREVIEWS or args.pr is not None
    if one_key and args.limit and not any(d.state == deployment_pb2.SUCCEEDED for d in shown):
        older_live = history.live(found)
    if ctx.json_output:
        ctx.console.print(
            render.to_json([dict(render.to_dict(d), live=d.id in live) for d in shown])
        )
        return int(ExitCode.SUCCEEDED)
    ctx.console.print(
        render.history_table(shown, live, pull_requests=args.env == PREVIEWS and args.pr is None)
    )
    if older_live is not None:
        ctx.console.note(
            f"live: {older_live.id} ({render.artifact_label(older_live)}), older than the "
            f"{len(shown)} shown"
        )
    if one_key:
        for line in drift_notes(ctx.client(), args.service, args.env, args.pr or 0):
            ctx.console.note(line)
    return int(ExitCode.SUCCEEDED)


# The past drift records `sami history` notes under its table.
PAST_DRIFT_NOTES = 10


def drift_notes(client: SamiClient, service: str, environment: str, pr: int) -> list[str]:
    """`drift: …` lines for the target's services that drift from what Sami deployed now,
    then `drift (ended …)` lines for its latest past drift records (docs/status.md); none
    when the control plane has no live status (an older one)."""
    try:
        rows = client.get_status(service, environment)
        past = [
            r for r in client.list_drift_records(service, environment, pr) if r.HasField("end_time")
        ]
    except SamiError:
        return []
    now = [
        f"drift: {r.stack_name}_{r.swarm_service}: {r.drift_reason}"
        + (f" (since {render.timestamp(r.drift_time)})" if r.HasField("drift_time") else "")
        for r in rows
        if r.drifted and r.pull_request == pr
    ]
    return now + [
        f"drift (ended {render.timestamp(r.end_time)}): {r.swarm_service or service}: "
        f"{r.reason} (from {render.timestamp(r.start_time)})"
        for r in past[:PAST_DRIFT_NOTES]
    ]


# rollback


def run_rollback(args: argparse.Namespace, ctx: Context) -> int:
    check_wait_options(args)
    _check_pr(args.env, args.pr)
    service, env, pr = args.service, args.env, args.pr
    client = ctx.client()
    prior = _prior(
        client, args.request_id, service, env, lambda d: history.is_rollback(d, args.reason)
    )
    if prior is not None:
        return ctx.follower().started(
            prior, wait=args.wait, timeout=args.timeout, queue_timeout=args.queue_timeout
        )
    if args.to:
        target = _chosen_target(client, args.to, service, env, pr)
    else:
        if env == PREVIEWS and pr is None:
            raise UsageError(
                f"which preview? add --pr N (`sami history {service} --env {PREVIEWS}` lists them)"
            )
        target = _default_target(client, service, env, pr)
    if not ctx.json_output:
        ctx.console.note(
            f"rolling back {_where(service, env, target.pull_request)} to deployment "
            f"{target.id} ({render.artifact_label(target)})"
        )
    deployment = client.create_deployment(
        service,
        env,
        target.artifact.id,
        pull_request=target.pull_request,
        reason=history.rollback_reason(target.id, args.reason),
        request_id=args.request_id,
        deployment_type=target.deployment_type,
        rollback_of=target.id,
    )
    return ctx.follower().started(
        deployment, wait=args.wait, timeout=args.timeout, queue_timeout=args.queue_timeout
    )


def _chosen_target(
    client: SamiClient, name: str, service: str, env: str, pr: int | None
) -> deployment_pb2.Deployment:
    target = client.get_deployment(name)
    where = _where(service, env, pr)
    if (
        target.service != service
        or target.environment != env
        or (pr is not None and target.pull_request != pr)
    ):
        raise UsageError(
            f"--to {name}: deployment {target.id} is of {render.what(target)}, not of {where}; "
            f"{_history_hint(service, env, pr)} lists the deployments to roll back to"
        )
    if history.is_teardown(target):
        raise UsageError(
            f"--to {name}: deployment {target.id} is a teardown, which has no artifact to "
            "deploy again; name a deploy"
        )
    if not history.redeployable(target):
        raise UsageError(
            f"--to {name}: deployment {target.id} ended {render.state_name(target.state)}; only "
            f"a SUCCEEDED deployment can be rolled back to "
            f"({_history_hint(service, env, pr)} lists them)"
        )
    return target


def _default_target(
    client: SamiClient, service: str, env: str, pr: int | None
) -> deployment_pb2.Deployment:
    plan = history.rollback_target(list(client.history(service, env, pull_request=pr)))
    where = _where(service, env, pr)
    if plan.live is None:
        raise UsageError(
            f"nothing to roll back: {where} has no live deployment (none SUCCEEDED"
            + (", or its preview was torn down" if env == PREVIEWS else "")
            + f"); deploy an artifact with `sami deploy {service} --env {env} ...`"
        )
    if plan.target is None:
        raise UsageError(
            f"nothing to roll back to: no SUCCEEDED deployment of {where} older than the live "
            f"{plan.live.id} has another artifact than its {render.artifact_label(plan.live)}"
            f" ({_history_hint(service, env, pr)} shows them)"
        )
    return plan.target


# promote


def run_promote(args: argparse.Namespace, ctx: Context) -> int:
    check_wait_options(args)
    service, source_env, dest_env = args.service, args.source, args.dest
    if source_env == dest_env:
        raise UsageError(f"--from and --to are both {source_env}: name two environments")
    if PREVIEWS in (source_env, dest_env):
        raise UsageError(
            "previews are not promoted from or to: deploy an artifact to a preview with "
            f"`sami deploy {service} --env {PREVIEWS} --pr N --artifact ID`"
        )
    client = ctx.client()
    prior = _prior(
        client,
        args.request_id,
        service,
        dest_env,
        lambda d: history.is_promotion(d, source_env, args.reason),
    )
    if prior is not None:
        return ctx.follower().started(
            prior, wait=args.wait, timeout=args.timeout, queue_timeout=args.queue_timeout
        )
    # A digest that went bad in either environment is never promoted.
    bad = {
        **_quarantined(client, service, dest_env),
        **_quarantined(client, service, source_env),
    }
    succeeded = client.history(service, source_env, state=deployment_pb2.SUCCEEDED)
    fitting = (
        d for d in succeeded if history.redeployable(d) and history.fits(d, args.deployment_type)
    )
    skipped: list[deployment_pb2.Deployment] = []
    source = None
    for d in fitting:
        if d.artifact.digest not in bad:
            source = d
            break
        skipped.append(d)
    if source is None:
        why = "".join(
            f"; {render.artifact_label(d)} is quarantined ({bad[d.artifact.digest].why})"
            for d in skipped[:3]
        )
        raise UsageError(
            f"nothing to promote: {service} has no SUCCEEDED deployment in {source_env} of an "
            f"artifact that is not quarantined{why}; deploy there first (`sami deploy "
            f"{service} --env {source_env} --artifact ID --wait`)"
        )
    _check_promotion_gate(client, source, service, source_env, dest_env, args.deployment_type)
    if not ctx.json_output:
        ctx.console.note(
            f"promoting {render.artifact_label(source)} of {service} from {source_env} "
            f"(deployment {source.id}) to {dest_env}"
        )
    deployment = client.create_deployment(
        service,
        dest_env,
        source.artifact.id,
        reason=history.promote_reason(source_env, source.id, args.reason),
        request_id=args.request_id,
        deployment_type=args.deployment_type,
    )
    return ctx.follower().started(
        deployment, wait=args.wait, timeout=args.timeout, queue_timeout=args.queue_timeout
    )


def _promotion_gate(client: SamiClient, service: str, env: str, deployment_type: str) -> int:
    """The `promote_after` (seconds) of `service`'s manifest in `env` (the longest, when the
    service has several deployment types there and --type named none); 0: no gate."""
    try:
        entries = client.get_manifest_revision("current").entries
    except SamiError as err:
        if err.code is grpc.StatusCode.NOT_FOUND:  # nothing synced: the deploy is refused anyway
            return 0
        raise
    return max(
        (
            e.promote_after_seconds
            for e in entries
            if e.service == service
            and e.environment == env
            and deployment_type in ("", e.deployment_type)
        ),
        default=0,
    )


def _check_promotion_gate(
    client: SamiClient,
    source: deployment_pb2.Deployment,
    service: str,
    source_env: str,
    dest_env: str,
    deployment_type: str,
) -> None:
    """Refuse (exit 2) to promote an artifact that has not been live in the source for the
    destination manifest's `promote_after`. Checked here, in the CLI: to the server a
    promotion is a plain deployment (docs/release-safety.md)."""
    required = _promotion_gate(client, service, dest_env, deployment_type)
    if required <= 0:
        return
    label = render.artifact_label(source)
    recent = itertools.islice(
        client.history(service, source_env, pull_request=0), _QUARANTINE_LOOKBACK
    )
    since = history.live_since(recent, source.artifact.digest)
    rule = f"{dest_env}'s manifest requires {durations.format_seconds(required)} (promote_after)"
    if since is None:
        raise UsageError(
            f"not promoting {label} of {service} to {dest_env}: a deploy of it in "
            f"{source_env} FAILED or was rolled back after it succeeded, so it has not been "
            f"live there since a success, and {rule}; deploy it to {source_env} again and "
            f"promote it once it has been live for {durations.format_seconds(required)}"
        )
    now = time.time()
    live_for = max(0.0, now - since)
    if live_for >= required:
        return
    allowed = since + required
    raise UsageError(
        f"not promoting {label} of {service} to {dest_env} yet: it has been live in "
        f"{source_env} for {durations.format_seconds(round(live_for))} (since deployment "
        f"{source.id} succeeded), and {rule}; it may be promoted from "
        f"{_utc(allowed)} (in {durations.format_seconds(math.ceil(allowed - now))}): "
        "wait and run `sami promote` again"
    )


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _quarantined(client: SamiClient, service: str, env: str) -> dict[str, history.Quarantine]:
    """The digests quarantined on `service` in `env` (history.quarantined_digests)."""
    recent = itertools.islice(client.history(service, env, pull_request=0), _QUARANTINE_LOOKBACK)
    return history.quarantined_digests(recent)


# teardown


def run_teardown(args: argparse.Namespace, ctx: Context) -> int:
    check_wait_options(args)
    deployment = ctx.client().teardown_preview(
        args.service, args.pr, reason=args.reason, request_id=args.request_id
    )
    return ctx.follower().started(
        deployment, wait=args.wait, timeout=args.timeout, queue_timeout=args.queue_timeout
    )
