"""Secrets of a service in an environment (`sami secret`, docs/secrets.md).

The client encrypts a value with age to the recipients of the cluster that serves the
environment (core/recipients.py) and sends the ciphertext; the control plane checks what it
can without the key (an age file, made for the cluster's recipients as they are now, not too
large: core/age_files.py), stores it as a new version, and hands it out: to the agent that
runs a deployment (in its Assignment) and to `sami secret rekey` (ExportSecrets). It never
sees a value.

Every set adds a version. A deployment records the versions of its service/environment
when it is created (`record`), a rollback those of the deployment it goes back to, and its
assignment carries the recorded versions' ciphertexts (`payloads`). Removing a secret hides
the name from new deployments; its versions stay, for rollbacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sami_control.core import age_files, authz, recipients, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import Deployment, DeploymentAction, Principal, SecretVersion
from sami_control.core.store import Tx

# Swarm's limit on a secret's data (swarmkit's MaxSecretSize): a larger value could never
# be deployed, so it is refused when it is set.
MAX_SECRET_BYTES = 500 * 1024
# The largest ciphertext accepted: the largest value, ASCII-armored (4/3), with room for
# the header of many recipients. Refused before it is parsed.
MAX_CIPHERTEXT_BYTES = 720 * 1024
# As Swarm names secrets and configs.
_SECRET_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")


@dataclass(frozen=True)
class ListedSecret:
    version: SecretVersion
    # Encrypted to another set than the cluster's recipients now: `sami secret rekey`.
    stale_recipients: bool


@dataclass(frozen=True)
class RecipientSet:
    cluster: str
    recipients: list[str]  # sorted, de-duplicated
    digest: str


def secret_name(field: str, value: str) -> str:
    if not _SECRET_NAME.fullmatch(value):
        raise InvalidArgument(
            field,
            f"secret name {value[:80]!r} must be 1-64 letters, digits, '_', '-' or '.', "
            "starting and ending with a letter or digit (as Swarm names secrets)",
        )
    return value


def _target(service: str, environment: str, name: str = "") -> str:
    return f"{service}/{environment}" + (f"/{name}" if name else "")


def _subject(
    self: Secrets, who: Principal, service: str, environment: str, *rest: object
) -> Subject:
    name = rest[0] if rest and isinstance(rest[0], str) else ""
    return Subject(who, _target(service, environment, name[:64]), service)


async def recipient_set(tx: Tx, environment: str) -> RecipientSet:
    """The recipients a secret of `environment` must be encrypted to; FailedPrecondition
    when none can be (no cluster serves it, or its cluster has no recipient yet)."""
    cluster = await tx.cluster_for_environment(environment)
    if cluster is None:
        raise FailedPrecondition(
            f"no cluster serves environment {environment!r}, so there is no key to encrypt "
            f"its secrets to: create one with `sami cluster create NAME --env {environment}`"
        )
    found = await recipients.current(tx, cluster)
    if not found:
        raise FailedPrecondition(
            f"cluster {cluster} has no recipients yet, so there is no key to encrypt to: start "
            f"an agent of cluster {cluster} (it creates its key and registers it), or add a "
            f"public key with `sami cluster recipient add {cluster} AGE1…`"
        )
    return RecipientSet(cluster, found, age_files.recipients_digest(found))


async def record(tx: Tx, d: Deployment) -> None:
    """Record on the new deployment `d` the secret versions and variables it will use: a
    rollback's are those of the deployment it goes back to (so it reproduces it), every
    other deploy's are the current ones of its service/environment. A teardown uses none."""
    if d.action is not DeploymentAction.DEPLOY:
        return
    if d.rollback_of:
        target = await tx.get_deployment(d.rollback_of.removeprefix("deployments/"))
        if target is not None:
            d.secrets = dict(target.secrets)
            d.variables = dict(target.variables)
            return
    latest = await tx.latest_secrets(d.service, d.environment)
    d.secrets = {v.name: v.version for v in latest if not v.removed}
    d.variables = {v.name: v.value for v in await tx.list_variables(d.service, d.environment)}


async def payloads(tx: Tx, d: Deployment) -> list[SecretVersion]:
    """The versions `d` recorded, with their ciphertexts, for its assignment."""
    if not d.secrets:
        return []
    return await tx.get_secret_versions(d.service, d.environment, d.secrets)


def _check_ciphertext(ciphertext: bytes) -> age_files.AgeHeader:
    if len(ciphertext) > MAX_CIPHERTEXT_BYTES:
        raise InvalidArgument(
            "ciphertext",
            f"{len(ciphertext)} bytes, more than {MAX_CIPHERTEXT_BYTES}: a secret's value is "
            f"at most {MAX_SECRET_BYTES} bytes (Swarm's limit)",
        )
    try:
        header = age_files.parse(ciphertext)
    except age_files.NotAgeFile as exc:
        raise InvalidArgument("ciphertext", str(exc)) from None
    if "scrypt" in header.other_types:
        raise InvalidArgument(
            "ciphertext",
            "was encrypted with a passphrase: encrypt it to the cluster's recipients "
            "(`sami secret set` does)",
        )
    if header.plaintext_bytes > MAX_SECRET_BYTES:
        raise InvalidArgument(
            "ciphertext",
            f"holds a value of {header.plaintext_bytes} bytes, more than Swarm's limit of "
            f"{MAX_SECRET_BYTES}",
        )
    return header


class Secrets:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @staticmethod
    def _check_target(service: str, environment: str) -> tuple[str, str]:
        service = validation.name("service", service, "service name")
        return service, validation.environment("environment", environment)

    async def get_recipients(self, who: Principal, service: str, environment: str) -> RecipientSet:
        service, env = self._check_target(service, environment)
        authz.require_secrets_scope(who, service, env)
        async with self.ctx.store.tx() as tx:
            return await recipient_set(tx, env)

    @audited("secret.set", _subject)
    async def set(
        self,
        who: Principal,
        service: str,
        environment: str,
        name: str,
        ciphertext: bytes,
        digest: str,
        rekey: bool,
    ) -> ListedSecret:
        service, env = self._check_target(service, environment)
        name = secret_name("name", name)
        authz.require_secrets_scope(who, service, env)
        validation.text("recipients_digest", digest, limit=100)
        header = _check_ciphertext(ciphertext)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            # Replicas setting one name at once take turns: versions are numbered in order.
            await tx.lock(f"secret:{_target(service, env, name)}")
            wanted = await recipient_set(tx, env)
            if digest != wanted.digest:
                raise FailedPrecondition(
                    f"the recipients of cluster {wanted.cluster} changed since the value was "
                    "encrypted (recipients_digest differs): run the command again"
                )
            if header.x25519_stanzas != len(wanted.recipients):
                raise InvalidArgument(
                    "ciphertext",
                    f"was encrypted to {header.x25519_stanzas} X25519 recipients, but cluster "
                    f"{wanted.cluster} has {len(wanted.recipients)}: encrypt it to every "
                    "recipient GetRecipients names (`sami secret set` does)",
                )
            latest = await self._latest(tx, service, env, name)
            if rekey and (latest is None or latest.removed):
                raise NotFound(
                    f"secret {name} of {service} in {env} is not set: there is nothing to rekey"
                )
            v = SecretVersion(
                service=service,
                environment=env,
                name=name,
                version=latest.version + 1 if latest else 1,
                ciphertext=bytes(ciphertext),
                recipients=wanted.recipients,
                set_by=who.name,
                set_at=now,
            )
            await tx.insert_secret_version(v)
            action = "secret.rekey" if rekey else "secret.set"
            await self.audit.ok(
                tx,
                who,
                action,
                _target(service, env, name),
                detail=f"version {v.version}, encrypted to the {len(v.recipients)} recipients "
                f"of cluster {wanted.cluster}",
                service=service,
            )
        return ListedSecret(v, stale_recipients=False)

    @staticmethod
    async def _latest(tx: Tx, service: str, env: str, name: str) -> SecretVersion | None:
        return next((v for v in await tx.latest_secrets(service, env) if v.name == name), None)

    @audited("secret.export", _subject)
    async def export(self, who: Principal, service: str, environment: str) -> list[SecretVersion]:
        """The current versions' ciphertexts (for `sami secret rekey`, which opens them with
        a key the caller holds). Audited: who took the ciphertexts, and which versions."""
        service, env = self._check_target(service, environment)
        authz.require_secrets_scope(who, service, env)
        async with self.ctx.store.tx() as tx:
            current = [
                v for v in await tx.latest_secrets(service, env, ciphertexts=True) if not v.removed
            ]
            await self.audit.ok(
                tx,
                who,
                "secret.export",
                _target(service, env),
                detail=", ".join(f"{v.name} v{v.version}" for v in current) or "none",
                service=service,
            )
        return current

    async def list(self, who: Principal, service: str, environment: str) -> list[ListedSecret]:
        """The newest version of each name (removed ones marked) that the caller's scope
        covers; never a value (nor a ciphertext)."""
        authz.require(who, Action.READ)
        if service:
            validation.name("service", service, "service name")
        if environment:
            validation.environment("environment", environment)
        out = []
        async with self.ctx.store.tx() as tx:
            now_by_env: dict[str, list[str]] = {}
            for v in await tx.latest_secrets(service, environment):
                if not authz.in_scope(who, v.service, v.environment):
                    continue
                if v.environment not in now_by_env:
                    cluster = await tx.cluster_for_environment(v.environment)
                    now_by_env[v.environment] = (
                        await recipients.current(tx, cluster) if cluster else []
                    )
                stale = sorted(v.recipients) != now_by_env[v.environment]
                out.append(ListedSecret(v, stale_recipients=stale))
        return out

    @audited("secret.remove", _subject)
    async def remove(
        self, who: Principal, service: str, environment: str, name: str
    ) -> ListedSecret:
        service, env = self._check_target(service, environment)
        name = secret_name("name", name)
        authz.require_secrets_scope(who, service, env)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            await tx.lock(f"secret:{_target(service, env, name)}")
            latest = await self._latest(tx, service, env, name)
            if latest is None or latest.removed:
                raise NotFound(
                    f"secret {name} of {service} in {env} is not set "
                    f"(`sami secret list {service} --env {env}`)"
                )
            await tx.mark_secret_removed(service, env, name, latest.version, now)
            latest.removed_at = now
            await self.audit.ok(
                tx,
                who,
                "secret.remove",
                _target(service, env, name),
                detail=f"version {latest.version}; new deployments no longer get it, its "
                "versions stay for rollbacks",
                service=service,
            )
        return ListedSecret(latest, stale_recipients=False)
