"""Secrets, variables and recipients in the core (core/secrets.py, variables.py,
recipients.py): what SetSecret refuses (and that a refusal stores nothing), the recipient an
agent's Hello registers, and what deployments record and their assignments carry."""

from __future__ import annotations

import pyrage
import pytest

from sami_control.core.commands import AssignCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import Outcome, Principal, Role
from sami_control.core.secrets import MAX_SECRET_BYTES
from tests import samples
from tests.control.core_env import ADMIN, AGENT_C1, REF, Clock, connect, deploy, drain, get, tick
from tests.control.test_core_safety import run_to

CI_API = Principal("t9", "ci-api", Role.DEPLOYER, services=("api",), environments=("stage",))


def new_key() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


async def seal(
    cp: ControlPlane, value: bytes, env: str = "stage", armored: bool = False
) -> tuple[bytes, str]:
    """What `sami secret set` sends: the value encrypted to the recipients GetRecipients
    names, and their digest."""
    got = await cp.secrets.get_recipients(ADMIN, "web", env)
    keys = [pyrage.x25519.Recipient.from_str(r) for r in got.recipients]
    return pyrage.encrypt(value, keys, armored=armored), got.digest


async def set_secret(
    cp: ControlPlane, name: str, value: bytes, env: str = "stage", rekey: bool = False
) -> int:
    ciphertext, digest = await seal(cp, value, env)
    stored = await cp.secrets.set(ADMIN, "web", env, name, ciphertext, digest, rekey)
    return stored.version.version


async def stored_versions(cp: ControlPlane) -> list[tuple[str, int]]:
    async with cp.store.tx() as tx:
        return [(v.name, v.version) for v in await tx.latest_secrets()]


async def audit_actions(cp: ControlPlane) -> list[tuple[str, str, str, str]]:
    async with cp.store.tx() as tx:
        rows = await tx.list_audit(0, 1000)
    return [(e.action, e.target, e.outcome, e.detail) for e in rows]


# c1's one recipient in most tests: an escrow key, as an admin adds it.
ESCROW = pyrage.x25519.Identity.generate()


@pytest.fixture
async def cp(env: tuple[ControlPlane, Clock]) -> ControlPlane:
    cp, _ = env
    await cp.recipients.add(ADMIN, "c1", str(ESCROW.to_public()), "escrow")
    return cp


async def test_set_list_remove_and_versions(cp: ControlPlane) -> None:
    assert await set_secret(cp, "db_password", b"one") == 1
    assert await set_secret(cp, "db_password", b"two") == 2
    listed = await cp.secrets.list(ADMIN, "web", "stage")
    assert [(s.version.name, s.version.version, s.stale_recipients) for s in listed] == [
        ("db_password", 2, False)
    ]
    assert listed[0].version.set_by == "admin"
    removed = await cp.secrets.remove(ADMIN, "web", "stage", "db_password")
    assert removed.version.removed
    with pytest.raises(NotFound, match="is not set"):
        await cp.secrets.remove(ADMIN, "web", "stage", "db_password")
    assert await cp.secrets.export(ADMIN, "web", "stage") == []
    # Set again after a removal: a new version, given to deployments again.
    assert await set_secret(cp, "db_password", b"three") == 3
    actions = [a[:3] for a in await audit_actions(cp) if a[0].startswith("secret.")]
    assert actions == [
        ("secret.set", "web/stage/db_password", "ok"),
        ("secret.set", "web/stage/db_password", "ok"),
        ("secret.remove", "web/stage/db_password", "ok"),
        ("secret.remove", "web/stage/db_password", "NOT_FOUND"),
        ("secret.export", "web/stage", "ok"),
        ("secret.set", "web/stage/db_password", "ok"),
    ]
    assert "version 2" in next(a for a in await audit_actions(cp) if a[0] == "secret.remove")[3]


async def test_what_set_refuses_stores_nothing(cp: ControlPlane) -> None:
    ciphertext, digest = await seal(cp, b"value")
    cases: list[tuple[bytes, str, str, str, type[Exception], str]] = [
        (b"hunter2", digest, "stage", "db", InvalidArgument, "is not an age file"),
        (ciphertext, "sha256:" + "0" * 64, "stage", "db", FailedPrecondition, "changed"),
        (ciphertext, digest, "stage", "bad/name", InvalidArgument, "as Swarm names"),
        (ciphertext, digest, "pull_request", "db", FailedPrecondition, "no recipients yet"),
        (
            pyrage.passphrase.encrypt(b"v", "pw"),
            digest,
            "stage",
            "db",
            InvalidArgument,
            "passphrase",
        ),
        (b"x" * (MAX_SECRET_BYTES * 2), digest, "stage", "db", InvalidArgument, "at most"),
    ]
    for data, dig, env, name, error, says in cases:
        with pytest.raises(error, match=says):
            await cp.secrets.set(ADMIN, "web", env, name, data, dig, False)
    # Made for another set of recipients (another cluster's key, or one key of two).
    other = pyrage.encrypt(b"v", [new_key().to_public(), new_key().to_public()])
    with pytest.raises(
        InvalidArgument, match="encrypted to 2 X25519 recipients, but cluster c1 has 1"
    ):
        await cp.secrets.set(ADMIN, "web", "stage", "db", other, digest, False)
    big = pyrage.encrypt(
        b"x" * (MAX_SECRET_BYTES + 1),
        [
            pyrage.x25519.Recipient.from_str(r)
            for r in (await cp.secrets.get_recipients(ADMIN, "web", "stage")).recipients
        ],
    )
    with pytest.raises(InvalidArgument, match="more than Swarm's limit"):
        await cp.secrets.set(ADMIN, "web", "stage", "db", big, digest, False)
    with pytest.raises(NotFound, match="nothing to rekey"):
        await cp.secrets.set(ADMIN, "web", "stage", "db", ciphertext, digest, True)
    assert await stored_versions(cp) == []
    # ASCII-armored is an age file too.
    armored, digest = await seal(cp, b"value", armored=True)
    await cp.secrets.set(ADMIN, "web", "stage", "db", armored, digest, False)
    assert await stored_versions(cp) == [("db", 1)]


async def test_a_new_recipient_makes_versions_stale_and_old_digests_fail(cp: ControlPlane) -> None:
    ciphertext, digest = await seal(cp, b"value")
    await cp.secrets.set(ADMIN, "web", "stage", "db", ciphertext, digest, False)
    await cp.recipients.add(ADMIN, "c1", str(new_key().to_public()), "second")
    (listed,) = await cp.secrets.list(ADMIN, "", "")
    assert listed.stale_recipients
    with pytest.raises(FailedPrecondition, match="recipients of cluster c1 changed"):
        await cp.secrets.set(ADMIN, "web", "stage", "db", ciphertext, digest, False)
    assert await set_secret(cp, "db", b"value", rekey=True) == 2
    (listed,) = await cp.secrets.list(ADMIN, "", "")
    assert not listed.stale_recipients and len(listed.version.recipients) == 2
    assert ("secret.rekey", "web/stage/db", "ok") in [a[:3] for a in await audit_actions(cp)]


async def test_scoped_tokens_list_only_their_scope(cp: ControlPlane) -> None:
    await set_secret(cp, "db", b"v")
    await cp.variables.set(ADMIN, "web", "stage", "DOMAIN", "web.example")
    assert await cp.secrets.list(CI_API, "", "") == []
    assert await cp.variables.list(CI_API, "", "") == []
    reader = Principal("t8", "dash", Role.READER)
    assert len(await cp.secrets.list(reader, "", "")) == 1
    assert [v.value for v in await cp.variables.list(reader, "web", "")] == ["web.example"]


async def test_an_agents_hello_registers_its_recipient(cp: ControlPlane) -> None:
    key = str(new_key().to_public())
    session, _ = await cp.agents.connect(AGENT_C1, "manager-1", "1", ["swarm"], [], key)
    cp.agents.disconnect(session)
    session, _ = await cp.agents.connect(AGENT_C1, "manager-1", "1", ["swarm"], [], key)
    found = {r.recipient: r for r in await cp.recipients.list(ADMIN, "c1")}
    assert found[key].agent_id == "manager-1" and found[key].added_by == "agent manager-1"
    registered = [a for a in await audit_actions(cp) if a[0] == "recipient.register"]
    assert [a[1] for a in registered] == [f"c1/{key}"]  # once: the second Hello knew it
    with pytest.raises(InvalidArgument, match=r"hello\.recipient"):
        await cp.agents.connect(AGENT_C1, "manager-2", "1", ["swarm"], [], "age1notakey")
    assert len(await cp.recipients.list(ADMIN, "c1")) == 2


async def test_deployments_record_versions_and_rollbacks_reuse_their_targets(
    cp: ControlPlane,
) -> None:
    await set_secret(cp, "db", b"one")
    await set_secret(cp, "api_key", b"k")
    await cp.variables.set(ADMIN, "web", "stage", "DOMAIN", "one.example")
    a = await connect(cp, "a1")
    first = await deploy(cp)
    assert first.secrets == {"db": 1, "api_key": 1}
    assert first.variables == {"DOMAIN": "one.example"}
    await run_to(cp, a, first, Outcome.SUCCEEDED)
    await set_secret(cp, "db", b"two")
    await cp.secrets.remove(ADMIN, "web", "stage", "api_key")
    await cp.variables.set(ADMIN, "web", "stage", "DOMAIN", "two.example")
    second = await deploy(cp)
    assert second.secrets == {"db": 2} and second.variables == {"DOMAIN": "two.example"}
    await run_to(cp, a, second, Outcome.SUCCEEDED)
    back = await deploy(cp, REF, rollback_of=first.id)
    assert back.secrets == {"db": 1, "api_key": 1}
    assert back.variables == {"DOMAIN": "one.example"}
    assert (await get(cp, back)).secrets == back.secrets  # stored, not only returned
    await tick(cp)
    (cmd,) = [c for c in drain(a) if isinstance(c, AssignCommand)]
    assert cmd.deployment.id == back.id
    # The recorded versions' ciphertexts, which the cluster's key opens.
    sent = {(v.name, v.version): pyrage.decrypt(v.ciphertext, [ESCROW]) for v in cmd.secrets}
    assert sent == {("api_key", 1): b"k", ("db", 1): b"one"}


async def test_a_deployment_whose_stacks_need_an_unset_variable_is_refused_naming_it(
    env: tuple[ControlPlane, Clock],
) -> None:
    """Refused when created, not failed by the agent a minute later; a default, a `$$`
    escape or a comment needs no value; a rollback to a deployment that recorded none is
    refused too."""
    cp, _ = env
    a = await connect(cp, "a1")
    first = await deploy(cp)  # before the stack needed anything
    await run_to(cp, a, first, Outcome.SUCCEEDED)
    stack = samples.STACK + (
        "    environment:\n"
        "      DOMAIN: ${{DOMAIN}}\n"
        "      OPTIONAL: ${{OPT:-x}}\n"
        "      LITERAL: $$HOME\n"
        "# ${{IN_A_COMMENT}}\n"
    )
    await cp.manifests.sync(ADMIN, "", list(samples.repo(stack=stack).items()))
    before = await cp.deployments.list(ADMIN, "web", "stage", None, 100, "")
    with pytest.raises(FailedPrecondition) as refused:
        await deploy(cp)
    message = refused.value.message
    assert "${DOMAIN}" in message and "sami var set web DOMAIN=VALUE --env stage" in message
    assert "OPT" not in message and "HOME" not in message and "IN_A_COMMENT" not in message
    assert await cp.deployments.list(ADMIN, "web", "stage", None, 100, "") == before

    await cp.variables.set(ADMIN, "web", "stage", "DOMAIN", "example.test")
    d = await deploy(cp)
    assert d.variables == {"DOMAIN": "example.test"}
    # A rollback records its target's variables: the first deployment had none.
    with pytest.raises(FailedPrecondition, match="did not record"):
        await deploy(cp, rollback_of=first.id)
