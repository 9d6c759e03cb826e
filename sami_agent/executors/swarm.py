"""The agent's real executor: deploy a compose-format stack on Docker Swarm, watch it
converge, roll back when it does not.

One `execute()`:

1. **Plan** (`swarm_apply.plan`): validate the job; fill the stack files' variables from the
   deployment's; pin the artifact by digest. Then (`swarm_objects.render`, reading the
   engine but changing nothing) decrypt the deployment's secrets in memory and name each
   secret and config version by content; a variable, a secret or a key that is missing
   fails the deployment here, before anything changes.
2. **Recognise a redelivery**: when every service of the stack already carries this
   deployment's `sami.deployment-id` label, the job was applied before (an earlier attempt
   of this deployment): it is only watched. Applying again would not be a no-op: swarmkit's
   UpdateService always copies the current spec into `PreviousSpec`, even for an identical
   spec (manager/controlapi/service.go), which would lose the spec to roll back to.
3. **Pre-flight**: the engine is a swarm manager; the registry has the artifact
   (`/distribution/{ref}/json`, resolved by the engine with the agent's own registry
   credentials), so a missing image fails at once with the registry's reason ("manifest
   unknown") and nothing is touched.
4. **Apply**: create the secret and config versions the swarm does not have yet, then
   `docker stack deploy --with-registry-auth` (see swarm_apply).
5. **Converge** (Docker SDK, polling): every service of the stack runs its desired replicas
   on the new spec (current spec carries our label; tasks pass the daemon's `_up-to-date`
   filter), healthy, with `UpdateStatus` `completed` or absent; for a service without an
   update status (new service, or nothing in its task template changed) that state must hold
   for the service's `update_config.monitor` (default 5 s), as the CLI's own progress does.
   Progress lines report changes only.
6. **Fail and roll back** on: a task rejected (image pull failure and the like); a crash loop
   (`crash_loop_failures` tasks of the new spec ended); `UpdateStatus` `paused`; swarm's
   own rollback (`failure_action: rollback`: `rollback_started` -> `rollback_completed`, which
   is a failure, never a success); the timeout (`job.converge_timeout`); cancellation.
   When the stack sets `failure_action: rollback`/`pause`, swarm is given `swarm_grace`
   seconds to act on a failure itself before Sami does. Sami's own rollback is the Engine
   API's server-side rollback (`POST /services/{id}/update?rollback=previous`, "the supplied
   spec will be ignored"; what `docker service rollback` does; docker-py has no wrapper),
   sent with the service's version so it can never race swarm's own rollback into rolling
   *forward*. Then it waits for the rollback to settle (`rollback_completed` and the
   restored spec running healthy) and returns ROLLED_BACK with the concrete reason (task
   error, last health check result).
   A service this deployment created (no previous spec) cannot be rolled back: it is
   removed (`remove_failed_new_services`, default on), so a failed first deployment leaves
   no crash-looping service behind; the reason carries what the tasks said. Outcome FAILED.
7. **Cancel**: the same rollback, outcome CANCELLED.
8. **Clean up** after a success: the stack's secret and config versions Sami made that no
   service uses, in its spec or in the spec Swarm would roll back to, are removed.

A redelivered job whose spec swarm already rolled back in between is applied again (swarm's
automatic rollback clears `PreviousSpec`, so no trace of it stays on the service): the
same failure happens again and is reported again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import docker

from sami_agent import queries
from sami_agent.executor import (
    ExecutionResult,
    Job,
    LiveService,
    Outcome,
    PreviewStack,
    ProgressReporter,
)
from sami_agent.executors import (
    swarm_apply,
    swarm_objects,
    swarm_previews,
    swarm_query,
    swarm_status,
)
from sami_agent.executors.swarm_apply import LABEL_DEPLOYMENT, ApplyError, JobError, StackPlan
from sami_agent.executors.swarm_watch import (
    FAILED_STATES,
    ROLLBACK_STATES,
    ProgressLog,
    ServiceView,
    StackObserver,
    TaskView,
    safe_observe,
)
from sami_manifests import DEFAULT_CONVERGE_TIMEOUT

if TYPE_CHECKING:
    from sami_agent.keys import AgentKey

__all__ = ["SwarmExecutor"]

MAX_REASON = 4000
Views = Mapping[str, ServiceView | None]


@dataclass
class Verdict:
    kind: str  # converged | failed | swarm_rollback | superseded | cancelled
    reason: str = ""


@dataclass
class _Settings:
    docker_cli: str
    docker_env: dict[str, str]
    poll_interval: float
    crash_loop_failures: int
    swarm_grace: float
    rollback_timeout: float | None
    remove_failed_new_services: bool


class SwarmExecutor:
    """Executor for `swarm` and `compose` deployments on the swarm manager this agent runs on.

    The engine is found like the docker CLI finds it (DOCKER_HOST, DOCKER_TLS_VERIFY,
    DOCKER_CERT_PATH, else the local socket); `docker_env` adds to or overrides that
    environment, for the SDK and the CLI alike (tests pass a private engine's DOCKER_HOST).
    `key` is the agent's age key, which opens the secrets of the assignments.
    """

    capabilities: tuple[str, ...] = ("swarm", "compose")

    def __init__(
        self,
        *,
        docker_env: Mapping[str, str] | None = None,
        docker_cli: str = "docker",
        # How often a rollout looks at the engine: as often as `docker service update
        # --detach=false` does (docker/cli's progress loop, 200 ms), so a deploy is not
        # judged converged later than docker's own; a look costs one service list and
        # two task lists a service on the local manager.
        poll_interval: float = 0.2,
        crash_loop_failures: int = 3,
        swarm_grace: float = 8.0,
        rollback_timeout: float | None = None,
        remove_failed_new_services: bool = True,
        key: AgentKey | None = None,
    ) -> None:
        self._key = key
        self._settings = _Settings(
            docker_cli=docker_cli,
            docker_env=dict(docker_env or {}),
            poll_interval=poll_interval,
            crash_loop_failures=max(1, crash_loop_failures),
            swarm_grace=swarm_grace,
            rollback_timeout=rollback_timeout,
            remove_failed_new_services=remove_failed_new_services,
        )
        # Fail early (at agent start) when no engine answers; each job gets its own client
        # (executors run in worker threads; a requests session is not meant to be shared).
        client = self._client()
        try:
            client.ping()
        finally:
            client.close()

    def _client(self) -> docker.DockerClient:
        return docker.from_env(environment={**os.environ, **self._settings.docker_env})

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        if job.deployment_type not in self.capabilities:
            return ExecutionResult(
                Outcome.FAILED, f"the Swarm executor does not deploy {job.deployment_type!r}"
            )
        if job.teardown:
            return self._teardown(job, report, cancelled)
        try:
            plan = swarm_apply.plan(job)
        except JobError as exc:
            return ExecutionResult(Outcome.FAILED, str(exc))
        return self.deploy_plan(job, plan, report, cancelled)

    def deploy_plan(
        self,
        job: Job,
        plan: StackPlan,
        report: ProgressReporter,
        cancelled: threading.Event,
        *,
        settle: float | None = None,
    ) -> ExecutionResult:
        """Apply `plan` (made from `job`), converge, roll back on failure: the whole
        deployment after planning. `settle` replaces the time a converged stack without an
        update status must stay converged (default: its services' update monitor); the cron
        executor passes 0, its dormant jobs have no task to watch."""
        try:
            client = self._client()
        except docker.errors.DockerException as exc:
            return ExecutionResult(Outcome.FAILED, f"the Docker engine does not answer: {exc}")
        try:
            rendered = self._render(client, job, plan, report)
            if isinstance(rendered, ExecutionResult):
                return rendered
            rollout = _Rollout(
                client, self._settings, job, rendered, report, cancelled, settle=settle
            )
            result = rollout.run()
        except (docker.errors.DockerException, OSError) as exc:
            # The engine went away at a point that has no retry of its own.
            result = ExecutionResult(Outcome.FAILED, f"the Docker engine failed: {exc}")
        finally:
            client.close()
        if len(result.reason) > MAX_REASON:
            result = ExecutionResult(result.outcome, result.reason[: MAX_REASON - 3] + "...")
        return result

    def _render(
        self, client: docker.DockerClient, job: Job, plan: StackPlan, report: ProgressReporter
    ) -> StackPlan | ExecutionResult:
        """The plan with its secret and config versions decided (secrets decrypted in
        memory), or the FAILED result that says which cannot be provided. Changes nothing."""
        try:
            rendered = swarm_objects.render(
                plan, job, self._key, swarm_objects.engine_lookup(client)
            )
        except swarm_objects.ObjectError as exc:
            return ExecutionResult(Outcome.FAILED, str(exc))
        for note in rendered.notes:
            report("plan", note)
        for obj in rendered.objects:
            report("plan", obj.describe())
        return swarm_objects.with_rendering(plan, rendered)

    def _teardown(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        try:
            client = self._client()
            try:
                return swarm_previews.teardown(
                    client,
                    job,
                    report,
                    cancelled,
                    self._settings.docker_cli,
                    self._settings.docker_env,
                )
            finally:
                client.close()
        except (docker.errors.DockerException, OSError) as exc:
            return ExecutionResult(Outcome.FAILED, f"the Docker engine failed: {exc}")

    def live_services(self, service_ids: Collection[str] | None = None) -> list[LiveService]:
        client = self._client()
        try:
            return swarm_status.live_services(client, service_ids)
        finally:
            client.close()

    def watch_changes(self, changed: Callable[[str], None], stop: threading.Event) -> None:
        client = self._client()
        # The event stream blocks in a read: closing the client when `stop` is set ends it.
        threading.Thread(
            target=lambda: stop.wait() or client.close(), name="sami-status-close", daemon=True
        ).start()
        try:
            swarm_status.watch_changes(client, changed, stop)
        finally:
            client.close()

    def list_previews(self) -> list[PreviewStack]:
        client = self._client()
        try:
            return swarm_previews.list_previews(client)
        finally:
            client.close()

    # -- queries (docs/agent-protocol.md, "Queries"): read the swarm, change nothing ----------

    def service_logs(
        self,
        req: queries.LogsRequest,
        emit: Callable[[queries.LogLine], bool],
        cancelled: threading.Event,
    ) -> None:
        client = self._client()
        try:
            swarm_query.service_logs(client, req, emit, cancelled)
        except docker.errors.DockerException as exc:
            raise queries.QueryError("UNAVAILABLE", f"the Docker engine failed: {exc}") from None
        finally:
            client.close()

    def stack_diff(self, job: Job) -> queries.StackDiff:
        client = self._client()
        try:
            return swarm_query.stack_diff(
                client, job, self._settings.docker_cli, self._settings.docker_env
            )
        except docker.errors.DockerException as exc:
            raise queries.QueryError("UNAVAILABLE", f"the Docker engine failed: {exc}") from None
        finally:
            client.close()


@dataclass
class _Rollout:
    client: docker.DockerClient
    settings: _Settings
    job: Job
    plan: StackPlan
    report: ProgressReporter
    cancelled: threading.Event
    seen_ours: set[str] = field(default_factory=set)
    settle: float | None = None

    def __post_init__(self) -> None:
        self.observer = StackObserver(self.client, self.plan.stack, self.plan.services)
        self.progress = ProgressLog(self.report)
        timeout = self.job.converge_timeout if self.job.converge_timeout > 0 else None
        # A job without one (an older control plane): the manifests' default.
        self.timeout = timeout or float(DEFAULT_CONVERGE_TIMEOUT)
        self.deadline = time.monotonic() + self.timeout

    # -- the whole thing -------------------------------------------------------------------
    def run(self) -> ExecutionResult:
        views, err = self._observe_retrying(10.0)
        if views is None:
            return ExecutionResult(Outcome.FAILED, f"the Docker engine does not answer: {err}")
        self.observer.mark_history(views)
        self.progress.baseline(views)
        if self._already_applied(views):
            self.report(
                "apply",
                f"already applied: the services of stack {self.plan.stack} carry "
                f"{LABEL_DEPLOYMENT}={self.plan.deployment_id}; watching, not applying again",
            )
        else:
            refused = self._preflight()
            if refused:
                return ExecutionResult(Outcome.FAILED, refused)
            if self.cancelled.is_set():
                return ExecutionResult(Outcome.CANCELLED, "cancelled before anything was applied")
            try:
                swarm_objects.create_objects(self.client, self.plan, self.report)
            except docker.errors.APIError as exc:
                return ExecutionResult(
                    Outcome.FAILED,
                    f"could not create the stack's secrets and configs: {exc.explanation or exc}",
                )
            try:
                swarm_apply.stack_deploy(
                    self.plan,
                    self.report,
                    docker_cli=self.settings.docker_cli,
                    env=self.settings.docker_env,
                )
            except ApplyError as exc:
                return self._after_apply_error(str(exc))
            # Every service now runs our spec, however fast swarm rolls one back again.
            self.seen_ours.update(self.plan.services)
            self._report_unpruned()
        verdict = self._converge()
        if verdict.kind == "converged":
            self._prune_objects()
            return ExecutionResult(Outcome.SUCCEEDED, verdict.reason)
        if verdict.kind == "superseded":
            return ExecutionResult(Outcome.FAILED, verdict.reason)
        return self._roll_back(verdict)

    def _already_applied(self, views: Views) -> bool:
        for name, view in views.items():
            if view is None or view.labels.get(LABEL_DEPLOYMENT) != self.plan.deployment_id:
                return False
            if name in self.plan.image_services and not view.image.endswith("@" + self.plan.digest):
                return False
        self.seen_ours.update(views)
        return True

    def _preflight(self) -> str:
        try:
            swarm = self.client.info().get("Swarm") or {}
        except (docker.errors.DockerException, OSError) as exc:
            return f"the Docker engine does not answer: {exc}"
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            return (
                "this engine is not a swarm manager (node state "
                f"{swarm.get('LocalNodeState') or 'unknown'}): run the agent next to a manager"
            )
        self.report("apply", f"resolving {self.plan.image} in its registry")
        try:
            found = self.client.api.inspect_distribution(self.plan.image)
        except docker.errors.APIError as exc:
            detail = exc.explanation or str(exc)
            return f"artifact {self.plan.image} is not available from its registry: {detail}"
        except (docker.errors.DockerException, OSError) as exc:
            return f"artifact {self.plan.image} could not be resolved: {exc}"
        digest = (found.get("Descriptor") or {}).get("digest")
        if digest and digest != self.plan.digest:
            return f"the registry answers digest {digest} for {self.plan.image}"
        return ""

    def _after_apply_error(self, error: str) -> ExecutionResult:
        views, _ = self._observe_retrying(5.0)
        if views is not None:
            touched = [
                n
                for n, v in views.items()
                if v is not None and v.labels.get(LABEL_DEPLOYMENT) == self.plan.deployment_id
            ]
            if touched:  # the CLI failed half-way: undo what it changed
                self.seen_ours.update(touched)
                return self._roll_back(Verdict("failed", error))
        return ExecutionResult(Outcome.FAILED, error)

    def _prune_objects(self) -> None:
        """Remove the secret and config versions nothing uses any more. A failure here
        does not undo a success: the next successful deployment tries again."""
        try:
            swarm_objects.prune_objects(self.client, self.plan.stack, self.report)
        except (docker.errors.DockerException, OSError) as exc:
            self.report("cleanup", f"could not remove unused secret and config versions: {exc}")

    def _report_unpruned(self) -> None:
        try:
            extra = self.observer.extra_services()
        except (docker.errors.DockerException, OSError):
            return
        if extra:
            self.report(
                "apply",
                f"left running (no longer in the stack files; not pruned): {', '.join(extra)}",
            )

    # -- converge --------------------------------------------------------------------------
    def _converge(self) -> Verdict:
        stable_since: float | None = None
        pending: dict[str, float] = {}
        last_error = ""
        while True:
            if self.cancelled.is_set():
                return Verdict("cancelled", "cancelled during the rollout")
            now = time.monotonic()
            views, error = safe_observe(self.observer)
            if views is None:
                if error != last_error:
                    self.report("converge", f"the engine did not answer ({error}); retrying")
                    last_error = error
                if now > self.deadline:
                    return Verdict(
                        "failed",
                        f"did not converge within {self.timeout:.0f}s: "
                        f"the engine did not answer: {error}",
                    )
                time.sleep(self.settings.poll_interval)
                continue
            last_error = ""
            self.progress.update("converge", views, self._spec_label, "previous spec")
            verdict, converged = self._evaluate(views, pending, now)
            if verdict is not None:
                return verdict
            if converged:
                window = (
                    self.settle
                    if self.settle is not None
                    else max(
                        (v.monitor for v in views.values() if v is not None and not v.update_state),
                        default=0.0,
                    )
                )
                if stable_since is None:
                    stable_since = now
                    if window >= 1:
                        self.report("converge", f"converged; checking it holds for {window:.0f}s")
                if now - stable_since >= window:
                    return Verdict("converged", self._summary(views))
            else:
                stable_since = None
            if now > self.deadline:
                return Verdict(
                    "failed",
                    f"did not converge within {self.timeout:.0f}s: {self._status(views)}",
                )
            time.sleep(self.settings.poll_interval)

    def _evaluate(
        self, views: Views, pending: dict[str, float], now: float
    ) -> tuple[Verdict | None, bool]:
        all_converged = True
        for name, view in views.items():
            if view is None:
                swarm_name = self.plan.swarm_name(name)
                return Verdict("failed", f"service {swarm_name} does not exist"), False
            label = view.labels.get(LABEL_DEPLOYMENT)
            if label == self.plan.deployment_id:
                self.seen_ours.add(name)
            elif name in self.seen_ours and view.update_state in ROLLBACK_STATES:
                return Verdict("swarm_rollback", self._swarm_rollback_reason(view, views)), False
            else:
                return Verdict(
                    "superseded",
                    f"service {self.plan.swarm_name(name)} was changed by someone else during "
                    f"the rollout (its {LABEL_DEPLOYMENT} is now {label or 'unset'})",
                ), False
            if view.update_state == "paused":
                reason = f"{name}: update paused: {view.update_message}"
                return Verdict("failed", self._with_evidence(reason, views)), False
            failures = self._failures(view)
            if failures and (
                any(t.state == "rejected" for t in failures)
                or len(failures) >= self.settings.crash_loop_failures
            ):
                swarm_acts = view.update_state == "updating" and view.failure_action in (
                    "rollback",
                    "pause",
                )
                first = pending.setdefault(name, now)
                if not swarm_acts or now - first >= self.settings.swarm_grace:
                    what = "rejected" if failures[-1].state == "rejected" else "crash loop"
                    reason = (
                        f"{name}: {what} ({len(failures)} task(s) of the new spec ended): "
                        + failures[-1].failure_reason(view.healthcheck)
                    )
                    return Verdict("failed", reason), False
            converged = (
                view.update_state in (None, "completed")
                and len(view.running_current()) == view.desired()
                and not view.outdated_active()
            )
            all_converged = all_converged and converged
        return None, all_converged

    def _failures(self, view: ServiceView) -> list[TaskView]:
        """Tasks of the new spec that ended since the watch began, oldest first."""
        states = FAILED_STATES if view.mode != "job" else ("failed", "rejected", "orphaned")
        ended = [
            t
            for t in view.tasks
            if t.up_to_date and t.state in states and t.id not in self.observer.history
        ]
        return sorted(ended, key=lambda t: t.updated)

    def _swarm_rollback_reason(self, view: ServiceView, views: Views) -> str:
        reason = f"{view.name}: {view.update_message or 'swarm rolled back the update'}"
        culprit = next((t for t in view.tasks if t.id and t.id in view.update_message), None)
        if culprit is not None:
            return f"{reason}; {culprit.failure_reason(view.healthcheck)}"
        return self._with_evidence(reason, views)

    def _with_evidence(self, reason: str, views: Views) -> str:
        """Add the most recent failure of a task of the new spec (error, health output)."""
        for view in views.values():
            if view is None:
                continue
            ended = sorted(
                (
                    t
                    for t in view.tasks
                    if t.state in FAILED_STATES and t.id not in self.observer.history
                ),
                key=lambda t: t.updated,
            )
            if ended:
                return f"{reason}; {ended[-1].failure_reason(view.healthcheck)}"
        return reason

    def _summary(self, views: Views) -> str:
        parts = [
            f"{n} {len(v.running_current())}/{v.desired()} running"
            for n, v in views.items()
            if v is not None
        ]
        return f"converged: {', '.join(parts)} on {self.plan.image}"

    def _status(self, views: Views) -> str:
        parts: list[str] = []
        for name, view in views.items():
            if view is None:
                parts.append(f"{name} missing")
                continue
            text = f"{name} {len(view.running_current())}/{view.desired()} running (new)"
            if view.update_state:
                text += f", update {view.update_state}"
            parts.append(text)
            for t in view.tasks:
                if t.up_to_date and not t.terminal and t.state != "running":
                    health = ""
                    if t.health is not None:
                        health = f" ({t.health.describe(view.healthcheck)})"
                    parts.append(f"{t.label} {t.state}{health}")
                elif t.up_to_date and t.state == "running" and t not in view.running_current():
                    parts.append(f"{t.label} running, not healthy")
        return "; ".join(parts)

    # -- roll back -------------------------------------------------------------------------
    def _roll_back(self, verdict: Verdict) -> ExecutionResult:
        cancelling = verdict.kind == "cancelled"
        if cancelling:
            self.report("rollback", "cancelled: rolling back to the previous spec")
        else:
            self.report("rollback", f"failed: {verdict.reason}; rolling back")
        views, error = self._observe_retrying(30.0)
        if views is None:
            text = f"{verdict.reason}; could not roll back: the engine did not answer: {error}"
            outcome = Outcome.CANCELLED if cancelling else Outcome.FAILED
            return ExecutionResult(outcome, text)
        rolled: list[str] = []
        removed: list[str] = []
        problems: list[str] = []
        for name, view in views.items():
            if view is None:
                continue
            if view.labels.get(LABEL_DEPLOYMENT) == self.plan.deployment_id:
                if view.previous_labels is not None:
                    problem = self._request_rollback(view)
                    if problem:
                        problems.append(problem)
                    else:
                        rolled.append(name)
                elif self.settings.remove_failed_new_services:
                    problem = self._remove(view)
                    if problem:
                        problems.append(problem)
                    else:
                        removed.append(name)
                else:
                    problems.append(f"{name} has no previous spec to roll back to (left as is)")
            elif name in self.seen_ours and view.update_state in ROLLBACK_STATES:
                self.report("rollback", f"{name}: swarm rolls back on its own (failure_action)")
                rolled.append(name)
        settled, settle_problem = self._settle(rolled) if rolled else (True, "")
        if settle_problem:
            problems.append(settle_problem)
        notes: list[str] = []
        if rolled and settled:
            notes.append(f"rolled back to the previous spec: {', '.join(rolled)}")
        if removed:
            notes.append(
                f"removed (created by this deployment, nothing to roll back to): "
                f"{', '.join(removed)}"
            )
        notes.extend(problems)
        text = "; ".join([verdict.reason, *notes])
        if cancelling:
            outcome = Outcome.CANCELLED
        elif rolled and settled and not problems:
            outcome = Outcome.ROLLED_BACK
        else:
            outcome = Outcome.FAILED
        self.report("rollback", f"{outcome.value}: {text}")
        return ExecutionResult(outcome, text)

    def _request_rollback(self, view: ServiceView) -> str:
        """Ask the engine to roll `view` back to its previous spec; "" when it does."""
        api = self.client.api
        spec: dict[str, Any] = view.spec
        version = view.version
        for _ in range(5):
            try:
                response = api._post_json(
                    api._url("/services/{0}/update", view.id),
                    data=spec,
                    params={"version": version, "rollback": "previous"},
                )
                api._result(response, json=True)
                self.report("rollback", f"{view.name}: rollback to the previous spec requested")
                return ""
            except docker.errors.APIError as exc:
                message = exc.explanation or str(exc)
                if "out of sequence" not in str(message):
                    return f"{view.name}: rollback refused: {message}"
            # The service changed since we looked (swarm's own rollback, most likely).
            try:
                raw = api.inspect_service(view.id)
            except docker.errors.APIError as exc:
                return f"{view.name}: rollback failed: {exc.explanation or exc}"
            labels = (raw.get("Spec") or {}).get("Labels") or {}
            if labels.get(LABEL_DEPLOYMENT) != self.plan.deployment_id:
                self.report("rollback", f"{view.name}: swarm rolls back on its own")
                return ""
            spec, version = raw["Spec"], int(raw["Version"]["Index"])
        return f"{view.name}: rollback failed: the service kept changing"

    def _remove(self, view: ServiceView) -> str:
        try:
            self.client.api.remove_service(view.id)
        except docker.errors.NotFound:
            return ""
        except docker.errors.APIError as exc:
            return f"{view.name}: could not remove it: {exc.explanation or exc}"
        self.report("rollback", f"{view.name}: removed (created by this deployment)")
        return ""

    def _settle(self, rolled: list[str]) -> tuple[bool, str]:
        """Wait until each rolled-back service completed its rollback and runs its previous
        spec again, healthy."""
        limit = self.settings.rollback_timeout
        timeout = limit if limit is not None else max(60.0, self.timeout)
        deadline = time.monotonic() + timeout
        views: Views = {}
        while True:
            observed, _ = safe_observe(self.observer)
            if observed is not None:
                views = observed
                self.progress.update("rollback", views, self._spec_label, "rolled-back spec")
                done = True
                for name in rolled:
                    view = views.get(name)
                    if view is None:
                        continue
                    if view.update_state == "rollback_paused":
                        return False, f"{name}: rollback paused: {view.update_message}"
                    done = done and (
                        view.labels.get(LABEL_DEPLOYMENT) != self.plan.deployment_id
                        and view.update_state == "rollback_completed"
                        and len(view.running_current()) == view.desired()
                        and not view.outdated_active()
                    )
                if done:
                    return True, ""
            if time.monotonic() > deadline:
                status = self._status({n: views.get(n) for n in rolled}) if views else ""
                return False, f"the rollback did not settle within {timeout:.0f}s: {status}"
            time.sleep(self.settings.poll_interval)

    # -- helpers ---------------------------------------------------------------------------
    def _spec_label(self, view: ServiceView) -> str:
        ours = view.labels.get(LABEL_DEPLOYMENT) == self.plan.deployment_id
        return "new" if ours else "previous spec"

    def _observe_retrying(
        self, patience: float
    ) -> tuple[dict[str, ServiceView | None] | None, str]:
        give_up = time.monotonic() + patience
        while True:
            views, error = safe_observe(self.observer)
            if views is not None or time.monotonic() > give_up:
                return views, error
            time.sleep(self.settings.poll_interval)
