"""The sami.yaml schema (version v1beta): field by field validation of one manifest."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sami_common import durations

from . import values
from .model import (
    APPROVAL_REQUIRED,
    APPROVAL_VALUES,
    DEFAULT_APPROVAL_EXPIRES,
    DEFAULT_CONVERGE_TIMEOUT,
    DEFAULT_KEEP_RELEASES,
    DEPLOYMENT_TYPES,
    MANIFEST_NAMES,
    MAX_APPROVAL_EXPIRES,
    MAX_APPROVERS,
    MAX_CONVERGE_TIMEOUT,
    MAX_KEEP_RELEASES,
    MAX_PROMOTE_AFTER,
    MIN_APPROVAL_EXPIRES,
    MIN_CONVERGE_TIMEOUT,
    ON_DRIFT_REPORT,
    ON_DRIFT_RULES,
    QUEUE_RULES,
    QUEUE_SUPERSEDE,
    UNSUPPORTED_TYPES,
    VERSION,
    CronSettings,
    StaticFileSettings,
)
from .problems import Problem, error, warning
from .safeyaml import YList, YMap
from .words import closest, did_you_mean, type_name

ALL_TYPES = frozenset(DEPLOYMENT_TYPES)
STACK_TYPES = frozenset({"swarm", "compose"})

# Top-level fields and the deployment types that use them.
TOP_FIELDS: dict[str, frozenset[str]] = {
    "version": ALL_TYPES,
    "service_name": ALL_TYPES,
    "type": ALL_TYPES,
    "pr_deploy": ALL_TYPES,
    "cluster": ALL_TYPES,
    "converge_timeout": ALL_TYPES - {"k8s"},
    "stack_files": STACK_TYPES,
    "image_services": STACK_TYPES,
    "stack_name": STACK_TYPES | {"cron"},
    "static_file": frozenset({"static_file"}),
    "cron": frozenset({"cron"}),
    "promote_after": ALL_TYPES,
    "queue": ALL_TYPES,
    "approval": ALL_TYPES,
    "approvers": ALL_TYPES,
    "approval_expires": ALL_TYPES,
    "environment_url": ALL_TYPES,
    "on_drift": STACK_TYPES,
}
STATIC_FILE_FIELDS = ("target_dir", "keep_releases")
CRON_FIELDS = ("schedule", "stack_files", "image_services")
# The stack files a manifest without `stack_files` may mean, by name (top of the
# environment folder only): Sami applies the one that is there.
DEFAULT_STACK_FILE_PATTERNS = (
    "*-stack.yml",
    "*-stack.yaml",
    "stack.yml",
    "stack.yaml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
)


def stack_file_candidates(files: Collection[str]) -> list[str]:
    """The files at the top of an environment folder named like a stack file, sorted."""
    return sorted(
        name
        for name in files
        if "/" not in name
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in DEFAULT_STACK_FILE_PATTERNS)
    )


@dataclass
class Located:
    """A value from the manifest and the line it sits on."""

    value: str
    line: int


@dataclass
class ManifestSpec:
    """What a sami.yaml says, before its stack files are looked at."""

    deployment_type: str
    service_name: str
    pr_deploy: bool = False
    converge_timeout: int = DEFAULT_CONVERGE_TIMEOUT
    stack_name: str | None = None
    cluster: str | None = None
    # For swarm/compose: top level; for cron: under `cron:`.
    stack_files: list[Located] = field(default_factory=list)
    stack_files_line: int = 0
    image_services: list[Located] | None = None
    image_services_line: int = 0
    static_file: StaticFileSettings | None = None
    cron: CronSettings | None = None
    type_line: int = 0
    promote_after: int = 0
    queue: str = QUEUE_SUPERSEDE
    approval_required: bool = False
    approvers: tuple[str, ...] = ()
    approval_expires: int = DEFAULT_APPROVAL_EXPIRES
    environment_url: str = ""
    on_drift: str = ON_DRIFT_REPORT


@dataclass(frozen=True)
class ManifestContext:
    """Where the manifest sits: what the folders say it must be."""

    path: str  # repo-relative path of sami.yaml, for problems
    service: str  # the service folder
    type_folder: str
    environment: str  # canonical
    env_folder: str  # the folder as named (may be `prod`)
    files: Collection[str]  # paths relative to the environment folder


class _Checker:
    def __init__(self, ctx: ManifestContext) -> None:
        self.ctx = ctx
        self.problems: list[Problem] = []

    def err(self, line: int, code: str, message: str, hint: str) -> None:
        self.problems.append(error(self.ctx.path, line, code, message, hint))

    def warn(self, line: int, code: str, message: str, hint: str) -> None:
        self.problems.append(warning(self.ctx.path, line, code, message, hint))

    # --- helpers -------------------------------------------------------------------------

    def unknown_fields(
        self, mapping: YMap, known: Collection[str], where: str, shown: Collection[str] = ()
    ) -> None:
        """Reject keys not in `known`; the hint lists `shown` (default: `known`)."""
        listed = ", ".join(shown or known)
        for key in mapping:
            if not isinstance(key, str):
                self.err(
                    mapping.key_line(key),
                    "unknown-field",
                    f"field names are strings, got {key!r}{where}",
                    "remove the entry",
                )
            elif key not in known:
                close = closest(key, known)
                self.err(
                    mapping.key_line(key),
                    "unknown-field",
                    f"unknown field {key!r}{where}{did_you_mean(key, known)}",
                    (f"rename it to {close}" if close else "remove it")
                    + f"; fields: {listed} (see docs/manifests.md)",
                )

    def string(self, mapping: YMap, key: str, what: str) -> str | None:
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            self.err(
                mapping.value_line(key),
                "wrong-type",
                f"{what} must be a non-empty string, got {type_name(value)}",
                f"write {key}: <text>",
            )
            return None
        return value

    def path_list(self, mapping: YMap, key: str, where: str) -> list[Located]:
        value = mapping[key]
        line = mapping.value_line(key)
        if isinstance(value, str):
            self.err(
                line,
                "wrong-type",
                f"{where}{key} must be a list of paths, got a string",
                f"write {key}: [{value}]",
            )
            return []
        if not isinstance(value, YList) or not value:
            self.err(
                line,
                "wrong-type",
                f"{where}{key} must be a non-empty list of paths, got {type_name(value)}",
                f"list the compose files relative to {self.ctx.env_folder}/, e.g. "
                f"{key}: [stack.yml]",
            )
            return []
        out: list[Located] = []
        seen: set[str] = set()
        for index, item in enumerate(value):
            item_line = value.item_line(index)
            if not isinstance(item, str):
                self.err(
                    item_line,
                    "wrong-type",
                    f"{where}{key} entries are paths, got {type_name(item)}",
                    "write the path as a string",
                )
                continue
            problem = values.relative_path_error(item)
            if problem:
                code = (
                    "absolute-path"
                    if "absolute" in problem
                    else "unsafe-path"
                    if "U+" in problem
                    else "path-escapes"
                )
                self.err(
                    item_line,
                    code,
                    f"stack file {problem}: paths are relative to the environment folder "
                    "and stay inside it",
                    f"copy the file into {self._folder()} and name it relative to it",
                )
                continue
            path = values.normalize_relative(item)
            if not path:
                self.err(
                    item_line,
                    "wrong-value",
                    f"{item!r} names the environment folder itself, not a file",
                    "name the compose file, e.g. stack.yml",
                )
                continue
            if path in seen:
                self.err(item_line, "duplicate-entry", f"{path} is listed twice", "list it once")
                continue
            seen.add(path)
            if path not in self.ctx.files:
                self.err(
                    item_line,
                    "missing-file",
                    f"stack file {path} does not exist in {self._folder()}"
                    + did_you_mean(path, self.ctx.files),
                    f"add {self._folder()}{path} or fix the path",
                )
                continue
            if path in MANIFEST_NAMES:
                self.err(
                    item_line,
                    "wrong-value",
                    "the manifest itself cannot be a stack file",
                    "name the compose file",
                )
                continue
            out.append(Located(path, item_line))
        return out

    def name_list(self, mapping: YMap, key: str, where: str) -> list[Located] | None:
        value = mapping[key]
        line = mapping.value_line(key)
        if isinstance(value, str):
            self.err(
                line,
                "wrong-type",
                f"{where}{key} must be a list of compose service names, got a string",
                f"write {key}: [{value}]",
            )
            return None
        if not isinstance(value, YList) or not value:
            self.err(
                line,
                "wrong-type",
                f"{where}{key} must be a non-empty list of compose service names, "
                f"got {type_name(value)}",
                f"write {key}: [<service in the stack file>]",
            )
            return None
        out: list[Located] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.err(
                    value.item_line(index),
                    "wrong-type",
                    f"{where}{key} entries are compose service names, got {type_name(item)}",
                    "write the service name as a string",
                )
            elif any(item == seen.value for seen in out):
                self.err(
                    value.item_line(index),
                    "duplicate-entry",
                    f"{item} is listed twice",
                    "list it once",
                )
            else:
                out.append(Located(item, value.item_line(index)))
        return out

    def _folder(self) -> str:
        return self.ctx.path.rsplit("/", 1)[0] + "/"

    # --- the document --------------------------------------------------------------------

    def check(self, doc: Any) -> ManifestSpec | None:
        ctx = self.ctx
        if not isinstance(doc, YMap):
            self.err(
                1,
                "not-a-mapping",
                f"a manifest is a mapping of fields, got {type_name(doc)}",
                f"start from `version: {VERSION}`, `service_name: {ctx.service}`, "
                f"`type: {ctx.type_folder}`, one field per line",
            )
            return None
        self.check_version(doc)
        service_name = self.check_service_name(doc)
        deployment_type, type_line = self.check_type(doc)
        self.unknown_fields(
            doc,
            list(TOP_FIELDS),
            "",
            shown=[f for f in TOP_FIELDS if f in _fields_for(deployment_type)],
        )
        spec = ManifestSpec(
            deployment_type=deployment_type,
            service_name=service_name or ctx.service,
            type_line=type_line,
        )
        for key in doc:
            types = TOP_FIELDS.get(key) if isinstance(key, str) else None
            if types is not None and deployment_type not in types:
                self.field_not_for_type(doc, key, deployment_type)
        self.check_pr_deploy(doc, spec)
        if "converge_timeout" in doc and "converge_timeout" in _fields_for(deployment_type):
            spec.converge_timeout = self.check_timeout(doc)
        if "cluster" in doc:
            cluster = self.string(doc, "cluster", "cluster")
            if cluster is not None and not values.is_valid_name(cluster):
                self.err(
                    doc.value_line("cluster"),
                    "wrong-value",
                    f"cluster {cluster!r} is not a valid cluster name",
                    "use lowercase letters, digits and '-' (as registered in sami-control)",
                )
            else:
                spec.cluster = cluster
        if "stack_name" in doc and "stack_name" in _fields_for(deployment_type):
            spec.stack_name = self.check_stack_name(doc)
        if "promote_after" in doc:
            spec.promote_after = self.check_promote_after(doc)
        if "queue" in doc:
            spec.queue = self.check_queue(doc)
        self.check_approval(doc, spec)
        if "environment_url" in doc:
            spec.environment_url = self.check_environment_url(doc)
        if "on_drift" in doc and "on_drift" in _fields_for(deployment_type):
            spec.on_drift = self.check_on_drift(doc)
        if deployment_type in STACK_TYPES:
            self.check_stack_fields(doc, spec, "")
        elif deployment_type == "static_file":
            self.check_static_file(doc, spec)
        elif deployment_type == "cron":
            self.check_cron(doc, spec)
        elif deployment_type in UNSUPPORTED_TYPES:
            self.warn(
                type_line,
                "type-not-supported",
                f"type {deployment_type} is not yet supported by Sami: deployments of this "
                "manifest are refused",
                "Sami still lacks a Kubernetes executor in sami-agent and the k8s fields of "
                "sami.yaml (namespace, manifest files, kube context); deploy with type swarm "
                "or compose meanwhile",
            )
        return spec

    def field_not_for_type(self, doc: YMap, key: str, deployment_type: str) -> None:
        hint = f"remove it: type {deployment_type} does not use it"
        if deployment_type == "cron" and key in ("stack_files", "image_services"):
            hint = f"move it under `cron:` (indented: cron: {{{key}: ...}})"
        self.err(
            doc.key_line(key),
            "field-not-for-type",
            f"field {key!r} is not used by type {deployment_type}",
            hint,
        )

    def check_version(self, doc: YMap) -> None:
        if "version" not in doc:
            self.err(
                doc.line,
                "missing-field",
                "missing field 'version'",
                f"add `version: {VERSION}` at the top",
            )
        elif doc["version"] != VERSION:
            self.err(
                doc.value_line("version"),
                "bad-version",
                f"unsupported version {doc['version']!r}: this Sami reads {VERSION}",
                f"set version: {VERSION}",
            )

    def check_service_name(self, doc: YMap) -> str | None:
        ctx = self.ctx
        if "service_name" not in doc:
            self.err(
                doc.line,
                "missing-field",
                "missing field 'service_name'",
                f"add `service_name: {ctx.service}`",
            )
            return None
        name = self.string(doc, "service_name", "service_name")
        if name is None:
            return None
        if name != ctx.service:
            self.err(
                doc.value_line("service_name"),
                "service-name-mismatch",
                f"service_name {name!r} does not match its folder services/{ctx.service}/",
                f"set service_name: {ctx.service}, or move the manifest to "
                f"services/{name}/{ctx.type_folder}/{ctx.env_folder}/",
            )
        return name

    def check_type(self, doc: YMap) -> tuple[str, int]:
        ctx = self.ctx
        if "type" not in doc:
            self.err(
                doc.line,
                "missing-field",
                "missing field 'type'",
                f"add `type: {ctx.type_folder}`",
            )
            return ctx.type_folder, doc.line
        line = doc.value_line("type")
        value = doc["type"]
        if not isinstance(value, str) or value not in DEPLOYMENT_TYPES:
            suggestion = did_you_mean(value, DEPLOYMENT_TYPES) if isinstance(value, str) else ""
            self.err(
                line,
                "unknown-type",
                f"unknown type {value!r}{suggestion}",
                f"use one of {', '.join(DEPLOYMENT_TYPES)} (the same as the folder)",
            )
            return ctx.type_folder, line
        if value != ctx.type_folder:
            self.err(
                line,
                "type-mismatch",
                f"type {value} does not match its folder services/{ctx.service}/{ctx.type_folder}/",
                f"set type: {ctx.type_folder}, or move the environment folder to "
                f"services/{ctx.service}/{value}/{ctx.env_folder}/",
            )
        return value, line

    def check_pr_deploy(self, doc: YMap, spec: ManifestSpec) -> None:
        env = self.ctx.environment
        if "pr_deploy" in doc:
            value = doc["pr_deploy"]
            if not isinstance(value, bool):
                self.err(
                    doc.value_line("pr_deploy"),
                    "wrong-type",
                    f"pr_deploy must be true or false, got {type_name(value)}",
                    "write pr_deploy: true or pr_deploy: false",
                )
                return
            spec.pr_deploy = value
            if value and env != "pull_request":
                self.warn(
                    doc.value_line("pr_deploy"),
                    "pr-deploy-ignored",
                    f"pr_deploy has no effect in environment {env}: previews use the "
                    "manifest of the pull_request folder",
                    f"remove it here and set pr_deploy: true in "
                    f"services/{self.ctx.service}/{self.ctx.type_folder}/pull_request/sami.yaml",
                )
        if env == "pull_request" and not spec.pr_deploy:
            self.warn(
                doc.key_line("pr_deploy") if "pr_deploy" in doc else doc.line,
                "pr-deploy-off",
                "pr_deploy is false: pull request previews of this service are refused",
                "set pr_deploy: true to allow previews, or remove the pull_request folder",
            )

    def check_timeout(self, doc: YMap) -> int:
        line = doc.value_line("converge_timeout")
        try:
            seconds = values.parse_sami_duration(doc["converge_timeout"])
        except ValueError as exc:
            self.err(
                line,
                "bad-duration",
                f"converge_timeout: {exc}",
                "write whole seconds (300) or a duration with a unit: 90s, 5m, 1h30m",
            )
            return DEFAULT_CONVERGE_TIMEOUT
        if not MIN_CONVERGE_TIMEOUT <= seconds <= MAX_CONVERGE_TIMEOUT:
            self.err(
                line,
                "bad-duration",
                f"converge_timeout {values.format_seconds(seconds)} is outside "
                f"{values.format_seconds(MIN_CONVERGE_TIMEOUT)}.."
                f"{values.format_seconds(MAX_CONVERGE_TIMEOUT)}",
                "pick a timeout between 10s and 2h",
            )
            return DEFAULT_CONVERGE_TIMEOUT
        return seconds

    def check_promote_after(self, doc: YMap) -> int:
        """`promote_after: 30m`: the gate on promotions into this environment."""
        line = doc.value_line("promote_after")
        if self.ctx.environment == "pull_request":
            self.err(
                line,
                "wrong-value",
                "promote_after in a pull_request manifest: previews are never promoted to",
                "remove it here; set it in the stage or production manifest that "
                "`sami promote --to` names",
            )
            return 0
        try:
            seconds = values.parse_sami_duration(doc["promote_after"])
        except ValueError as exc:
            self.err(
                line,
                "bad-duration",
                f"promote_after: {exc}",
                "write how long an artifact must have been live in the source environment, "
                "e.g. promote_after: 30m (or 1h, 1d)",
            )
            return 0
        if not 1 <= seconds <= MAX_PROMOTE_AFTER:
            self.err(
                line,
                "bad-duration",
                f"promote_after {durations.format_seconds(seconds)} is outside "
                f"1s..{durations.format_seconds(MAX_PROMOTE_AFTER)}",
                "pick a wait between 1s and 90d, or remove the field to promote at once",
            )
            return 0
        return seconds

    def check_queue(self, doc: YMap) -> str:
        """`queue: supersede|fifo`: what a new deployment does to the queued ones."""
        rule = self.string(doc, "queue", "queue")
        if rule is None:
            return QUEUE_SUPERSEDE
        if rule not in QUEUE_RULES:
            self.err(
                doc.value_line("queue"),
                "wrong-value",
                f"queue {rule!r} is not a queue rule: expected one of {', '.join(QUEUE_RULES)}",
                "supersede (the default): a new deployment replaces the queued one; "
                "fifo: queued deployments all run, in order",
            )
            return QUEUE_SUPERSEDE
        return rule

    def check_approval(self, doc: YMap, spec: ManifestSpec) -> None:
        """`approval: required`, `approvers: [...]`, `approval_expires: 24h`: deployments
        here wait for another identity's approval (docs/release-safety.md)."""
        if "approval" in doc:
            value = self.string(doc, "approval", "approval")
            if value is not None and value not in APPROVAL_VALUES:
                self.err(
                    doc.value_line("approval"),
                    "wrong-value",
                    f"approval {value!r} is not an approval rule: expected one of "
                    f"{', '.join(APPROVAL_VALUES)}",
                    "approval: required makes every deployment here wait for another "
                    "identity's `sami approve`; remove the field (or none) for no approval",
                )
            spec.approval_required = value == APPROVAL_REQUIRED
        for key in ("approvers", "approval_expires"):
            if key in doc and not spec.approval_required:
                self.err(
                    doc.key_line(key),
                    "wrong-value",
                    f"{key} without approval: required means nothing",
                    f"add approval: required, or remove {key}",
                )
                return
        if "approvers" in doc:
            spec.approvers = self.check_approvers(doc)
        if "approval_expires" in doc:
            spec.approval_expires = self.check_approval_expires(doc)

    def check_approvers(self, doc: YMap) -> tuple[str, ...]:
        value = doc["approvers"]
        line = doc.value_line("approvers")
        hint = "list token names and/or roles, e.g. approvers: [alice, admin]"
        if not isinstance(value, YList) or not value:
            self.err(
                line,
                "wrong-type",
                f"approvers must be a non-empty list, got {type_name(value)}",
                hint,
            )
            return ()
        if len(value) > MAX_APPROVERS:
            self.err(line, "wrong-value", f"approvers lists more than {MAX_APPROVERS}", hint)
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip() or len(item) > 100:
                got = repr(item) if isinstance(item, str) else type_name(item)
                self.err(
                    value.item_line(index),
                    "wrong-type",
                    f"approvers entries are token names or roles (text of 1 to 100 "
                    f"characters), got {got}",
                    hint,
                )
                return ()
            if item.strip() not in out:
                out.append(item.strip())
        return tuple(out)

    def check_approval_expires(self, doc: YMap) -> int:
        line = doc.value_line("approval_expires")
        try:
            seconds = values.parse_sami_duration(doc["approval_expires"])
        except ValueError as exc:
            self.err(
                line,
                "bad-duration",
                f"approval_expires: {exc}",
                "write how long a pending approval lives, e.g. approval_expires: 24h",
            )
            return DEFAULT_APPROVAL_EXPIRES
        if not MIN_APPROVAL_EXPIRES <= seconds <= MAX_APPROVAL_EXPIRES:
            self.err(
                line,
                "bad-duration",
                f"approval_expires {durations.format_seconds(seconds)} is outside "
                f"{durations.format_seconds(MIN_APPROVAL_EXPIRES)}.."
                f"{durations.format_seconds(MAX_APPROVAL_EXPIRES)}",
                "pick between 5s and 30d (default 24h)",
            )
            return DEFAULT_APPROVAL_EXPIRES
        return seconds

    def check_environment_url(self, doc: YMap) -> str:
        """`environment_url: https://…`: where the deployed app is reached (GitHub shows it
        on the deployment); `{pr}` stands for the pull request's number."""
        url = self.string(doc, "environment_url", "environment_url")
        if url is None:
            return ""
        parts = urlsplit(url.replace("{pr}", "1"))
        if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 512:
            self.err(
                doc.value_line("environment_url"),
                "wrong-value",
                f"environment_url {url!r} is not an http(s) URL",
                "e.g. environment_url: https://pr-{pr}.preview.example.com",
            )
            return ""
        return url

    def check_on_drift(self, doc: YMap) -> str:
        """`on_drift: report|redeploy`: what Sami does when live differs from what it
        deployed (docs/status.md)."""
        rule = self.string(doc, "on_drift", "on_drift")
        if rule is None:
            return ON_DRIFT_REPORT
        if rule not in ON_DRIFT_RULES:
            self.err(
                doc.value_line("on_drift"),
                "wrong-value",
                f"on_drift {rule!r} is not a drift rule: expected one of "
                f"{', '.join(ON_DRIFT_RULES)}",
                "report (the default): drift is shown and audited; redeploy: Sami also "
                "deploys the last SUCCEEDED artifact again",
            )
            return ON_DRIFT_REPORT
        return rule

    def check_stack_name(self, doc: YMap) -> str | None:
        line = doc.value_line("stack_name")
        name = self.string(doc, "stack_name", "stack_name")
        if name is None:
            return None
        if self.ctx.environment == "pull_request":
            self.err(
                line,
                "field-not-for-env",
                "stack_name cannot be set for pull_request: each preview gets its own stack "
                f"pr-<N>_{self.ctx.service}",
                "remove stack_name from this manifest",
            )
            return None
        if not values.is_valid_stack_name(name):
            self.err(
                line,
                "wrong-value",
                f"stack_name {name!r} is not a valid Swarm stack name",
                "use lowercase letters, digits, '-' and '_', starting and ending with a "
                "letter or digit, at most 63 characters",
            )
            return None
        return name

    def check_stack_fields(self, mapping: YMap, spec: ManifestSpec, where: str) -> None:
        if "stack_files" not in mapping:
            spec.stack_files = self.default_stack_file(mapping, where)
            spec.stack_files_line = mapping.line
        else:
            spec.stack_files = self.path_list(mapping, "stack_files", where)
            spec.stack_files_line = mapping.value_line("stack_files")
        if "image_services" in mapping:
            spec.image_services = self.name_list(mapping, "image_services", where)
            spec.image_services_line = mapping.value_line("image_services")
        else:
            spec.image_services_line = mapping.key_line("stack_files")

    def default_stack_file(self, mapping: YMap, where: str) -> list[Located]:
        """The folder's one stack file, for a manifest without stack_files (the original
        v1beta manifests name none); an error listing what was found when it is not one."""
        found = stack_file_candidates(self.ctx.files)
        if len(found) == 1:
            return [Located(found[0], mapping.line)]
        patterns = ", ".join(DEFAULT_STACK_FILE_PATTERNS)
        if not found:
            self.err(
                mapping.line,
                "missing-field",
                f"no '{where}stack_files' and no stack file in {self._folder()} "
                f"(looked for {patterns})",
                f"add {where}stack_files: [<compose file in {self._folder()}>], or name the "
                "stack file <service>-stack.yml",
            )
        else:
            self.err(
                mapping.line,
                "ambiguous-stack-files",
                f"no '{where}stack_files' and {self._folder()} holds {len(found)} stack files "
                f"({', '.join(found)}): which to apply is not guessed",
                f"choose with {where}stack_files: [{found[0]}] (several are applied in order)",
            )
        return []

    def check_static_file(self, doc: YMap, spec: ManifestSpec) -> None:
        if "static_file" not in doc:
            self.err(
                doc.line,
                "missing-field",
                "missing field 'static_file' (required for type static_file)",
                "add `static_file: {target_dir: /srv/www/<site>}`",
            )
            return
        block = doc["static_file"]
        if not isinstance(block, YMap):
            self.err(
                doc.value_line("static_file"),
                "wrong-type",
                f"static_file must be a mapping, got {type_name(block)}",
                "write `static_file: {target_dir: /srv/www/<site>}`",
            )
            return
        self.unknown_fields(block, STATIC_FILE_FIELDS, " in static_file")
        target: str | None = None
        if "target_dir" not in block:
            self.err(
                block.line,
                "missing-field",
                "missing field 'static_file.target_dir'",
                "add target_dir: /srv/www/<site> (an absolute path on the host)",
            )
        else:
            target = self.string(block, "target_dir", "static_file.target_dir")
            if target is not None:
                target = self.check_target_dir(block, target)
        keep = DEFAULT_KEEP_RELEASES
        if "keep_releases" in block:
            value = block["keep_releases"]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= MAX_KEEP_RELEASES
            ):
                self.err(
                    block.value_line("keep_releases"),
                    "wrong-value",
                    f"static_file.keep_releases must be a whole number from 1 to "
                    f"{MAX_KEEP_RELEASES}, got {value!r}",
                    f"write keep_releases: {DEFAULT_KEEP_RELEASES}",
                )
            else:
                keep = value
        if target is not None:
            spec.static_file = StaticFileSettings(target_dir=target, keep_releases=keep)

    def check_target_dir(self, block: YMap, target: str) -> str | None:
        line = block.value_line("target_dir")
        segments = target.split("/")[1:]
        if not target.startswith("/"):
            problem = "must be an absolute path"
        elif "\\" in target or "\x00" in target:
            problem = "contains a backslash or NUL character"
        elif any(seg in ("", ".", "..") for seg in segments) and target != "/":
            problem = "must be a normalized path (no '..', '.', '//' or trailing '/')"
        elif target == "/" or len(segments) < 2:
            problem = "is too close to the root of the file system"
        else:
            return target
        self.err(
            line,
            "wrong-value",
            f"static_file.target_dir {target!r} {problem}",
            "name a dedicated directory such as /srv/www/<site>",
        )
        return None

    def check_cron(self, doc: YMap, spec: ManifestSpec) -> None:
        if "cron" not in doc:
            self.err(
                doc.line,
                "missing-field",
                "missing field 'cron' (required for type cron)",
                "add `cron: {schedule: '0 3 * * *', stack_files: [job.yml]}`",
            )
            return
        block = doc["cron"]
        if not isinstance(block, YMap):
            self.err(
                doc.value_line("cron"),
                "wrong-type",
                f"cron must be a mapping, got {type_name(block)}",
                "write `cron: {schedule: '0 3 * * *', stack_files: [job.yml]}`",
            )
            return
        self.unknown_fields(block, CRON_FIELDS, " in cron")
        schedule: str | None = None
        if "schedule" not in block:
            self.err(
                block.line,
                "missing-field",
                "missing field 'cron.schedule'",
                "add schedule: '0 3 * * *' (minute hour day month weekday)",
            )
        else:
            schedule = self.string(block, "schedule", "cron.schedule")
            if schedule is not None:
                problem = values.cron_error(schedule)
                if problem:
                    self.err(
                        block.value_line("schedule"),
                        "bad-cron",
                        f"cron.schedule {schedule!r}: {problem}",
                        "write 5 fields, minute hour day-of-month month day-of-week, "
                        "e.g. '*/15 * * * *' or '0 3 * * mon-fri', or @hourly/@daily",
                    )
                    schedule = None
        self.check_stack_fields(block, spec, "cron.")
        if schedule is not None:
            spec.cron = CronSettings(schedule=schedule.strip())


def _fields_for(deployment_type: str) -> set[str]:
    return {key for key, types in TOP_FIELDS.items() if deployment_type in types}


def check_manifest(doc: Any, ctx: ManifestContext) -> tuple[ManifestSpec | None, list[Problem]]:
    """Validate a parsed sami.yaml against the schema and the folder it sits in."""
    checker = _Checker(ctx)
    spec = checker.check(doc)
    return spec, checker.problems
