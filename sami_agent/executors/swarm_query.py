"""Answers to the control plane's queries about the swarm (docs/agent-protocol.md,
"Queries"): a service's logs, and the plan of a deployment. Nothing here changes the swarm.

The plan is computed from what `docker stack deploy` would be given — the same files and
override `swarm_apply.stack_deploy` writes (the variables filled, the artifact pinned by
digest, Sami's labels, the secret and config versions; a plan carries no ciphertext, so a
secret version is named after the object that holds it on the swarm, else
`<stack>_<name>_v<version>`, and nothing is decrypted or created),
merged and interpolated by the docker CLI itself (`docker stack config`) — compared with the
services the engine runs now. Sami's own labels (`sami.*`) change on every deployment and are
left out of the comparison; environment variables are compared by name and value but shown
by name only (values often hold secrets, and a plan is shown to CI logs).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import docker
import docker.errors
import urllib3
import yaml

from sami_agent.executor import Job
from sami_agent.executors import swarm_apply, swarm_objects
from sami_agent.executors.swarm_apply import STACK_NAMESPACE_LABEL, JobError
from sami_agent.queries import (
    FieldChange,
    LogLine,
    LogsRequest,
    QueryError,
    ServiceChange,
    StackDiff,
)

_CONFIG_TIMEOUT = 60.0
_TASK_ID = "com.docker.swarm.task.id="


# -- logs ----------------------------------------------------------------------------------

# A non-follow read that gets no data for this long is ended (see _one_service_logs).
STALL_SECONDS = 10.0


def service_logs(
    client: docker.DockerClient,
    req: LogsRequest,
    emit: Callable[[LogLine], bool],
    cancelled: threading.Event,
) -> None:
    """Send the logs of the stack's services (or of one) to `emit` (thread-safe; returns
    False to stop) until they end (or, following, until `cancelled` is set). One thread per
    swarm service: Docker streams each service's logs on its own."""
    stack = req.stack_name
    found = client.api.services(filters={"label": f"{STACK_NAMESPACE_LABEL}={stack}"})
    names = sorted(s["Spec"]["Name"] for s in found)
    if req.service:
        names = [n for n in names if n == f"{stack}_{req.service}"]
    if not names:
        what = f"service {stack}_{req.service}" if req.service else f"stack {stack}"
        raise QueryError("NOT_FOUND", f"{what} does not run on this swarm (not deployed yet?)")
    stop = threading.Event()
    errors: list[QueryError] = []

    def keep_going(line: LogLine) -> bool:
        if stop.is_set() or not emit(line):
            stop.set()
            return False
        return True

    def one(name: str) -> None:
        try:
            _one_service_logs(client, name, req, keep_going, cancelled, stop)
        except QueryError as exc:
            errors.append(exc)
            stop.set()
        except (docker.errors.DockerException, OSError, urllib3.exceptions.HTTPError) as exc:
            errors.append(QueryError("UNAVAILABLE", f"the Docker engine failed: {exc}"))
            stop.set()

    threads = [
        threading.Thread(target=one, args=(n,), name="sami-logs", daemon=True) for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors and not cancelled.is_set():
        raise errors[0]


def _one_service_logs(
    client: docker.DockerClient,
    name: str,
    req: LogsRequest,
    emit: Callable[[LogLine], bool],
    cancelled: threading.Event,
    stop: threading.Event,
) -> None:
    api = client.api
    try:
        svc = api.inspect_service(name)
    except docker.errors.NotFound:
        return  # removed meanwhile
    since = 0
    if req.since is not None:
        since = max(0, int(datetime.now().timestamp() - req.since))
    params = {
        "details": True,
        "follow": req.follow,
        "stdout": True,
        "stderr": True,
        "since": since,
        "timestamps": True,
        "tail": str(req.tail) if req.tail > 0 else "all",
    }
    # What APIClient.service_logs does, but demultiplexed by stream (its helper drops
    # whether a line came from stdout or stderr).
    # A follow may be quiet for as long as the service is: no read timeout (a cancel ends it,
    # close_when_stopped). A read that is not a follow keeps the client's timeout as a
    # backstop behind the stall guard.
    timeout: dict[str, Any] = {"timeout": None} if req.follow else {}
    res = api._get(api._url("/services/{0}/logs", svc["ID"]), params=params, stream=True, **timeout)
    api._raise_for_status(res)
    tasks = _TaskNames(client, name)
    done = threading.Event()
    last_data = [time.monotonic()]
    stalled = threading.Event()

    def close_when_stopped() -> None:
        # A follow blocks in a read: closing the response is what ends it. A read that is not
        # a follow must end by itself, but Swarm's log broker can stop sending a large tail
        # without ending the response (seen on Docker 20.10 with `docker service logs` too):
        # past STALL_SECONDS without data it is ended, and the caller told why.
        while not done.is_set():
            if cancelled.wait(0.2) or stop.is_set():
                _abort(res)
                return
            if not req.follow and time.monotonic() - last_data[0] > STALL_SECONDS:
                stalled.set()
                _abort(res)
                return

    threading.Thread(target=close_when_stopped, name="sami-logs-cancel", daemon=True).start()
    tty = bool(svc["Spec"]["TaskTemplate"].get("ContainerSpec", {}).get("TTY", False))
    try:
        for stream, data in _frames(res, tty):
            last_data[0] = time.monotonic()
            for raw in data.decode("utf-8", "replace").splitlines():
                if not emit(_parse_line(raw, stream, tasks)):
                    return
            if cancelled.is_set() or stop.is_set():
                return
    except (OSError, ValueError, AttributeError, urllib3.exceptions.HTTPError) as exc:
        if not (cancelled.is_set() or stop.is_set() or stalled.is_set()):
            raise QueryError("UNAVAILABLE", f"the Docker engine ended the logs: {exc}") from None
    finally:
        done.set()
        res.close()
    if stalled.is_set() and not (cancelled.is_set() or stop.is_set()):
        raise QueryError(
            "UNAVAILABLE",
            f"the Docker engine stopped sending the logs of {name} for {STALL_SECONDS:.0f}s "
            "without ending them (Swarm's log broker stalls on some large reads): the lines "
            "above are what arrived; ask for fewer with --tail or --since",
        )


def _abort(res: Any) -> None:
    """End a log response from another thread. Closing it is not enough: a read blocked in
    the reading thread goes on waiting (until the client's 60 s timeout, whose error then
    ended the query as if it were complete). Shutting the socket down wakes the read at
    once, with the end of the stream."""
    raw = getattr(res, "raw", None)
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is None:  # where urllib3 keeps no connection: through http.client's file
        fp = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    res.close()


def _frames(res: Any, tty: bool) -> Iterator[tuple[str, bytes]]:
    """(stdout|stderr, bytes) of a multiplexed log stream (Docker's 8-byte frame header:
    the stream, 3 zero bytes, the payload's length), read through the HTTP response (it is
    chunked: the SDK's raw-socket reader does not apply)."""
    if tty:  # not multiplexed: one stream
        for data in res.raw.stream(4096, decode_content=False):
            yield "stdout", data
        return
    while True:
        header = res.raw.read(8)
        if len(header) < 8:
            return
        length = int.from_bytes(header[4:8], "big")
        data = res.raw.read(length) if length else b""
        yield ("stderr" if header[0] == 2 else "stdout"), data


class _TaskNames:
    """Task id -> `SERVICE.SLOT.ID` (as `docker service logs` names them), read on demand."""

    def __init__(self, client: docker.DockerClient, service: str) -> None:
        self.client = client
        self.service = service
        self.names: dict[str, str] = {}

    def name(self, task_id: str) -> str:
        if task_id not in self.names:
            try:
                for t in self.client.api.tasks(filters={"service": self.service}):
                    slot = t.get("Slot") or t.get("NodeID", "")[:12]
                    self.names[t["ID"]] = f"{self.service}.{slot}.{t['ID'][:12]}"
            except docker.errors.DockerException:
                pass
            self.names.setdefault(task_id, f"{self.service}.{task_id[:12]}")
        return self.names[task_id]


def _parse_line(raw: str, stream: str, tasks: _TaskNames) -> LogLine:
    """`TIMESTAMP DETAILS MESSAGE` (timestamps and details asked for): DETAILS is
    comma-separated `key=value`, among them the task id."""
    stamp, _, rest = raw.partition(" ")
    when = _timestamp(stamp)
    if when is None:
        return LogLine("", stream, None, raw)
    task = ""
    details, sep, text = rest.partition(" ")
    if _TASK_ID in details:
        for item in details.split(","):
            if item.startswith(_TASK_ID):
                task = tasks.name(item.removeprefix(_TASK_ID))
    else:
        text = rest
    if not sep and _TASK_ID in details:
        text = ""
    return LogLine(task, stream, when, text)


def _timestamp(stamp: str) -> datetime | None:
    # RFC 3339 with nanoseconds: keep microseconds (datetime's precision).
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    head, _, frac = stamp[:-1].partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    except ValueError:
        return None


# -- plan ----------------------------------------------------------------------------------


def stack_diff(
    client: docker.DockerClient,
    job: Job,
    docker_cli: str = "docker",
    env: Mapping[str, str] | None = None,
) -> StackDiff:
    """What `docker stack deploy` of `job` would change, from the engine's current view."""
    try:
        plan = swarm_apply.plan(job)
        rendered = swarm_objects.render(
            plan,
            job,
            None,
            swarm_objects.engine_lookup(client),
            find=swarm_objects.engine_find(client),
        )
    except (JobError, swarm_objects.ObjectError) as exc:
        raise QueryError("FAILED_PRECONDITION", str(exc)) from None
    plan = swarm_objects.with_rendering(plan, rendered)
    config = merged_config(plan, docker_cli, env)
    desired: dict[str, Any] = config.get("services") or {}
    running = {
        s["Spec"]["Name"]: s["Spec"]
        for s in client.api.services(filters={"label": f"{STACK_NAMESPACE_LABEL}={plan.stack}"})
    }
    top = {"secrets": config.get("secrets") or {}, "configs": config.get("configs") or {}}
    out: list[ServiceChange] = []
    for compose_name, svc in desired.items():
        name = plan.swarm_name(compose_name)
        spec = running.get(name)
        if spec is None:
            out.append(ServiceChange(name, "create", tuple(_created(svc, plan.stack, top))))
            continue
        changes = tuple(_changes(spec, svc, plan.stack, top))
        out.append(ServiceChange(name, "update" if changes else "unchanged", changes))
    mine = {plan.swarm_name(n) for n in desired}
    for name in sorted(set(running) - mine):
        out.append(ServiceChange(name, "not_pruned"))
    return StackDiff(plan.stack, plan.image, tuple(out))


def merged_config(
    plan: swarm_apply.StackPlan, docker_cli: str, env: Mapping[str, str] | None
) -> dict[str, Any]:
    """The stack files plus Sami's override, merged and interpolated by the docker CLI."""
    try:
        proc = swarm_apply.run_stack_cli(plan, ["config"], [], docker_cli, env, _CONFIG_TIMEOUT)
    except FileNotFoundError:
        raise QueryError(
            "FAILED_PRECONDITION", f"the docker CLI ({docker_cli}) is not installed"
        ) from None
    except subprocess.TimeoutExpired:
        raise QueryError("UNAVAILABLE", "docker stack config did not finish") from None
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())
        raise QueryError("FAILED_PRECONDITION", f"docker stack config failed: {detail}")
    doc = yaml.safe_load(proc.stdout) or {}
    if not isinstance(doc, dict):
        raise QueryError("FAILED_PRECONDITION", "docker stack config printed no mapping")
    return doc


def _desired_fields(svc: Mapping[str, Any], stack: str, top: Mapping[str, Any]) -> dict[str, str]:
    deploy = svc.get("deploy") or {}
    mode = deploy.get("mode") or "replicated"
    replicas = deploy.get("replicas", 1) if mode == "replicated" else None
    return {
        "image": str(svc.get("image") or ""),
        "replicas": "" if replicas is None else str(replicas),
        "ports": _join(_compose_ports(svc.get("ports") or [])),
        "labels": _join(_labels(deploy.get("labels"))),
        "secrets": _join(_refs(svc.get("secrets") or [], stack, top["secrets"])),
        "configs": _join(_refs(svc.get("configs") or [], stack, top["configs"])),
    }


def _current_fields(spec: Mapping[str, Any]) -> dict[str, str]:
    task = spec.get("TaskTemplate") or {}
    container = task.get("ContainerSpec") or {}
    mode = spec.get("Mode") or {}
    replicated = mode.get("Replicated")
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return {
        "image": str(container.get("Image") or ""),
        "replicas": str(replicated.get("Replicas", 1)) if replicated is not None else "",
        "ports": _join(
            f"{p.get('PublishedPort', '')}:{p.get('TargetPort', '')}/{p.get('Protocol', 'tcp')}"
            for p in ports
        ),
        "labels": _join(_labels(spec.get("Labels"))),
        "secrets": _join(s.get("SecretName", "") for s in container.get("Secrets") or []),
        "configs": _join(c.get("ConfigName", "") for c in container.get("Configs") or []),
    }


def _changes(
    spec: Mapping[str, Any], svc: Mapping[str, Any], stack: str, top: Mapping[str, Any]
) -> Iterable[FieldChange]:
    before = _current_fields(spec)
    after = _desired_fields(svc, stack, top)
    for key, new in after.items():
        old = before[key]
        if key == "image" and _same_image(old, new):
            continue
        if old != new:
            yield FieldChange(key, old, new)
    env = _env_change(
        (spec.get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Env") or [],
        svc.get("environment"),
    )
    if env is not None:
        yield env


def _created(svc: Mapping[str, Any], stack: str, top: Mapping[str, Any]) -> Iterable[FieldChange]:
    for key, value in _desired_fields(svc, stack, top).items():
        if value:
            yield FieldChange(key, "", value)
    env = _env_change([], svc.get("environment"))
    if env is not None:
        yield env


def _same_image(current: str, desired: str) -> bool:
    """`docker stack deploy` pins an unpinned image (`redis:7`) to its digest: the running
    `redis:7@sha256:…` is then the same as the desired `redis:7`."""
    if current == desired:
        return True
    if "@" in desired:
        return current.split("@", 1)[1:] == desired.split("@", 1)[1:] and _repo(current) == _repo(
            desired
        )
    return current.split("@", 1)[0] == desired


def _repo(image: str) -> str:
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def _env_change(current: list[str], desired: Any) -> FieldChange | None:
    """Names added (+), changed (~) and removed (-); values are never shown."""
    now = dict(item.partition("=")[::2] for item in current)
    want: dict[str, str] = {}
    if isinstance(desired, Mapping):
        want = {str(k): "" if v is None else str(v) for k, v in desired.items()}
    elif isinstance(desired, list):
        want = dict(str(item).partition("=")[::2] for item in desired)
    added = sorted(set(want) - set(now))
    removed = sorted(set(now) - set(want))
    changed = sorted(k for k in set(want) & set(now) if want[k] != now[k])
    if not (added or removed or changed):
        return None
    after = [f"+{k}" for k in added] + [f"~{k}" for k in changed] + [f"-{k}" for k in removed]
    return FieldChange("env", "", " ".join(after))


def _compose_ports(ports: list[Any]) -> Iterable[str]:
    for p in ports:
        if isinstance(p, Mapping):
            yield f"{p.get('published', '')}:{p.get('target', '')}/{p.get('protocol', 'tcp')}"
        else:
            published, _, target = str(p).rpartition(":")
            target, _, proto = target.partition("/")
            yield f"{published}:{target}/{proto or 'tcp'}"


def _labels(labels: Any) -> Iterable[str]:
    if isinstance(labels, list):
        labels = dict(str(x).partition("=")[::2] for x in labels)
    for key, value in (labels or {}).items():
        if key.startswith(("sami.", "com.docker.stack.")):
            continue  # Sami's own (new on every deployment) and docker stack's
        yield f"{key}={value}"


def _refs(items: list[Any], stack: str, declared: Mapping[str, Any]) -> Iterable[str]:
    """The swarm names of a service's secrets or configs: `STACK_SOURCE` unless the
    top-level declaration names it (`name:`) or it is external."""
    for item in items:
        source = item.get("source", "") if isinstance(item, Mapping) else str(item)
        decl = declared.get(source) or {}
        if decl.get("name"):
            yield str(decl["name"])
        elif decl.get("external"):
            yield source
        else:
            yield f"{stack}_{source}"


def _join(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))
