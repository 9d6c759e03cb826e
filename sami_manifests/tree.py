"""The deployments repo as a whole: layout, lint, and resolving one environment folder.

Everything works on an in-memory revision, `{repo-relative posix path: bytes}`, so the
control plane runs exactly the checks the CLI runs, on the files a client uploaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from . import values
from .model import (
    DEPLOYMENT_TYPES,
    ENVIRONMENT_ALIASES,
    ENVIRONMENTS,
    MANIFEST_NAMES,
    SERVICES_DIR,
    UNSUPPORTED_TYPES,
    ResolvedManifest,
    canonical_environment,
    default_stack_name,
)
from .problems import (
    DEFAULT_LIMITS,
    AmbiguousDeploymentType,
    InvalidManifest,
    Limits,
    ManifestNotFound,
    NotSupported,
    Problem,
    error,
    has_errors,
    sort_problems,
    warning,
)
from .safeyaml import load_yaml
from .schema import STACK_TYPES, ManifestContext, ManifestSpec, check_manifest
from .stacks import POLICY_OFF, STACK_POLICIES, check_stack_files
from .words import did_you_mean

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_IGNORED_FILES = ("README.md",)


@dataclass(frozen=True)
class ScanResult:
    """Every problem of the revision, and the manifests that validated (no errors)."""

    problems: tuple[Problem, ...]
    manifests: tuple[ResolvedManifest, ...]

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)


@dataclass
class _EnvFolder:
    service: str
    type_folder: str
    env_folder: str  # as named in the repo
    environment: str  # canonical
    files: dict[str, bytes] = field(default_factory=dict)  # relative to the folder

    @property
    def folder(self) -> str:
        return f"{SERVICES_DIR}/{self.service}/{self.type_folder}/{self.env_folder}"


def repo_path_error(path: object, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `path` is not an acceptable key of a revision, or None.

    Keys are relative posix paths without `.`/`..`/empty segments, backslashes or control
    characters.
    """
    if not isinstance(path, str):
        return f"path {path!r} is not a string"
    if not path:
        return "empty path"
    if len(path) > limits.max_path_length:
        return f"path longer than {limits.max_path_length} characters"
    if _CONTROL_RE.search(path):
        return "path contains control characters"
    if invisible := values.invisible_char_error(path):
        return invisible
    if "\\" in path:
        return "path contains a backslash"
    if path.startswith("/"):
        return "path is absolute"
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        return "path has an empty, '.' or '..' segment"
    return None


def check_revision(
    files: Mapping[str, bytes], limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, bytes], list[Problem]]:
    """Check the revision as a whole (paths, count, sizes); return the usable files."""
    problems: list[Problem] = []
    if len(files) > limits.max_files:
        problems.append(
            error(
                "",
                0,
                "too-many-files",
                f"the revision has {len(files)} files, more than the {limits.max_files} allowed",
                "sync only the deployments repo (services/ and README.md)",
            )
        )
        return {}, problems
    usable: dict[str, bytes] = {}
    total = 0
    for path, data in files.items():
        problem = repo_path_error(path, limits)
        if problem is None and not isinstance(data, bytes | bytearray):
            problem = "content is not bytes"
        if problem is not None:
            problems.append(
                error(str(path)[:200], 0, "bad-path", problem, "rename the file in the repo")
            )
            continue
        if len(data) > limits.max_file_bytes:
            problems.append(
                error(
                    path,
                    0,
                    "file-too-large",
                    f"file is {len(data)} bytes, more than the {limits.max_file_bytes} allowed",
                    "keep large files out of the deployments repo",
                )
            )
            continue
        total += len(data)
        usable[path] = bytes(data)
    if total > limits.max_total_bytes:
        problems.append(
            error(
                "",
                0,
                "revision-too-large",
                f"the revision holds {total} bytes, more than the {limits.max_total_bytes} allowed",
                "keep large files out of the deployments repo",
            )
        )
        return {}, problems
    return usable, problems


def _ignorable(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FILES


def _index(files: Mapping[str, bytes]) -> tuple[list[_EnvFolder], list[Problem]]:
    """Walk the layout under services/; report what breaks it, collect environment folders."""
    problems: list[Problem] = []
    envs: dict[tuple[str, str, str], _EnvFolder] = {}
    reported: set[str] = set()
    stray_files: set[str] = set()
    found_services_dir = False

    def report_once(key: str, problem: Problem) -> None:
        if key not in reported:
            reported.add(key)
            problems.append(problem)

    for path in sorted(files):
        parts = path.split("/")
        if parts[0] != SERVICES_DIR or len(parts) < 2:
            continue  # conf/, README.md, ...: not Sami's business
        found_services_dir = True
        if len(parts) in (2, 3, 4):
            # A file where only folders belong.
            if not _ignorable(parts[-1]):
                stray_files.add(path)
            if len(parts) == 2:
                continue
        service = parts[1]
        service_dir = f"{SERVICES_DIR}/{service}/"
        if not values.is_valid_name(service):
            report_once(
                service_dir,
                error(
                    service_dir,
                    0,
                    "bad-service-folder",
                    f"service folder {service!r} is not a valid service name",
                    "rename it with lowercase letters, digits and '-' (it must equal "
                    "service_name in its manifests)",
                ),
            )
            continue
        if len(parts) == 3:
            continue
        type_folder = parts[2]
        type_dir = f"{service_dir}{type_folder}/"
        if type_folder not in DEPLOYMENT_TYPES:
            report_once(
                type_dir,
                error(
                    type_dir,
                    0,
                    "unknown-type-folder",
                    f"unknown deployment type folder {type_folder!r}"
                    + did_you_mean(type_folder, DEPLOYMENT_TYPES),
                    f"name it one of {', '.join(DEPLOYMENT_TYPES)}",
                ),
            )
            continue
        if len(parts) == 4:
            continue
        env_folder = parts[3]
        env_dir = f"{type_dir}{env_folder}/"
        environment = canonical_environment(env_folder)
        if environment is None:
            report_once(
                env_dir,
                error(
                    env_dir,
                    0,
                    "unknown-environment-folder",
                    f"unknown environment folder {env_folder!r}"
                    + did_you_mean(env_folder, [*ENVIRONMENTS, *ENVIRONMENT_ALIASES]),
                    f"name it one of {', '.join(ENVIRONMENTS)}",
                ),
            )
            continue
        key = (service, type_folder, env_folder)
        env = envs.get(key)
        if env is None:
            env = envs[key] = _EnvFolder(service, type_folder, env_folder, environment)
        env.files["/".join(parts[4:])] = files[path]

    if not found_services_dir:
        problems.append(
            error(
                f"{SERVICES_DIR}/",
                0,
                "no-services-folder",
                "the repo has no services/ folder",
                "create services/<service>/<type>/<environment>/sami.yaml (see docs/manifests.md)",
            )
        )
    for path in sorted(stray_files):
        folder, name = path.rsplit("/", 1)
        if name in MANIFEST_NAMES:
            # Most likely meant to deploy: an error, not an ignored file.
            problems.append(
                error(
                    path,
                    0,
                    "misplaced-manifest",
                    f"{name} must sit in an environment folder, not in {folder}/",
                    f"move it to {_environment_folder_hint(path)}{name}",
                )
            )
            continue
        problems.append(
            warning(
                path,
                0,
                "stray-file",
                f"{folder}/ holds only folders: this file is ignored",
                "move it into an environment folder, or out of services/",
            )
        )
    # Both `prod` and `production` under one type: which one deploys is not guessed.
    by_type: dict[tuple[str, str, str], list[_EnvFolder]] = {}
    for env in envs.values():
        by_type.setdefault((env.service, env.type_folder, env.environment), []).append(env)
    for clashing in by_type.values():
        if len(clashing) > 1:
            names = " and ".join(sorted(f"{e.env_folder}/" for e in clashing))
            for env in clashing:
                problems.append(
                    error(
                        env.folder + "/",
                        0,
                        "duplicate-environment",
                        f"{names} are the same environment ({env.environment})",
                        f"keep only {env.environment}/",
                    )
                )
    return list(envs.values()), problems


def _environment_folder_hint(path: str) -> str:
    parts = path.split("/")[:-1]
    placeholders = ["<service>", "<type>", "<environment>"]
    return "/".join(parts + placeholders[len(parts) - 1 :]) + "/"


def _check_env(
    env: _EnvFolder, limits: Limits, stack_policy: str = POLICY_OFF
) -> tuple[ResolvedManifest | None, list[Problem]]:
    """Validate one environment folder: its manifest and the stack files it names."""
    folder = env.folder
    problems: list[Problem] = []
    if env.env_folder != env.environment:
        problems.append(
            warning(
                folder + "/",
                0,
                "environment-alias",
                f"folder {env.env_folder}/ is read as environment {env.environment}",
                f"rename it to {env.environment}/ (the alias is accepted for existing repos)",
            )
        )
    present = [name for name in MANIFEST_NAMES if name in env.files]
    if not present:
        top_level = [p for p in env.files if "/" not in p]
        problems.append(
            error(
                folder + "/",
                0,
                "missing-manifest",
                f"no sami.yaml in {folder}/" + did_you_mean("sami.yaml", top_level),
                f"add {folder}/sami.yaml (see docs/manifests.md), or remove the folder",
            )
        )
        return None, problems
    if len(present) > 1:
        problems.append(
            error(
                folder + "/",
                0,
                "two-manifests",
                f"{folder}/ has both sami.yaml and sami.yml",
                "keep one of them",
            )
        )
        return None, problems
    manifest_name = present[0]
    manifest_path = f"{folder}/{manifest_name}"
    size = sum(len(data) for data in env.files.values())
    if size > limits.max_env_folder_bytes:
        problems.append(
            error(
                folder + "/",
                0,
                "folder-too-large",
                f"the environment folder holds {size} bytes, more than the "
                f"{limits.max_env_folder_bytes} an agent receives",
                "keep only the manifest, the stack files and the files they read",
            )
        )
    doc, load_problems = load_yaml(manifest_path, env.files[manifest_name], limits)
    problems.extend(load_problems)
    if doc is None:
        return None, problems
    ctx = ManifestContext(
        path=manifest_path,
        service=env.service,
        type_folder=env.type_folder,
        environment=env.environment,
        env_folder=env.env_folder,
        files=env.files.keys(),
    )
    spec, manifest_problems = check_manifest(doc, ctx)
    problems.extend(manifest_problems)
    if spec is None:
        return None, problems

    image_services: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()
    if spec.stack_files and (spec.deployment_type in STACK_TYPES or spec.deployment_type == "cron"):
        stacks = check_stack_files(
            folder,
            spec.stack_files,
            env.files,
            limits,
            cron=spec.deployment_type == "cron",
            policy=stack_policy,
        )
        problems.extend(stacks.problems)
        variables = tuple(stacks.variables)
        if stacks.parsed:
            image_services = _resolve_image_services(spec, stacks.services, manifest_path, problems)
            stack = spec.stack_name
            if stack is None and env.environment != "pull_request":
                stack = default_stack_name(env.service, env.environment)
            for svc in stacks.services if stack else ():
                if len(f"{stack}_{svc}") > values.SWARM_NAME_MAX:
                    problems.append(
                        warning(
                            manifest_path,
                            spec.stack_files_line,
                            "name-too-long",
                            f"Swarm service {stack}_{svc} is longer than "
                            f"{values.SWARM_NAME_MAX} characters",
                            "use a shorter stack_name or compose service name",
                        )
                    )

    if has_errors(problems):
        return None, problems
    manifest = ResolvedManifest(
        service=env.service,
        deployment_type=spec.deployment_type,
        environment=env.environment,
        folder=folder,
        manifest_file=manifest_name,
        pr_deploy=spec.pr_deploy,
        stack_files=tuple(s.value for s in spec.stack_files),
        image_services=image_services,
        converge_timeout=spec.converge_timeout,
        stack_name=spec.stack_name,
        cluster=spec.cluster,
        static_file=spec.static_file,
        cron=spec.cron,
        files=MappingProxyType(dict(env.files)),
        warnings=tuple(sort_problems(problems)),
        promote_after=spec.promote_after,
        queue=spec.queue,
        approval_required=spec.approval_required,
        approvers=spec.approvers,
        approval_expires=spec.approval_expires,
        environment_url=spec.environment_url,
        on_drift=spec.on_drift,
        variables=variables,
    )
    return manifest, problems


def _resolve_image_services(
    spec: ManifestSpec, services: list[str], manifest_path: str, problems: list[Problem]
) -> tuple[str, ...]:
    where = "cron." if spec.deployment_type == "cron" else ""
    if spec.image_services is None:
        if len(services) == 1:
            return (services[0],)
        problems.append(
            error(
                manifest_path,
                spec.image_services_line,
                "missing-image-services",
                f"{where}image_services is required: the stack files define "
                f"{len(services)} services ({', '.join(services)})",
                f"add {where}image_services: [<the services that run the artifact's image>]",
            )
        )
        return ()
    resolved: list[str] = []
    for item in spec.image_services:
        if item.value in services:
            resolved.append(item.value)
        else:
            problems.append(
                error(
                    manifest_path,
                    item.line,
                    "unknown-image-service",
                    f"image service {item.value!r} is not a service of the stack files"
                    + did_you_mean(item.value, services),
                    f"name one of: {', '.join(services)}",
                )
            )
    return tuple(resolved)


def scan(
    files: Mapping[str, bytes], limits: Limits = DEFAULT_LIMITS, *, stack_policy: str = POLICY_OFF
) -> ScanResult:
    """Validate a whole revision: layout, every manifest, the stack files they name (with
    `stack_policy` strict, also what stacks.stack_policy_problems refuses)."""
    if stack_policy not in STACK_POLICIES:
        raise ValueError(
            f"unknown stack policy {stack_policy!r}: use {' or '.join(STACK_POLICIES)}"
        )
    usable, problems = check_revision(files, limits)
    if not usable and problems:
        return ScanResult(tuple(sort_problems(problems)), ())
    envs, layout_problems = _index(usable)
    problems.extend(layout_problems)
    manifests: list[ResolvedManifest] = []
    envs_by_service: dict[tuple[str, str], list[str]] = {}
    for env in sorted(envs, key=lambda e: e.folder):
        manifest, env_problems = _check_env(env, limits, stack_policy)
        problems.extend(env_problems)
        if manifest is not None:
            manifests.append(manifest)
        envs_by_service.setdefault((env.service, env.environment), []).append(env.type_folder)
    for (service, environment), types in sorted(envs_by_service.items()):
        distinct = sorted(set(types))
        if len(distinct) > 1:
            problems.append(
                warning(
                    f"{SERVICES_DIR}/{service}/",
                    0,
                    "ambiguous-type",
                    f"{service} has environment {environment} under {len(distinct)} "
                    f"deployment types ({', '.join(distinct)})",
                    f"deployments of {service} to {environment} must name the type",
                )
            )
    problems.extend(_shared_stack_names(manifests))
    return ScanResult(tuple(sort_problems(problems)), tuple(manifests))


def _shared_stack_names(manifests: list[ResolvedManifest]) -> list[Problem]:
    """Two manifests that set the same `stack_name` (or set one that is another's default
    name) would deploy over each other's stack: each deployment would replace the other's
    services. Manifests pinned to two different clusters do not meet."""
    problems: list[Problem] = []
    seen: dict[str, list[ResolvedManifest]] = {}
    for m in manifests:
        if m.environment == "pull_request":
            continue  # each preview gets a stack of its own; stack_name is refused there
        name = m.stack_name_for()
        for other in seen.get(name, []):
            if not (m.stack_name or other.stack_name):
                continue  # same service and environment under two types: warned above
            if m.cluster and other.cluster and m.cluster != other.cluster:
                continue
            problems.append(
                error(
                    m.manifest_path,
                    _line_of(m.files.get(m.manifest_file, b""), "stack_name"),
                    "duplicate-stack-name",
                    f"stack {name!r} is also the stack of {other.manifest_path}: the two "
                    "would deploy over each other",
                    "give each manifest a stack_name of its own (or remove stack_name to use "
                    "the default, ENVIRONMENT_SERVICE)",
                )
            )
            break
        seen.setdefault(name, []).append(m)
    return problems


def _line_of(text: bytes, key: str) -> int:
    """The line of a top-level `key:` in a YAML file, 0 if not found."""
    for number, line in enumerate(text.decode("utf-8", "replace").splitlines(), 1):
        if line.startswith(f"{key}:"):
            return number
    return 0


def lint(
    files: Mapping[str, bytes], limits: Limits = DEFAULT_LIMITS, *, stack_policy: str = POLICY_OFF
) -> list[Problem]:
    """Every problem of the revision (errors and warnings), sorted by file and line."""
    return list(scan(files, limits, stack_policy=stack_policy).problems)


def resolve(
    files: Mapping[str, bytes],
    service: str,
    deployment_type: str | None,
    environment: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> ResolvedManifest:
    """The manifest to deploy `service` to `environment` with, from a revision.

    `deployment_type` may be None (or "") when the service has the environment under a
    single type. Environment `production` also matches a `prod` folder. Only the service's
    folder is validated (the whole revision was linted when it was synced).

    Raises ValueError for an unknown environment or type name, ManifestNotFound (naming the
    folder to add), AmbiguousDeploymentType, InvalidManifest (with the problems) and
    NotSupported (type k8s).
    """
    canonical = canonical_environment(environment)
    if canonical is None:
        raise ValueError(
            f"unknown environment {environment!r}: use one of {', '.join(ENVIRONMENTS)}"
        )
    wanted_type = deployment_type or None
    if wanted_type is not None and wanted_type not in DEPLOYMENT_TYPES:
        raise ValueError(
            f"unknown deployment type {wanted_type!r}: use one of {', '.join(DEPLOYMENT_TYPES)}"
        )
    if not values.is_valid_name(service):
        raise ValueError(f"invalid service name {service!r}")
    prefix = f"{SERVICES_DIR}/{service}/"
    subset = {path: data for path, data in files.items() if path.startswith(prefix)}
    usable, _ = check_revision(subset, limits)
    envs, _ = _index(usable)
    shown_type = wanted_type or "<type>"
    to_add = f"{prefix}{shown_type}/{canonical}/sami.yaml"
    if not envs:
        raise ManifestNotFound(f"no manifest for service {service} in this revision: add {to_add}")
    matching = [
        e
        for e in envs
        if e.environment == canonical and (wanted_type is None or e.type_folder == wanted_type)
    ]
    if not matching:
        existing = ", ".join(sorted(f"{e.type_folder}/{e.env_folder}" for e in envs))
        raise ManifestNotFound(
            f"service {service} has no {canonical} manifest"
            + (f" of type {wanted_type}" if wanted_type else "")
            + f" (it has {existing}): add {to_add}"
        )
    types = sorted({e.type_folder for e in matching})
    if len(types) > 1:
        raise AmbiguousDeploymentType(
            f"service {service} has environment {canonical} under several deployment types "
            f"({', '.join(types)}): name the deployment type"
        )
    if len(matching) > 1:
        folders = " and ".join(sorted(f"{e.folder}/" for e in matching))
        problem = error(
            matching[0].folder + "/",
            0,
            "duplicate-environment",
            f"{folders} are the same environment ({canonical})",
            f"keep only {canonical}/",
        )
        raise InvalidManifest(f"{folders} are the same environment: keep one", [problem])
    env = matching[0]
    manifest, problems = _check_env(env, limits)
    if manifest is None:
        errors = [p for p in sort_problems(problems) if p.is_error]
        if errors and errors[0].code == "missing-manifest":
            raise ManifestNotFound(
                f"{env.folder}/ has no manifest: add {env.folder}/sami.yaml", errors
            )
        first = errors[0].format() if errors else "invalid"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidManifest(f"invalid manifest: {first}{more}", errors)
    if manifest.deployment_type in UNSUPPORTED_TYPES:
        raise NotSupported(
            f"{manifest.manifest_path}: type {manifest.deployment_type} is not yet supported "
            "by Sami (missing: a Kubernetes executor in sami-agent and the k8s fields of "
            "sami.yaml); deploy this service with type swarm or compose"
        )
    return manifest
