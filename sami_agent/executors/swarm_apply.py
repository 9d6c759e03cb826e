"""Applying a job's stack: validate it, pin the artifact by digest, label the services, and
hand the result to `docker stack deploy` (the reference compose-to-swarm implementation;
Sami does no translation of its own).

The job's files are written unchanged into a private temporary folder (so relative paths
in the stack files, such as `env_file` or `configs`, resolve as they do in the deployments
repo), plus one generated override file, passed last:

    services:
      web:                                   # each of job.image_services
        image: registry/app@sha256:...       # the artifact, pinned by digest
        deploy:
          labels:                            # each service of the stack files
            sami.deployment-id: <id>
            sami.artifact-digest: sha256:...

`docker stack deploy` merges `-c` files in order, so the override wins without Sami
rewriting (or reformatting) the user's YAML. Two exceptions, both decided before anything
changes: a stack file that refers to variables (`${NAME}`) is written interpolated from the
deployment's variables (sami_manifests/interpolation.py; never from the agent's environment),
with every literal `$` written `$$` so that docker's own interpolation finds nothing left to
fill; and the override also points the stack's top-level secrets and configs at versions
named by content (swarm_objects.py). The labels are *service* labels (`deploy.labels`
become `Spec.Labels`), not container labels: changing them never restarts a task, so a
sidecar whose spec did not change is not redeployed just because the deployment id did.

`--prune` is deliberately NOT passed: a pruned service cannot be rolled back, and removing
services is a decision a failed deployment must not make half-way. Services dropped from the
stack files are reported, and left running for a human to remove (`docker service rm`).
`--resolve-image` keeps its default (`always`): images that are not pinned (sidecars such as
`redis:7`) get pinned to one digest for every node, and our pinned image is unaffected.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from sami_agent.executor import Job, ProgressReporter
from sami_agent.executors import swarm_variables
from sami_agent.executors.swarm_objects import Declared, ObjectError, Versioned, declared_objects
from sami_manifests.interpolation import InterpolationError, tree_has_references

LABEL_DEPLOYMENT = "sami.deployment-id"
LABEL_DIGEST = "sami.artifact-digest"
STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"
OVERRIDE_FILE = ".sami-override.yml"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Docker's rule for stack and service names (no `_` at the start; swarm adds `STACK_`).
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MAX_STACK_FILE = 1024 * 1024
_APPLY_TIMEOUT = 300.0


# What the docker CLI may take from the agent's environment: how to reach the engine and
# the registries (DOCKER_*, proxies, CA bundles, HOME for ~/.docker), where its programs
# are, the locale. Nothing else: the agent's environment holds its own secrets (SAMI_TOKEN,
# its TLS key's path), which a `docker` plugin or wrapper must not be handed.
_CLI_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
_CLI_ENV_PREFIXES = ("DOCKER_", "LC_")


def docker_cli_env(
    extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment to run the docker CLI with: what it needs of `environ` (the agent's
    own, by default), then `extra` (the executor's `docker_env`, set by the operator)."""
    source = os.environ if environ is None else environ
    env = {
        name: value
        for name, value in source.items()
        if name in _CLI_ENV or name.startswith(_CLI_ENV_PREFIXES)
    }
    env.update(extra or {})
    return env


class JobError(Exception):
    """The job cannot be applied as given (nothing was changed)."""


class ApplyError(Exception):
    """`docker stack deploy` failed; the message is its own output."""


@dataclass(frozen=True)
class StackPlan:
    stack: str
    deployment_id: str
    # Every service of the stack files (compose names, without the `STACK_` prefix).
    services: tuple[str, ...]
    image_services: tuple[str, ...]
    image: str  # the artifact, pinned: repo@sha256:...
    digest: str
    files: Mapping[str, bytes]
    stack_files: tuple[str, ...]
    compose_version: str | None
    # More override keys per service, merged into the generated override (`deploy:` keys,
    # labels included, are merged one level down): cron jobs set their mode this way.
    service_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The top-level secrets and configs the stack files declare (interpolated), and, once
    # rendered (swarm_objects.render), the override's entries for the versioned ones and
    # the objects to create before deploying.
    objects: tuple[Declared, ...] = ()
    top_level: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    versioned: tuple[Versioned, ...] = ()

    def swarm_name(self, service: str) -> str:
        return f"{self.stack}_{service}"

    def labels(self, service: str) -> dict[str, str]:
        labels = {LABEL_DEPLOYMENT: self.deployment_id}
        if service in self.image_services:
            labels[LABEL_DIGEST] = self.digest
        return labels


def pinned_image(artifact_ref: str, digest: str) -> str:
    """`registry/repo[:tag][@digest]` + digest -> `registry/repo@digest`."""
    if not _DIGEST.match(digest):
        raise JobError(f"artifact_digest {digest!r} is not a sha256 digest")
    ref = artifact_ref.strip()
    if not ref:
        raise JobError("artifact_ref is empty")
    repo, _, ref_digest = ref.partition("@")
    if ref_digest and ref_digest != digest:
        raise JobError(f"artifact_ref {ref!r} names another digest than artifact_digest {digest}")
    # A `:tag` is after the last `/` (a `:` before it is a registry port).
    slash = repo.rfind("/")
    colon = repo.rfind(":")
    if colon > slash:
        repo = repo[:colon]
    if not repo or any(c.isspace() for c in repo):
        raise JobError(f"artifact_ref {ref!r} is not an image reference")
    return f"{repo}@{digest}"


def _safe_relpath(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or ".." in p.parts or "\\" in path or "\0" in path:
        raise JobError(f"manifest file path {path!r} is not a relative path inside the folder")
    return p


def _load_compose(path: str, data: bytes) -> dict[str, Any]:
    if len(data) > _MAX_STACK_FILE:
        raise JobError(f"stack file {path} is larger than {_MAX_STACK_FILE} bytes")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise JobError(f"stack file {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise JobError(f"stack file {path} is not a compose mapping")
    services = doc.get("services", {})
    if services is None:
        services = {}
    if not isinstance(services, dict):
        raise JobError(f"stack file {path}: `services` is not a mapping")
    return doc


def plan(job: Job) -> StackPlan:
    """Validate the job and decide what to apply. Raises JobError; changes nothing."""
    if not _NAME.match(job.stack_name or ""):
        raise JobError(f"stack name {job.stack_name!r} is not a valid Docker stack name")
    if not job.deployment_id:
        raise JobError("the job has no deployment id")
    if not job.stack_files:
        raise JobError("the job names no stack files (sami.yaml: which compose file to deploy)")
    for path in job.files:
        _safe_relpath(path)
    image = pinned_image(job.artifact_ref, job.artifact_digest)
    services: list[str] = []
    version: str | None = None
    files = dict(job.files)
    docs: list[tuple[str, dict[str, Any]]] = []
    undefined: list[str] = []
    for path in job.stack_files:
        _safe_relpath(path)
        if path not in job.files:
            raise JobError(f"stack file {path} is not among the job's files")
        doc = _load_compose(path, job.files[path])
        try:
            doc, written = _interpolated(path, doc, job.files[path], job.variables)
        except InterpolationError as exc:
            undefined.append(str(exc))
            continue
        if written is not None:
            files[path] = written
        docs.append((path, doc))
        if version is None and doc.get("version") is not None:
            version = str(doc["version"])
        for name in doc.get("services") or {}:
            if not isinstance(name, str) or not _NAME.match(name):
                raise JobError(f"stack file {path}: service name {name!r} is not valid")
            if name not in services:
                services.append(name)
    if undefined:
        raise JobError(
            f"{'; '.join(undefined)}. Variables come from the deployment only (`sami var set"
            f" {job.service} NAME=VALUE --env {job.environment}`), never from the agent's"
            " environment; give the stack file a default (`${NAME:-value}`) where one is"
            " enough"
        )
    try:
        objects = declared_objects(docs)
    except ObjectError as exc:
        raise JobError(str(exc)) from None
    if not services:
        raise JobError(f"stack files {', '.join(job.stack_files)} define no services")
    image_services = tuple(job.image_services)
    if not image_services:
        if len(services) != 1:
            raise JobError(
                "the job names no image_services and the stack has several services "
                f"({', '.join(services)}): say which take the artifact's image"
            )
        image_services = (services[0],)
    unknown = [s for s in image_services if s not in services]
    if unknown:
        raise JobError(
            f"image_services {', '.join(unknown)} are not services of the stack files "
            f"(they define {', '.join(services)})"
        )
    return StackPlan(
        stack=job.stack_name,
        deployment_id=job.deployment_id,
        services=tuple(services),
        image_services=image_services,
        image=image,
        digest=job.artifact_digest,
        files=files,
        stack_files=tuple(job.stack_files),
        compose_version=version,
        objects=objects,
    )


def _interpolated(
    path: str, doc: dict[str, Any], data: bytes, variables: Mapping[str, str]
) -> tuple[dict[str, Any], bytes | None]:
    """The stack file's document with its variables filled, and the bytes to write in its
    place (None: it refers to no variable and is written unchanged, `$$` and all). Raises
    InterpolationError naming every undefined variable of the file, or JobError."""
    if not tree_has_references(doc):
        return doc, None
    try:
        written = swarm_variables.fill_stack_file(path, data, variables)
    except swarm_variables.CastError as exc:
        raise JobError(str(exc)) from None
    filled = swarm_variables.filled_document(written)
    if not isinstance(filled, dict):
        raise JobError(f"stack file {path} is not a compose mapping")
    return filled, written


def override_document(plan: StackPlan) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for name in plan.services:
        entry: dict[str, Any] = {"deploy": {"labels": plan.labels(name)}}
        if name in plan.image_services:
            entry["image"] = plan.image
        for key, value in plan.service_overrides.get(name, {}).items():
            if key == "deploy":
                for deploy_key, deploy_value in value.items():
                    if deploy_key == "labels":
                        entry["deploy"]["labels"].update(deploy_value)
                    else:
                        entry["deploy"][deploy_key] = deploy_value
            else:
                entry[key] = value
        services[name] = entry
    doc: dict[str, Any] = {"services": services}
    for section in ("secrets", "configs"):
        if plan.top_level.get(section):
            doc[section] = {key: dict(entry) for key, entry in plan.top_level[section].items()}
    if plan.compose_version is not None:
        # The 20.10 CLI refuses to merge files of different `version`s.
        doc = {"version": plan.compose_version, **doc}
    return doc


def write_stack(plan: StackPlan, folder: Path) -> list[Path]:
    """Write the job's files and the override into `folder`; return the `-c` files in order."""
    for path, data in plan.files.items():
        target = folder / _safe_relpath(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    override = folder / OVERRIDE_FILE
    override.write_text(yaml.safe_dump(override_document(plan), sort_keys=False))
    return [folder / p for p in plan.stack_files] + [override]


def _output_messages(output: str) -> list[str]:
    """The CLI's output as progress messages: one per line, but a wrapped warning (the
    "could not be accessed on a registry" paragraph) as one message; nags dropped."""
    messages: list[str] = []
    paragraph: list[str] = []
    for raw in [*output.splitlines(), ""]:
        line = raw.strip()
        standalone = line.startswith(("Creating ", "Updating ", "Removing "))
        if not line or standalone:
            if paragraph:
                messages.append(" ".join(paragraph))
                paragraph = []
            if standalone:
                messages.append(line)
            continue
        paragraph.append(line)
    return [m for m in messages if "--detach" not in m]


def stack_deploy(
    plan: StackPlan,
    report: ProgressReporter,
    docker_cli: str = "docker",
    env: Mapping[str, str] | None = None,
    timeout: float = _APPLY_TIMEOUT,
) -> None:
    """Run `docker stack deploy --with-registry-auth -c FILE... STACK`.

    Registry credentials are the agent's own (`docker login` on this host, read by the CLI
    from its config and sent to the swarm agents); nothing comes from the control plane.
    """
    report("apply", f"docker stack deploy {plan.stack} ({', '.join(plan.stack_files)})")
    try:
        proc = run_stack_cli(
            plan, ["deploy", "--with-registry-auth"], [plan.stack], docker_cli, env, timeout
        )
    except FileNotFoundError:
        raise ApplyError(f"the docker CLI ({docker_cli}) is not installed") from None
    except subprocess.TimeoutExpired:
        raise ApplyError(f"docker stack deploy did not finish within {timeout:.0f}s") from None
    for message in _output_messages(proc.stdout + "\n" + proc.stderr):
        report("apply", message)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())
        raise ApplyError(f"docker stack deploy failed (exit {proc.returncode}): {detail}")


def run_stack_cli(
    plan: StackPlan,
    command: list[str],
    trailing: list[str],
    docker_cli: str,
    env: Mapping[str, str] | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """`docker stack COMMAND -c FILE... TRAILING` on the plan's files (the stack files and
    Sami's override), written to a folder that is removed afterwards. FileNotFoundError (no
    docker CLI) and subprocess.TimeoutExpired are the caller's to explain."""
    with tempfile.TemporaryDirectory(prefix="sami-stack-") as tmp:
        argv = [docker_cli, "stack", *command]
        for f in write_stack(plan, Path(tmp)):
            argv += ["-c", str(f)]
        return subprocess.run(
            [*argv, *trailing],
            cwd=tmp,
            env=docker_cli_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
