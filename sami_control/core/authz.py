"""Who may do what. One table of actions by roles, plus the scope checks of bound tokens."""

from __future__ import annotations

import enum

from sami_control.core.errors import PermissionDenied
from sami_control.core.model import Deployment, Principal, Role


class Action(enum.StrEnum):
    READ = "read"  # get/list/watch artifacts, deployments, clusters, agents
    REGISTER_ARTIFACT = "register_artifact"
    DEPLOY = "deploy"  # create and cancel deployments
    MANAGE_CLUSTERS = "manage_clusters"
    MANAGE_TOKENS = "manage_tokens"
    SYNC_MANIFESTS = "sync_manifests"
    AGENT_CONNECT = "agent_connect"
    READ_AUDIT = "read_audit"
    APPROVE = "approve"  # approve or reject deployments waiting for approval
    MANAGE_NOTIFICATIONS = "manage_notifications"  # targets hold secrets: admins only
    # Read a service's logs: they can hold secrets, so not every reader (SECURITY.md).
    READ_LOGS = "read_logs"
    # Set, remove or export secrets, set or remove variables (core/secrets.py).
    MANAGE_SECRETS = "manage_secrets"


ALLOWED: dict[Action, frozenset[Role]] = {
    Action.READ: frozenset({Role.ADMIN, Role.DEPLOYER, Role.READER}),
    Action.REGISTER_ARTIFACT: frozenset({Role.ADMIN, Role.DEPLOYER}),
    Action.DEPLOY: frozenset({Role.ADMIN, Role.DEPLOYER}),
    Action.MANAGE_CLUSTERS: frozenset({Role.ADMIN}),
    Action.MANAGE_TOKENS: frozenset({Role.ADMIN}),
    Action.SYNC_MANIFESTS: frozenset({Role.ADMIN, Role.DEPLOYER}),
    Action.AGENT_CONNECT: frozenset({Role.AGENT}),
    Action.READ_AUDIT: frozenset({Role.ADMIN}),
    Action.APPROVE: frozenset({Role.ADMIN, Role.DEPLOYER}),
    Action.MANAGE_NOTIFICATIONS: frozenset({Role.ADMIN}),
    Action.READ_LOGS: frozenset({Role.ADMIN, Role.DEPLOYER}),
    Action.MANAGE_SECRETS: frozenset({Role.ADMIN, Role.DEPLOYER}),
}


# What each action lets a token do, in the words of a refusal ("… which may not <this>").
DOING: dict[Action, str] = {
    Action.READ: "read deployments, artifacts, clusters or agents",
    Action.REGISTER_ARTIFACT: "register artifacts",
    Action.DEPLOY: "deploy or cancel deployments",
    Action.MANAGE_CLUSTERS: "create or change clusters",
    Action.MANAGE_TOKENS: "create, list or revoke tokens",
    Action.SYNC_MANIFESTS: "sync manifests",
    Action.AGENT_CONNECT: "connect as an agent",
    Action.READ_AUDIT: "read the audit log",
    Action.APPROVE: "approve or reject deployments",
    Action.MANAGE_NOTIFICATIONS: "manage notification targets or read their deliveries",
    Action.READ_LOGS: "read service logs (they can hold secrets)",
    Action.MANAGE_SECRETS: "set, remove or export secrets or change variables",
}
# What to ask for instead, when one kind of token is the answer.
ASK_FOR: dict[Action, str] = {
    Action.AGENT_CONNECT: (
        "an agent connects with an agent token, bound to the cluster it serves: "
        "`sami-control token create --role agent --cluster NAME`"
    ),
}


def require(principal: Principal, action: Action) -> None:
    if principal.role not in ALLOWED[action]:
        roles = ", ".join(sorted(r.value for r in ALLOWED[action]))
        ask = ASK_FOR.get(action, f"ask an admin for a token with one of the roles: {roles}")
        raise PermissionDenied(
            f"token {principal.name!r} has role {principal.role.value}, which may not "
            f"{DOING[action]}; {ask}"
        )


def require_deploy_scope(principal: Principal, service: str, environment: str) -> None:
    require(principal, Action.DEPLOY)
    _require_scope(principal, service, environment, "deploy")


def require_logs_scope(principal: Principal, service: str, environment: str) -> None:
    """Logs are read by whoever may deploy the service there: admins, and deployers whose
    scope covers the service and environment. Readers may not (logs can hold secrets)."""
    require(principal, Action.READ_LOGS)
    _require_scope(principal, service, environment, "read the logs of")


def require_secrets_scope(principal: Principal, service: str, environment: str) -> None:
    """Secrets and variables of a service/environment are set (and secrets' ciphertexts
    exported) by whoever may deploy it there: admins, and deployers whose scope covers it."""
    require(principal, Action.MANAGE_SECRETS)
    _require_scope(principal, service, environment, "manage the secrets and variables of")


def in_scope(principal: Principal, service: str, environment: str) -> bool:
    """Whether a bound token's scope covers service/environment (what it may list)."""
    if principal.role is Role.ADMIN:
        return True
    return (not principal.services or service in principal.services) and (
        not principal.environments or environment in principal.environments
    )


def _require_scope(principal: Principal, service: str, environment: str, verb: str) -> None:
    if principal.role is Role.ADMIN:
        return
    if principal.services and service not in principal.services:
        raise PermissionDenied(
            f"token {principal.name!r} may {verb} only {', '.join(principal.services)}, "
            f"not {service!r}"
        )
    if principal.environments and environment not in principal.environments:
        where = "to" if verb == "deploy" else "in"
        raise PermissionDenied(
            f"token {principal.name!r} may {verb} only {where} "
            f"{', '.join(principal.environments)}, not {environment!r}"
        )


def require_sync_manifests(principal: Principal) -> None:
    """Admins and unscoped deployers only. The API checks this before it reads a sync's
    request (up to 16 MiB), so that a caller who may not sync cannot make the server hold it."""
    require(principal, Action.SYNC_MANIFESTS)
    if principal.role is Role.DEPLOYER and (principal.services or principal.environments):
        # A revision holds every service's manifests: a token scoped to one service
        # could otherwise rewrite another service's stack file.
        raise PermissionDenied(
            f"token {principal.name!r} is scoped to some services or environments; syncing "
            "manifests needs an admin token or an unscoped deployer token"
        )


def require_artifact_scope(principal: Principal, artifact_name: str) -> None:
    """A token scoped to services registers artifacts under their names only (`web`, or
    `web/…`): artifact names are first come, first served, and a scoped CI token must not
    claim another service's."""
    require(principal, Action.REGISTER_ARTIFACT)
    if principal.role is Role.ADMIN or not principal.services:
        return
    if any(artifact_name == s or artifact_name.startswith(f"{s}/") for s in principal.services):
        return
    raise PermissionDenied(
        f"token {principal.name!r} may register artifacts only under the names of its "
        f"services ({', '.join(f'{s} or {s}/…' for s in principal.services)}), "
        f"not {artifact_name!r}"
    )


def is_listed_approver(principal: Principal, approvers: tuple[str, ...]) -> bool:
    """Whether the manifest's `approvers` allow this token: by its name or its role. An
    empty list allows every token that may deploy to the target (admins included); a list
    that names neither an admin's token nor `admin` leaves admins out: the manifest says
    who signs off (an admin can still cancel, or change the manifest, both audited)."""
    if not approvers:
        return True
    return principal.name in approvers or principal.role.value in approvers


def require_approver(principal: Principal, d: Deployment) -> None:
    """Approving needs deploy scope on the target, a place in the manifest's `approvers`,
    and another identity than the requester: another token, and another name (a person's
    second token carries their name: it cannot approve their own request either)."""
    require(principal, Action.APPROVE)
    require_deploy_scope(principal, d.service, d.environment)
    if principal.token_id == d.created_by_token or principal.name == d.created_by:
        raise PermissionDenied(
            f"token {principal.name!r} requested deployment {d.id}: another identity must "
            "approve it"
        )
    approvers = d.manifest_settings.approvers
    if not is_listed_approver(principal, approvers):
        raise PermissionDenied(
            f"token {principal.name!r} (role {principal.role.value}) is not among the approvers "
            f"of {d.service}/{d.environment}: {', '.join(approvers)} (approvers: in "
            f"{d.manifest_folder or 'its sami.yaml'})"
        )


def require_rejecter(principal: Principal, d: Deployment) -> None:
    """Rejecting needs deploy scope on the target and one of: a place among the approvers,
    the admin role, or being the requester (who withdraws the request)."""
    require(principal, Action.APPROVE)
    require_deploy_scope(principal, d.service, d.environment)
    if principal.role is Role.ADMIN or principal.token_id == d.created_by_token:
        return
    if not is_listed_approver(principal, d.manifest_settings.approvers):
        raise PermissionDenied(
            f"token {principal.name!r} may not reject deployment {d.id}: only its approvers "
            f"({', '.join(d.manifest_settings.approvers)}), an admin or its requester may"
        )
