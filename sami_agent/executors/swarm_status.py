"""What the Sami services on this swarm run now (docs/status.md), and which of them change.

Read with the Docker SDK: the services carrying the sami.deployment-id label, each with its
tasks (one task list a service) and, for the running containers on this node, their health.
Changes come from Docker's event stream (`service` events for the spec and update status,
`container` events of swarm tasks for starts, exits and health on this node); the agent's
connection loop debounces them and reads only the services named, so an idle swarm costs a
blocked read on the event stream, not a polling loop.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

import docker

from sami_agent.executor import LiveService
from sami_agent.executors.swarm_apply import LABEL_DEPLOYMENT, LABEL_DIGEST, STACK_NAMESPACE_LABEL
from sami_agent.executors.swarm_watch import _mode

SERVICE_ID_LABEL = "com.docker.swarm.service.id"
# Container events that change what `live_services` says of a task.
CONTAINER_ACTIONS = ("start", "die", "kill", "oom", "destroy", "health_status")
# Every event action watched: the service's own, and those. (The engine matches
# `health_status` to `health_status: healthy` and the like.)
WATCHED_ACTIONS = ("create", "update", "remove", *CONTAINER_ACTIONS)


def parse_time(text: str) -> float:
    """Swarm's RFC 3339 timestamps (nanoseconds, `Z`) as epoch seconds; 0.0 if unreadable."""
    if not text:
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    try:
        moment = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return moment.timestamp() + (int(digits.ljust(6, "0")) / 1e6 if digits else 0.0)


def outside_change(spec: Mapping[str, Any], previous: Mapping[str, Any] | None) -> str:
    """What changed since the previous spec when both carry the same deployment label (so no
    Sami deployment made the change): "replicas 3 -> 1", "image", "spec"; "" otherwise."""
    if previous is None or previous == spec:
        return ""
    labels = spec.get("Labels") or {}
    before = previous.get("Labels") or {}
    if labels.get(LABEL_DEPLOYMENT) != before.get(LABEL_DEPLOYMENT):
        return ""
    changes = []
    _, replicas = _mode(spec)
    _, old_replicas = _mode(previous)
    if replicas != old_replicas:
        changes.append(f"replicas {old_replicas} -> {replicas}")
    if _image(spec) != _image(previous):
        changes.append("image")
    return ", ".join(changes) or "spec"


def _image(spec: Mapping[str, Any]) -> str:
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return str(container.get("Image", ""))


def live_services(
    client: docker.DockerClient, service_ids: Collection[str] | None = None
) -> list[LiveService]:
    """The Sami services (of `service_ids`, if given) as they run now."""
    api = client.api
    found = []
    for raw in api.services(filters={"label": LABEL_DEPLOYMENT}):
        if service_ids is not None and raw["ID"] not in service_ids:
            continue
        found.append(_live_service(client, raw))
    return sorted(found, key=lambda s: (s.stack_name, s.service))


def _live_service(client: docker.DockerClient, raw: Mapping[str, Any]) -> LiveService:
    spec = raw.get("Spec") or {}
    labels = spec.get("Labels") or {}
    stack = labels.get(STACK_NAMESPACE_LABEL, "")
    name = spec.get("Name", "")
    if stack and name.startswith(stack + "_"):
        name = name[len(stack) + 1 :]
    mode, replicas = _mode(spec)
    tasks = client.api.tasks(filters={"service": raw["ID"], "desired-state": "running"})
    tasks = [t for t in tasks if t.get("ServiceID") == raw["ID"]]
    running = [t for t in tasks if (t.get("Status") or {}).get("State") == "running"]
    desired = replicas if mode == "replicated" else len({t.get("NodeID") for t in tasks})
    changed = max(
        [parse_time(raw.get("UpdatedAt", ""))]
        + [parse_time((t.get("Status") or {}).get("Timestamp", "")) for t in tasks]
    )
    update = raw.get("UpdateStatus") or {}
    return LiveService(
        service_id=raw["ID"],
        stack_name=stack,
        service=name,
        deployment_id=labels.get(LABEL_DEPLOYMENT, ""),
        label_digest=labels.get(LABEL_DIGEST, ""),
        image=_image(spec),
        desired_replicas=desired,
        running_replicas=len(running),
        unhealthy_tasks=sum(1 for t in running if not _healthy(client, t)),
        update_state=update.get("State") or "",
        update_message=update.get("Message") or "",
        change_time=changed,
        outside_change=outside_change(spec, raw.get("PreviousSpec")),
    )


def _healthy(client: docker.DockerClient, task: Mapping[str, Any]) -> bool:
    """A running task's container is healthy unless its health check says otherwise (a
    container on another node cannot be inspected from here: Swarm keeps a task `starting`
    until its check passes and replaces it when it fails, so `running` is the signal)."""
    container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    if not container:
        return True
    try:
        state = client.api.inspect_container(container).get("State") or {}
    except (docker.errors.NotFound, docker.errors.APIError):
        return True
    health = (state.get("Health") or {}).get("Status")
    return health in (None, "", "healthy")


def watch_changes(
    client: docker.DockerClient, changed: Callable[[str], None], stop: threading.Event
) -> None:
    """Call `changed(service_id)` for each service or swarm-task container event until
    `stop` is set (the caller closes `client` to interrupt a blocked read)."""
    events = client.events(
        decode=True,
        # Filtered by the engine: a health check's every run is three exec_* events per
        # container, which an idle agent should not even read.
        filters={"type": ["service", "container"], "event": list(WATCHED_ACTIONS)},
    )
    try:
        for event in events:
            if stop.is_set():
                return
            service_id = _service_of(event)
            if service_id:
                changed(service_id)
    finally:
        with contextlib.suppress(Exception):
            events.close()


def _service_of(event: Mapping[str, Any]) -> str:
    actor = event.get("Actor") or {}
    if event.get("Type") == "service":
        return str(actor.get("ID") or "")
    if event.get("Type") == "container":
        action = str(event.get("Action") or "").split(":")[0]
        if action in CONTAINER_ACTIONS:
            return str((actor.get("Attributes") or {}).get(SERVICE_ID_LABEL) or "")
    return ""
