"""Secrets and configs of a stack, versioned on Swarm by content (docs/swarm-executor.md,
"Secrets, configs and variables").

Swarm secrets and configs are immutable: a stack whose secret or config changed cannot be
deployed again under the same name ("only updates to Labels are allowed"). So Sami gives
each content its own object, `<stack>_<name>_<hash8>` (the first 8 hex digits of the
sha256 of the content), creates it before `docker stack deploy`, and points the stack's
top-level entry at it in the generated override:

    secrets:
      db_password:                       # the stack file says {external: true}
        external: true
        name: shop_db_password_ab12cd34  # the version this deployment uses
    configs:
      nginx_conf:                        # the stack file says {file: ./nginx.conf}
        external: true
        name: shop_nginx_conf_0f1e2d3c

`docker stack deploy` (docker/cli's loader, 20.10 and 28 alike, checked on a real engine)
replaces a top-level secret or config entry of an earlier `-c` file with the later file's
entry as a whole, so the override needs no rewrite of the user's files. Services keep
referring to the entry by its key, so the container still sees `/run/secrets/db_password`.
Compose files older than 3.5 have no `name:` there: their entry is `external: {name: …}`.

Which entries are versioned:

- a secret declared `external: true` whose Swarm name (its `name:`, else its key) the
  deployment has a version of (`sami secret set`): decrypted in memory with the agent's
  key; an external secret the deployment has no version of must already exist on the swarm;
- a secret or config given as `file:` inside the deployments repo (the job's files).

Everything else (an external config, a file outside the repo) is left as the stack says.
Each object Sami creates carries the labels `sami.stack`, `sami.secret` or `sami.config`
(the name), `sami.version` and `com.docker.stack.namespace` (so `docker stack rm` removes
it with the stack); only objects with those labels are ever removed by Sami.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pyrage

from sami_agent.executor import Job, ProgressReporter, SecretPayload, SecretRef

if TYPE_CHECKING:
    from sami_agent.executors.swarm_apply import StackPlan
    from sami_agent.keys import AgentKey

LABEL_STACK = "sami.stack"
LABEL_VERSION = "sami.version"
STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"
KINDS = ("secret", "config")
# Swarm's rule for secret and config names (swarmkit's validateAnnotations).
_SWARM_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")
_MAX_SWARM_NAME = 64
# The version label of an object made from a file of the deployments repo.
FILE_VERSION = "file"


class ObjectError(Exception):
    """The stack's secrets or configs cannot be provided; nothing was changed."""


def name_label(kind: str) -> str:
    return f"sami.{kind}"


@dataclass(frozen=True)
class Declared:
    """A top-level `secrets:` or `configs:` entry of the stack files (the last file that
    declares a key wins, as docker stack deploy merges them)."""

    kind: str  # secret | config
    key: str
    entry: Mapping[str, Any]
    stack_file: str

    @property
    def external(self) -> bool:
        return bool(self.entry.get("external"))

    @property
    def swarm_name(self) -> str:
        """The name Swarm knows an external object by: its `name:` (or the legacy
        `external: {name:}`), else its key."""
        external = self.entry.get("external")
        if isinstance(external, Mapping) and external.get("name"):
            return str(external["name"])
        return str(self.entry.get("name") or self.key)


@dataclass(frozen=True)
class Versioned:
    """A secret or config version to create (when missing) and point the stack at."""

    kind: str
    key: str  # the stack file's key
    name: str  # the secret's name as set (`sami secret set`), or the entry's key
    version: str  # the secret's version, or FILE_VERSION
    swarm_name: str
    data: bytes = field(repr=False)
    template_driver: str = ""

    def labels(self, stack: str) -> dict[str, str]:
        return {
            LABEL_STACK: stack,
            name_label(self.kind): self.name,
            LABEL_VERSION: self.version,
            STACK_NAMESPACE_LABEL: stack,
        }

    def describe(self) -> str:
        version = "from the repo" if self.version == FILE_VERSION else f"v{self.version}"
        return f"{self.kind} {self.name} {version} as {self.swarm_name}"


@dataclass(frozen=True)
class Rendered:
    """What the override adds at the top level, and the objects to create first."""

    top_level: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    objects: tuple[Versioned, ...] = ()
    notes: tuple[str, ...] = ()


def declared_objects(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[Declared, ...]:
    """The top-level secrets and configs of the (interpolated) stack files, in order."""
    found: dict[tuple[str, str], Declared] = {}
    for path, doc in docs:
        for kind in KINDS:
            section = doc.get(kind + "s")
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise ObjectError(f"stack file {path}: `{kind}s` is not a mapping")
            for key, entry in section.items():
                if not isinstance(entry, Mapping):
                    entry = {}
                found[(kind, str(key))] = Declared(kind, str(key), dict(entry), path)
    return tuple(found.values())


def content_name(stack: str, name: str, data: bytes) -> str:
    return f"{stack}_{name}_{hashlib.sha256(data).hexdigest()[:8]}"


def _check_swarm_name(kind: str, key: str, swarm_name: str) -> None:
    if len(swarm_name) > _MAX_SWARM_NAME or not _SWARM_NAME.match(swarm_name):
        raise ObjectError(
            f"{kind} {key}: its versioned name {swarm_name} is not a valid Swarm name (at most"
            f" {_MAX_SWARM_NAME} letters, digits, `_`, `-`, `.`): use a shorter stack or {kind}"
            " name"
        )


def repo_file(declared: Declared, files: Mapping[str, bytes]) -> str | None:
    """The job file a `file:` entry names (relative to the first stack file's folder, as
    docker resolves it), or None when it is not a file of the deployments repo."""
    raw = declared.entry.get("file")
    if not isinstance(raw, str) or not raw or raw.startswith("/"):
        return None
    base = posixpath.dirname(declared.stack_file)
    path = posixpath.normpath(posixpath.join(base, raw))
    if path.startswith("../") or path == "..":
        return None
    return path if path in files else None


# lookup(kind, swarm_name) -> whether the swarm has an object of that name;
# find(kind, stack, name, version) -> the name of a Sami-made object of that version, or "".
Lookup = Callable[[str, str], bool]
Find = Callable[[str, str, str, str], str]


def render(
    plan: StackPlan,
    job: Job,
    key: AgentKey | None,
    exists: Lookup,
    *,
    find: Find | None = None,
) -> Rendered:
    """Decide the versioned objects and the override's top-level entries.

    With `find` (a plan: no ciphertext, nothing created) a secret version the deployment
    uses is named after the object that holds it on the swarm, if any, else
    `<stack>_<name>_v<version>`; without it every such secret is decrypted with `key`.
    Raises ObjectError naming every secret that cannot be provided; changes nothing."""
    payloads = {p.name: p for p in job.secret_payloads}
    refs = {r.name: r for r in job.secrets}
    problems: list[str] = []
    objects: list[Versioned] = []
    entries: dict[str, dict[str, Any]] = {"secrets": {}, "configs": {}}
    used: set[str] = set()
    for declared in plan.objects:
        versioned: Versioned | None = None
        if declared.kind == "secret" and declared.external:
            name = declared.swarm_name
            used.add(name)
            try:
                versioned = _external_secret(plan, job, declared, key, payloads, refs, exists, find)
            except ObjectError as exc:
                problems.append(str(exc))
                continue
        else:
            path = repo_file(declared, plan.files)
            if path is not None:
                data = plan.files[path]
                swarm_name = content_name(plan.stack, declared.key, data)
                driver = declared.entry.get("template_driver")
                versioned = Versioned(
                    declared.kind,
                    declared.key,
                    declared.key,
                    FILE_VERSION,
                    swarm_name,
                    data,
                    str(driver) if driver else "",
                )
        if versioned is None:
            continue
        try:
            _check_swarm_name(declared.kind, declared.key, versioned.swarm_name)
        except ObjectError as exc:
            problems.append(str(exc))
            continue
        objects.append(versioned)
        entries[declared.kind + "s"][declared.key] = _entry(
            plan.compose_version, versioned.swarm_name
        )
    if problems:
        raise ObjectError("; ".join(problems))
    notes = tuple(
        f"secret {name} v{payloads[name].version if name in payloads else refs[name].version}"
        " is set but no stack file declares it (`secrets: {NAME: {external: true}}`): not used"
        for name in sorted(set(payloads) | set(refs))
        if name not in used
    )
    top = {kind: entry for kind, entry in entries.items() if entry}
    return Rendered(top, tuple(objects), notes)


def _external_secret(
    plan: StackPlan,
    job: Job,
    declared: Declared,
    key: AgentKey | None,
    payloads: Mapping[str, SecretPayload],
    refs: Mapping[str, SecretRef],
    exists: Lookup,
    find: Find | None,
) -> Versioned | None:
    name = declared.swarm_name
    payload = payloads.get(name)
    ref = refs.get(name)
    chosen: SecretPayload | SecretRef | None = payload if payload is not None else ref
    if find is not None and chosen is not None:
        version = str(chosen.version)
        swarm_name = find("secret", plan.stack, name, version) or f"{plan.stack}_{name}_v{version}"
        return Versioned("secret", declared.key, name, version, swarm_name, b"")
    if payload is not None:
        data = _open(job, name, payload.version, payload.ciphertext, key)
        swarm_name = content_name(plan.stack, name, data)
        return Versioned("secret", declared.key, name, str(payload.version), swarm_name, data)
    if ref is not None:
        raise ObjectError(
            f"secret {name}: the deployment uses version {ref.version} but the assignment"
            " carries no ciphertext for it (a control plane that does not send secrets?)"
        )
    if exists("secret", name):
        return None  # made by hand on the swarm: used as the stack says
    raise ObjectError(
        f"secret {name} (declared external in {declared.stack_file}) was not set for"
        f" {job.service}/{job.environment} and does not exist on this swarm: set it with"
        f" `sami secret set {job.service} {name} --env {job.environment}`"
    )


def _open(job: Job, name: str, version: int, ciphertext: bytes, key: AgentKey | None) -> bytes:
    remedy = (
        f"set it again (`sami secret set {job.service} {name} --env {job.environment}`) or"
        " re-encrypt the secrets to the cluster's current recipients (`sami secret rekey`)"
    )
    if key is None:
        raise ObjectError(
            f"secret {name} v{version} cannot be decrypted: this agent has no key"
            " (sami-agent --key-file); " + remedy
        )
    try:
        return key.decrypt(ciphertext)
    except (pyrage.DecryptError, ValueError, TypeError) as exc:
        raise ObjectError(
            f"secret {name} v{version} cannot be decrypted with this agent's key"
            f" (recipient {key.recipient}): {exc}. It was probably encrypted to other"
            f" recipients (before this agent's key was registered?): {remedy}"
        ) from None


def _entry(compose_version: str | None, swarm_name: str) -> dict[str, Any]:
    if compose_version is not None and _older_than_3_5(compose_version):
        return {"external": {"name": swarm_name}}
    return {"external": True, "name": swarm_name}


def _older_than_3_5(version: str) -> bool:
    major, _, minor = version.partition(".")
    try:
        return (int(major), int(minor or 0)) < (3, 5)
    except ValueError:
        return False


def with_rendering(plan: StackPlan, rendered: Rendered) -> StackPlan:
    return dataclasses.replace(plan, top_level=rendered.top_level, versioned=rendered.objects)


# -- on the engine -----------------------------------------------------------------------------


def _listing(api: Any, kind: str, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (api.secrets if kind == "secret" else api.configs)(
        filters=dict(filters)
    )
    return found


def engine_lookup(client: docker.DockerClient) -> Lookup:
    def exists(kind: str, name: str) -> bool:
        # The name filter matches prefixes too: compare exactly.
        found = _listing(client.api, kind, {"name": name})
        return any(o.get("Spec", {}).get("Name") == name for o in found)

    return exists


def engine_find(client: docker.DockerClient) -> Find:
    def find(kind: str, stack: str, name: str, version: str) -> str:
        labels = [
            f"{LABEL_STACK}={stack}",
            f"{name_label(kind)}={name}",
            f"{LABEL_VERSION}={version}",
        ]
        found = _listing(client.api, kind, {"label": labels})
        names = sorted(str(o.get("Spec", {}).get("Name", "")) for o in found)
        return names[0] if names else ""

    return find


def create_objects(client: docker.DockerClient, plan: StackPlan, report: ProgressReporter) -> None:
    """Create the plan's versioned objects that do not exist yet (the data goes to the
    engine in the request body, from memory)."""
    exists = engine_lookup(client)
    for obj in plan.versioned:
        if exists(obj.kind, obj.swarm_name):
            report("apply", f"{obj.describe()}: already on the swarm")
            continue
        labels = obj.labels(plan.stack)
        try:
            if obj.kind == "secret":
                client.api.create_secret(obj.swarm_name, obj.data, labels=labels)
            else:
                templating = {"name": obj.template_driver} if obj.template_driver else None
                client.api.create_config(
                    obj.swarm_name, obj.data, labels=labels, templating=templating
                )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # another agent made it meanwhile: same content
                continue
            raise
        report("apply", f"created {obj.describe()}")


def prune_objects(client: docker.DockerClient, stack: str, report: ProgressReporter) -> None:
    """Remove the stack's Sami-made secrets and configs that no service of the stack uses,
    in its current spec or in the spec Swarm would roll back to. Objects without Sami's
    labels are never touched; one still in use elsewhere is refused by the engine and kept."""
    in_use: set[str] = set()
    for svc in client.api.services(filters={"label": f"{STACK_NAMESPACE_LABEL}={stack}"}):
        for spec in (svc.get("Spec"), svc.get("PreviousSpec")):
            container = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
            for ref in container.get("Secrets") or []:
                in_use.add(str(ref.get("SecretID", "")))
            for ref in container.get("Configs") or []:
                in_use.add(str(ref.get("ConfigID", "")))
    for kind in KINDS:
        for obj in _listing(client.api, kind, {"label": f"{LABEL_STACK}={stack}"}):
            labels = (obj.get("Spec") or {}).get("Labels") or {}
            if labels.get(LABEL_STACK) != stack or name_label(kind) not in labels:
                continue
            if obj.get("ID") in in_use:
                continue
            swarm_name = str(obj["Spec"].get("Name", ""))
            try:
                if kind == "secret":
                    client.api.remove_secret(obj["ID"])
                else:
                    client.api.remove_config(obj["ID"])
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                report("cleanup", f"kept {kind} {swarm_name}: {exc.explanation or exc}")
                continue
            version = labels.get(LABEL_VERSION, "")
            what = "from the repo" if version == FILE_VERSION else f"v{version}"
            report(
                "cleanup",
                f"removed {kind} {swarm_name} ({labels[name_label(kind)]} {what}): no service"
                " of the stack uses it, nor would a rollback",
            )
