"""The vocabulary of the deployments repo and what a validated manifest resolves to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .problems import Problem

VERSION = "v1beta"
DEPLOYMENT_TYPES: tuple[str, ...] = ("swarm", "compose", "k8s", "cron", "static_file")
# Types whose manifests Sami accepts but cannot deploy yet.
UNSUPPORTED_TYPES: tuple[str, ...] = ("k8s",)
# The kind of artifact each deployment type puts in place: `sami deploy` of another kind is
# refused, and `sami rollback`/`promote` never pick one (a static-files archive cannot run
# as a Swarm service, nor an image be unpacked into a site).
ARTIFACT_KIND_OF_TYPE: Mapping[str, str] = {
    "swarm": "image",
    "compose": "image",
    "cron": "image",
    "k8s": "image",
    "static_file": "static_file",
}
ENVIRONMENTS: tuple[str, ...] = ("stage", "production", "pull_request")
# Folder names accepted for an environment, with a warning: existing repos use them.
ENVIRONMENT_ALIASES: Mapping[str, str] = {"prod": "production"}
MANIFEST_NAMES: tuple[str, ...] = ("sami.yaml", "sami.yml")
SERVICES_DIR = "services"

DEFAULT_CONVERGE_TIMEOUT = 300
MIN_CONVERGE_TIMEOUT = 10
MAX_CONVERGE_TIMEOUT = 2 * 3600
DEFAULT_KEEP_RELEASES = 5
MAX_KEEP_RELEASES = 100
# `promote_after:` — how long an artifact must have been live in the source environment
# before `sami promote` takes it to this one (0: no gate).
MAX_PROMOTE_AFTER = 90 * 86400
# `queue:` — what a new deployment does to the queued ones of its service and environment:
# supersede them (only the newest waits), or wait behind them (they run in order).
QUEUE_SUPERSEDE = "supersede"
QUEUE_FIFO = "fifo"
QUEUE_RULES: tuple[str, ...] = (QUEUE_SUPERSEDE, QUEUE_FIFO)
# `approval: required` — a deployment here waits (AWAITING_APPROVAL) until another identity
# approves it; `approvers:` names who may (token names, or the roles in APPROVER_ROLES);
# `approval_expires:` is how long a pending approval lives before the request ends.
APPROVAL_REQUIRED = "required"
APPROVAL_NONE = "none"
APPROVAL_VALUES: tuple[str, ...] = (APPROVAL_REQUIRED, APPROVAL_NONE)
APPROVER_ROLES: tuple[str, ...] = ("admin", "deployer")
DEFAULT_APPROVAL_EXPIRES = 24 * 3600
MIN_APPROVAL_EXPIRES = 5  # short ones are for drills and tests
MAX_APPROVAL_EXPIRES = 30 * 86400
MAX_APPROVERS = 50
# `on_drift:` — what Sami does when live differs from what it deployed (docs/status.md):
# report it, or deploy the last SUCCEEDED artifact again.
ON_DRIFT_REPORT = "report"
ON_DRIFT_REDEPLOY = "redeploy"
ON_DRIFT_RULES: tuple[str, ...] = (ON_DRIFT_REPORT, ON_DRIFT_REDEPLOY)


def canonical_environment(name: str) -> str | None:
    """ "production" for "prod"; the name itself when it is an environment; else None."""
    if name in ENVIRONMENTS:
        return name
    return ENVIRONMENT_ALIASES.get(name)


def artifact_fits(deployment_type: str, artifact_kind: str) -> bool:
    """Whether an artifact of `artifact_kind` (image, static_file, module) can be deployed
    as `deployment_type`; an unknown type or kind is left to whoever knows it."""
    expected = ARTIFACT_KIND_OF_TYPE.get(deployment_type)
    return expected is None or not artifact_kind or artifact_kind == expected


def default_stack_name(service: str, environment: str, pull_request: int = 0) -> str:
    """`<environment>_<service>`, or `pr-<N>_<service>` for a pull-request preview."""
    env = canonical_environment(environment) or environment
    if env == "pull_request":
        if pull_request < 1:
            raise ValueError("a pull_request deployment needs its pull request number (>= 1)")
        return f"pr-{pull_request}_{service}"
    if pull_request:
        raise ValueError(f"pull request number given for environment {env}")
    return f"{env}_{service}"


@dataclass(frozen=True)
class StaticFileSettings:
    """`static_file:` — where the agent unpacks a static-files artifact."""

    target_dir: str
    keep_releases: int = DEFAULT_KEEP_RELEASES


@dataclass(frozen=True)
class CronSettings:
    """`cron:` — the schedule; its stack_files/image_services are on the manifest itself."""

    schedule: str


@dataclass(frozen=True)
class ResolvedManifest:
    """One environment folder's validated manifest, ready to build an assignment from.

    `stack_files` are paths relative to the environment folder, in apply order (for type
    cron, the ones under `cron:`); `image_services` are the compose services that take the
    artifact's image (resolved when the manifest left it implicit). `files` holds every file
    of the environment folder, sami.yaml included, by path relative to the folder.
    """

    service: str
    deployment_type: str
    environment: str  # canonical: production even when the folder is `prod`
    folder: str  # repo-relative, e.g. services/web/swarm/prod
    manifest_file: str  # sami.yaml or sami.yml
    pr_deploy: bool
    stack_files: tuple[str, ...]
    image_services: tuple[str, ...]
    converge_timeout: int  # seconds
    stack_name: str | None  # explicit override; see stack_name_for()
    cluster: str | None
    static_file: StaticFileSettings | None
    cron: CronSettings | None
    files: Mapping[str, bytes] = field(repr=False, hash=False)
    warnings: tuple[Problem, ...] = ()
    promote_after: int = 0  # seconds; 0: promotions here are not gated
    queue: str = QUEUE_SUPERSEDE
    approval_required: bool = False
    approvers: tuple[str, ...] = ()  # empty: anyone who may deploy here (but the requester)
    approval_expires: int = DEFAULT_APPROVAL_EXPIRES  # seconds
    # Where the deployed app is reached; `{pr}`: the pull request number.
    environment_url: str = ""
    on_drift: str = ON_DRIFT_REPORT
    # The `${NAME}`s its stack files need a value for (`sami var set`): a deployment that
    # lacks one is refused when it is created, naming it.
    variables: tuple[str, ...] = ()

    @property
    def manifest_path(self) -> str:
        return f"{self.folder}/{self.manifest_file}"

    def stack_name_for(self, pull_request: int = 0) -> str:
        """The stack to apply to: the manifest's `stack_name`, else the default name."""
        if self.stack_name:
            return self.stack_name
        return default_stack_name(self.service, self.environment, pull_request)
