"""What a service's deployment history says: which deployment is live, what a rollback goes
back to, what a promotion takes. Pure functions over deployments listed newest first (as
`SamiClient.history` yields them); no RPCs here.

- The **live** deployment of a service in an environment (and pull request) is its newest
  SUCCEEDED one, when that is a deploy: a FAILED or ROLLED_BACK deployment after it left it
  running (Swarm rolled back to it), and after a SUCCEEDED teardown nothing is live.
- A **rollback** deploys an earlier SUCCEEDED artifact again: the new deployment's
  `rollback_of` names the deployment it goes back to (the server checks it), and its reason
  says so to people (`rollback to <id>[: reason]`). `rollback_of` is how the next rollback
  goes back further: when the live deployment is a rollback to X, the search starts below X,
  not below the rollback, so repeating `sami rollback` walks back one artifact at a time,
  any depth. It never picks an artifact of another kind than the live deployment's type
  deploys (an archive for a Swarm service, an image for a site).
- A **promotion gate** (`promote_after` in the destination's manifest) asks how long the
  artifact has been live in the source: since the SUCCEEDED deploy of its digest there,
  when no deploy of it FAILED or was ROLLED_BACK there after (`live_since`).
- A digest is **quarantined** on a target when its latest word there is bad (a deploy of it
  FAILED or was ROLLED_BACK, or a rollback took the service away from it: the rule is
  sami_common.quarantine's, which the server enforces). Rollbacks and promotions never
  pick one; `sami deploy --force` deploys it anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sami_client.pb import artifact_pb2, deployment_pb2
from sami_common.quarantine import Finished, Outcome, Quarantine, quarantined
from sami_manifests import artifact_fits

Deployment = deployment_pb2.Deployment

_PROMOTE_REASON = re.compile(r"promoted from \S+ \((\S+?)\)")


def is_teardown(d: Deployment) -> bool:
    return d.action == deployment_pb2.TEARDOWN


def is_deploy(d: Deployment) -> bool:
    """Deployments stored before actions existed have none: they are deploys."""
    return not is_teardown(d)


def rollback_reason(target_id: str, reason: str = "") -> str:
    """The reason of a rollback to `target_id`: `rollback to <id>[: <reason>]`."""
    text = f"rollback to {target_id}"
    return f"{text}: {reason}" if reason else text


def promote_reason(environment: str, source_id: str, reason: str = "") -> str:
    """The reason of a promotion: `promoted from <env> (<id>)[: <reason>]`."""
    text = f"promoted from {environment} ({source_id})"
    return f"{text}: {reason}" if reason else text


def is_rollback(d: Deployment, reason: str) -> bool:
    """`d` is a rollback requested with this (user) reason."""
    return bool(d.rollback_of) and d.reason == rollback_reason(d.rollback_of, reason)


def is_promotion(d: Deployment, environment: str, reason: str) -> bool:
    """`d` is a promotion from `environment` requested with this (user) reason."""
    match = _PROMOTE_REASON.match(d.reason)
    return match is not None and d.reason == promote_reason(environment, match.group(1), reason)


def rolled_back_to(d: Deployment) -> str:
    """The id a rollback deployment went back to ("" when `d` is not a rollback)."""
    return d.rollback_of


def live(history: Iterable[Deployment]) -> Deployment | None:
    """The live deployment of one service+environment(+pull request): see the module doc."""
    for d in history:
        if d.state == deployment_pb2.SUCCEEDED:
            return d if is_deploy(d) else None
    return None


def live_ids(history: Iterable[Deployment]) -> set[str]:
    """The ids of the live deployments in a history that may mix pull requests (one live
    deployment per pull request, at most)."""
    decided: set[int] = set()
    ids: set[str] = set()
    for d in history:
        if d.pull_request in decided or d.state != deployment_pb2.SUCCEEDED:
            continue
        decided.add(d.pull_request)
        if is_deploy(d):
            ids.add(d.id)
    return ids


def artifact_kind(d: Deployment) -> str:
    """`image`, `static_file`, `module`; "" when the server did not say."""
    if d.artifact.kind == artifact_pb2.ARTIFACT_KIND_UNSPECIFIED:
        return ""
    return artifact_pb2.ArtifactKind.Name(d.artifact.kind).removeprefix("ARTIFACT_KIND_").lower()


def fits(d: Deployment, deployment_type: str = "") -> bool:
    """Whether `d`'s artifact is of the kind `deployment_type` (default: `d`'s own) deploys:
    a static-files archive is never rolled back to on a Swarm service, nor an image on a
    site (the server refuses both; a history from before it did may hold one)."""
    return artifact_fits(deployment_type or d.deployment_type, artifact_kind(d))


def redeployable(d: Deployment) -> bool:
    """A deployment whose artifact can be deployed again: a SUCCEEDED deploy of a known
    artifact that fits its deployment type."""
    return d.state == deployment_pb2.SUCCEEDED and is_deploy(d) and bool(d.artifact.id) and fits(d)


@dataclass(frozen=True)
class RollbackPlan:
    live: Deployment | None
    # The deployment whose artifact the rollback deploys; None: there is nothing earlier.
    target: Deployment | None


_OUTCOMES = {
    deployment_pb2.SUCCEEDED: Outcome.SUCCEEDED,
    deployment_pb2.FAILED: Outcome.FAILED,
    deployment_pb2.ROLLED_BACK: Outcome.ROLLED_BACK,
}


def quarantined_digests(history: Iterable[Deployment]) -> dict[str, Quarantine]:
    """The digests quarantined on one target, from its deployments newest first."""
    return quarantined(
        Finished(d.id, d.artifact.digest, _OUTCOMES[d.state], d.rollback_of)
        for d in history
        if is_deploy(d) and d.state in _OUTCOMES
    )


def live_since(history: Iterable[Deployment], digest: str) -> float | None:
    """When `digest` went live on one target (seconds since the epoch): the finish time of
    its newest SUCCEEDED deploy there, from the target's deployments newest first. None when
    it never succeeded there, or a deploy of it FAILED or was ROLLED_BACK after that: a
    gate counts from a success nothing went wrong after (there is no health status yet)."""
    for d in history:
        if not is_deploy(d) or d.artifact.digest != digest:
            continue
        if d.state in (deployment_pb2.FAILED, deployment_pb2.ROLLED_BACK):
            return None
        if d.state == deployment_pb2.SUCCEEDED:
            return d.finish_time.ToNanoseconds() / 1e9 if d.HasField("finish_time") else None
    return None


def rollback_target(history: Sequence[Deployment]) -> RollbackPlan:
    """Where `sami rollback` without --to goes: the newest SUCCEEDED deploy, older than the
    live one (or, when the live one is a rollback, than what it rolled back to), whose
    artifact digest differs from the live one's and is not quarantined."""
    start = next((i for i, d in enumerate(history) if d.state == deployment_pb2.SUCCEEDED), None)
    if start is None or is_teardown(history[start]):
        return RollbackPlan(None, None)
    current = history[start]
    digest = current.artifact.digest
    position = {d.id: i for i, d in enumerate(history)}
    back = position.get(rolled_back_to(current), -1)
    # Only ever further back, so this ends; a rollback whose target carries another artifact
    # (the server refuses to create one, but a history can be odd) is not followed.
    while back > start and history[back].artifact.digest == digest:
        start = back
        back = position.get(rolled_back_to(history[back]), -1)
    bad = quarantined_digests(history)
    target = next(
        (
            d
            for d in history[start + 1 :]
            if redeployable(d)
            and d.artifact.digest != digest
            and d.artifact.digest not in bad
            and fits(d, current.deployment_type)
        ),
        None,
    )
    return RollbackPlan(current, target)
