"""Watching a stack with the Docker SDK: what runs, on which spec, how healthy, and the
progress lines that tell a CI log about it as it happens.

How "the new spec" is told apart from the previous revision: tasks are listed with the
daemon's `_up-to-date` filter, the one `docker service update`/`docker stack deploy
--detach=false` use for their own progress bars. The daemon answers it with swarmkit's
`orchestrator.IsTaskDirty(service, task)`, i.e. the orchestrator's own notion of "this task
runs the service's current spec" (moby daemon/cluster/filters.go, swarmkit
manager/controlapi/task.go). Together with the service's `sami.deployment-id` label (the
current spec is ours) this is never satisfied by the previous revision.

Health: swarm keeps a task in `starting` until its container's health check passes (seen on
engine 20.10: `starting` -> `running` only once `State.Health.Status` is `healthy`), and
fails/replaces it when the container turns `unhealthy`. The health check's last result (exit
code and output) is read from container inspect, which works for containers on this node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker

from sami_agent.executor import ProgressReporter
from sami_agent.executors.swarm_apply import STACK_NAMESPACE_LABEL

# Task states (API strings) in lifecycle order; see moby api/types/swarm/task.go.
ACTIVE_STATES = (
    "new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting",
    "running",
)  # fmt: skip
TERMINAL_STATES = ("complete", "shutdown", "failed", "rejected", "remove", "orphaned")
# A long-running service's task that ends in one of these has failed (`complete` is a
# container that exited 0: still not what a service is for).
FAILED_STATES = ("failed", "rejected", "complete", "orphaned")
ROLLBACK_STATES = ("rollback_started", "rollback_paused", "rollback_completed")
DEFAULT_MONITOR = 5.0  # swarm's default UpdateConfig.Monitor


@dataclass
class Health:
    status: str  # starting | healthy | unhealthy
    exit_code: int | None = None
    output: str = ""

    def describe(self, check: str | None) -> str:
        if self.status != "unhealthy":
            return self.status
        what = f"health check `{check}`" if check else "health check"
        detail = f"{what} failed"
        if self.exit_code is not None:
            detail += f" (exit {self.exit_code})"
        if self.output:
            detail += f": {self.output}"
        return f"unhealthy: {detail}"


@dataclass
class TaskView:
    id: str
    label: str  # web.1, or web.<node> for a global service
    state: str
    desired: str
    err: str
    message: str
    container_id: str
    exit_code: int | None
    up_to_date: bool
    node: str
    updated: str = ""  # Status.Timestamp (RFC 3339): orders events of the same service
    health: Health | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def shown_state(self) -> str:
        """The state as progress lines show it: a task swarm is stopping is `stopping`."""
        if self.state in ACTIVE_STATES and self.desired in ("shutdown", "remove"):
            return "stopping"
        return self.state

    def failure_reason(self, check: str | None) -> str:
        if self.err:
            return f"{self.label}: {self.err}"
        if self.health is not None and self.health.status == "unhealthy":
            return f"{self.label}: container {self.health.describe(check)}"
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
        return f"{self.label}: task {self.state}{code}: {self.message}"


@dataclass
class ServiceView:
    name: str  # compose name (without the stack prefix)
    id: str
    version: int
    labels: dict[str, str]
    previous_labels: dict[str, str] | None  # None: no previous spec
    update_state: str | None
    update_message: str
    mode: str  # replicated | global | job
    replicas: int
    failure_action: str
    monitor: float
    healthcheck: str | None
    image: str
    spec: dict[str, Any]
    tasks: list[TaskView] = field(default_factory=list)

    def desired(self) -> int:
        if self.mode == "replicated":
            return self.replicas
        if self.mode == "global":
            return len({t.node for t in self.tasks if t.desired == "running" and t.node})
        return 0

    def running_current(self) -> list[TaskView]:
        """Tasks of the current spec that run, healthy when a health check exists."""
        return [
            t
            for t in self.tasks
            if t.up_to_date
            and t.desired == "running"
            and t.state == "running"
            and (t.health is None or t.health.status == "healthy")
        ]

    def outdated_active(self) -> list[TaskView]:
        """Tasks of another spec that swarm still wants running."""
        return [
            t
            for t in self.tasks
            if not t.up_to_date and t.desired == "running" and t.state in ACTIVE_STATES
        ]


def _healthcheck_text(spec: Mapping[str, Any]) -> str | None:
    hc = (spec.get("TaskTemplate", {}).get("ContainerSpec", {}) or {}).get("Healthcheck") or {}
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return " ".join(test[1:])
    if test[0] == "CMD":
        return " ".join(test[1:])
    return " ".join(test)


def _mode(spec: Mapping[str, Any]) -> tuple[str, int]:
    mode = spec.get("Mode") or {}
    if "Replicated" in mode:
        return "replicated", int((mode["Replicated"] or {}).get("Replicas", 1) or 0)
    if "Global" in mode:
        return "global", 0
    return "job", 0


class StackObserver:
    """Reads the state of the stack's services and tasks (one call per `observe()`)."""

    def __init__(self, client: docker.DockerClient, stack: str, services: Iterable[str]) -> None:
        self.client = client
        self.stack = stack
        self.services = tuple(services)
        self._health: dict[str, Health] = {}
        self._final_health_read: set[str] = set()
        # Tasks that were already over when watching began: history, not news.
        self.history: set[str] = set()

    def swarm_name(self, service: str) -> str:
        return f"{self.stack}_{service}"

    def observe(self) -> dict[str, ServiceView | None]:
        api = self.client.api
        found = {
            s["Spec"]["Name"]: s
            for s in api.services(filters={"label": f"{STACK_NAMESPACE_LABEL}={self.stack}"})
        }
        views: dict[str, ServiceView | None] = {}
        for name in self.services:
            raw = found.get(self.swarm_name(name))
            views[name] = None if raw is None else self._service_view(name, raw)
        return views

    def extra_services(self) -> list[str]:
        """Services of the stack that its files no longer define (left alone: no --prune)."""
        api = self.client.api
        mine = {self.swarm_name(n) for n in self.services}
        names = [
            s["Spec"]["Name"]
            for s in api.services(filters={"label": f"{STACK_NAMESPACE_LABEL}={self.stack}"})
        ]
        return sorted(n for n in names if n not in mine)

    def mark_history(self, views: Mapping[str, ServiceView | None]) -> None:
        for view in views.values():
            if view is not None:
                self.history.update(t.id for t in view.tasks if t.terminal)

    def _service_view(self, name: str, raw: Mapping[str, Any]) -> ServiceView:
        spec = raw.get("Spec") or {}
        previous = raw.get("PreviousSpec")
        update = raw.get("UpdateStatus") or {}
        mode, replicas = _mode(spec)
        update_config = spec.get("UpdateConfig") or {}
        monitor_ns = update_config.get("Monitor") or 0
        view = ServiceView(
            name=name,
            id=raw["ID"],
            version=int(raw["Version"]["Index"]),
            labels=dict(spec.get("Labels") or {}),
            previous_labels=None if previous is None else dict(previous.get("Labels") or {}),
            update_state=update.get("State") or None,
            update_message=update.get("Message") or "",
            mode=mode,
            replicas=replicas,
            failure_action=update_config.get("FailureAction") or "pause",
            monitor=monitor_ns / 1e9 if monitor_ns else DEFAULT_MONITOR,
            healthcheck=_healthcheck_text(spec),
            image=((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""),
            spec=dict(spec),
        )
        api = self.client.api
        current = {t["ID"] for t in api.tasks(filters={"service": raw["ID"], "_up-to-date": "1"})}
        for t in api.tasks(filters={"service": raw["ID"]}):
            if t.get("ServiceID") != raw["ID"]:
                continue
            view.tasks.append(self._task_view(name, t, t["ID"] in current))
        view.tasks.sort(key=lambda t: (t.label, t.id))
        return view

    def _task_view(self, service: str, t: Mapping[str, Any], up_to_date: bool) -> TaskView:
        status = t.get("Status") or {}
        cstatus = status.get("ContainerStatus") or {}
        slot = t.get("Slot")
        node = t.get("NodeID") or ""
        label = f"{service}.{slot}" if slot else f"{service}.{node[:12] or t['ID'][:12]}"
        exit_code = cstatus.get("ExitCode")
        view = TaskView(
            id=t["ID"],
            label=label,
            state=status.get("State", ""),
            desired=t.get("DesiredState", ""),
            err=(status.get("Err") or "").strip(),
            message=status.get("Message") or "",
            container_id=cstatus.get("ContainerID") or "",
            exit_code=int(exit_code) if exit_code is not None else None,
            up_to_date=up_to_date,
            node=node,
            updated=status.get("Timestamp") or "",
        )
        view.health = self._task_health(view)
        return view

    def _task_health(self, task: TaskView) -> Health | None:
        """The container's health, read while it matters: while the task starts, once when it
        runs, and once more when a task that was not healthy ends (for the last check's
        output). A task swarm is stopping is not inspected: a stopping container's health
        says nothing about the release."""
        cached = self._health.get(task.id)
        if not task.container_id or task.id in self.history:
            return cached
        if task.terminal:
            if task.id in self._final_health_read or cached is None or cached.status == "healthy":
                return cached
            self._final_health_read.add(task.id)
        else:
            stopping = task.desired != "running" or task.state not in ("starting", "running")
            healthy = task.state == "running" and cached is not None and cached.status == "healthy"
            if stopping or healthy:
                return cached
        health = self._inspect_health(task.container_id)
        if health is not None:
            self._health[task.id] = health
        return self._health.get(task.id)

    def _inspect_health(self, container_id: str) -> Health | None:
        try:
            state = self.client.api.inspect_container(container_id).get("State") or {}
        except docker.errors.NotFound:
            return None  # on another node, or already removed
        except docker.errors.APIError:
            return None
        raw = state.get("Health")
        if not raw:
            return None
        log = raw.get("Log") or []
        # A check killed with the container (exit 137: SIGKILL while it stops) says nothing
        # about the service; the check before it says why it was stopped.
        meaningful = [entry for entry in log if entry.get("ExitCode") != 137]
        last = meaningful[-1] if meaningful else (log[-1] if log else {})
        output = " ".join(str(last.get("Output") or "").split())
        if len(output) > 300:
            output = output[:297] + "..."
        code = last.get("ExitCode")
        return Health(
            status=raw.get("Status") or "",
            exit_code=int(code) if code is not None and log else None,
            output=output,
        )


class ProgressLog:
    """Turns successive observations into progress lines, changes only."""

    def __init__(self, report: ProgressReporter) -> None:
        self.report = report
        self._tasks: dict[str, tuple[str, str, str]] = {}
        self._counts: dict[str, str] = {}
        self._updates: dict[str, tuple[str | None, str]] = {}

    def baseline(self, views: Mapping[str, ServiceView | None]) -> None:
        """Remember what is there before anything happens, without reporting it."""
        for view in views.values():
            if view is None:
                continue
            self._updates[view.name] = (view.update_state, view.update_message)
            for t in view.tasks:
                self._tasks[t.id] = self._key(t, view)

    @staticmethod
    def _key(t: TaskView, view: ServiceView) -> tuple[str, str, str]:
        health = ""
        state = t.shown_state
        if t.health is not None:
            if state in ("starting", "running"):
                health = t.health.describe(view.healthcheck)
                if t.health.status == "starting":
                    health = "health: starting"
            elif t.terminal and t.health.status == "unhealthy":
                health = t.health.describe(view.healthcheck)
        return (state, health, t.err)

    def update(
        self,
        phase: str,
        views: Mapping[str, ServiceView | None],
        count_label: Callable[[ServiceView], str],
        other_spec: str,
    ) -> None:
        """Report what changed. `count_label(view)` names the service's current spec in the
        replica count ("new"); `other_spec` marks tasks of any other spec."""
        for view in views.values():
            if view is None:
                continue
            update = (view.update_state, view.update_message)
            if self._updates.get(view.name) != update and view.update_state:
                message = f": {view.update_message}" if view.update_message else ""
                self.report(phase, f"{view.name} update {view.update_state}{message}")
            self._updates[view.name] = update
            for t in view.tasks:
                key = self._key(t, view)
                old = self._tasks.get(t.id)
                if old == key:
                    continue
                self._tasks[t.id] = key
                state, health, err = key
                text = state if old is None or old[0] == state else f"{old[0]} → {state}"
                if health:
                    text += f" ({health})"
                if err and (old is None or old[2] != err):
                    text += f": {err}"
                if not t.up_to_date:
                    text += f" ({other_spec})"
                self.report(phase, f"{t.label} {text}")
            count = f"{view.name} {len(view.running_current())}/{view.desired()} running"
            if self._counts.get(view.name) != count:
                self._counts[view.name] = count
                self.report(phase, f"{count} ({count_label(view)})")


def safe_observe(observer: StackObserver) -> tuple[dict[str, ServiceView | None] | None, str]:
    """observe(), or (None, the error) when the engine does not answer right now."""
    try:
        return observer.observe(), ""
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        return None, str(exc) or type(exc).__name__
