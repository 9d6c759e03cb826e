"""The audit log's guarantees, in the core (no grpc): a success is recorded in the change's
own transaction, so a change and its entry commit together or not at all; a refusal is
recorded on its own; values from requests are stored escaped and bounded."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sami_control.core import audit
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import InvalidArgument, PermissionDenied
from sami_control.core.model import (
    ArtifactKind,
    AuditEntry,
    Principal,
    Role,
)
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.settings import Settings
from sami_control.core.store import Store, Tx
from sami_control.core.tokens import TokenInput
from sami_control.storage.sqlite import SQLiteStore
from tests import samples

ADMIN = Principal("t0", "admin", Role.ADMIN, peer="ipv4:10.0.0.1:5555", request_id="trace-1")
CI = Principal("t1", "ci", Role.DEPLOYER, services=("web",), environments=("stage",))
REF = "127.0.0.1:5000/web@sha256:" + "a" * 64


class FailingAudit(Store):
    """A store whose transactions fail when they append the audit entry of `action`."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.fail_on = ""

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        async with self.inner.tx() as tx:
            store = self

            class Proxy:
                def __getattr__(self, name: str) -> object:
                    return getattr(tx, name)

                async def append_audit(self, entry: AuditEntry) -> None:
                    if entry.action == store.fail_on and entry.outcome == audit.OK:
                        raise RuntimeError("disk full")
                    await tx.append_audit(entry)

            yield Proxy()  # type: ignore[misc]

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, FailingAudit]]:
    store = FailingAudit(SQLiteStore(tmp_path / "data"))
    await store.open()
    core = ControlPlane(store, Settings())
    await core.clusters.create(ADMIN, "c1", ["stage", "production"])
    await core.manifests.sync(ADMIN, "", list(samples.repo().items()))
    await core.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
    yield core, store
    await store.close()


async def entries(store: Store) -> list[AuditEntry]:
    async with store.tx() as tx:
        return await tx.list_audit(0, 1000)


@pytest.mark.parametrize(
    "action",
    ["deployment.create", "token.create", "cluster.create", "manifests.sync", "artifact.register"],
)
async def test_a_change_whose_audit_entry_fails_is_rolled_back(
    cp: tuple[ControlPlane, FailingAudit], action: str
) -> None:
    core, store = cp
    store.fail_on = action
    async with store.tx() as tx:
        before = (
            len(await tx.list_deployments("", "", None, 2**62, 1000)),
            len(await tx.list_tokens()),
            len(await tx.list_clusters()),
            await tx.current_manifest_revision(),
            len(await tx.list_artifacts("", 2**62, 1000)),
        )
    changes = {
        "deployment.create": lambda: core.deployments.create(
            ADMIN, DeploymentInput("web", "stage", REF.replace("127.0.0.1:5000/", ""))
        ),
        "token.create": lambda: core.tokens.create(ADMIN, TokenInput("reader", "x")),
        "cluster.create": lambda: core.clusters.create(ADMIN, "c2", ["pull_request"]),
        "manifests.sync": lambda: core.manifests.sync(
            ADMIN, "", list(samples.repo(("web", "api", "db")).items())
        ),
        "artifact.register": lambda: core.artifacts.register(
            ADMIN, ArtifactInput("api", ArtifactKind.IMAGE, REF.replace("web", "api"), "")
        ),
    }
    with pytest.raises(RuntimeError, match="disk full"):
        await changes[action]()
    async with store.tx() as tx:
        after = (
            len(await tx.list_deployments("", "", None, 2**62, 1000)),
            len(await tx.list_tokens()),
            len(await tx.list_clusters()),
            await tx.current_manifest_revision(),
            len(await tx.list_artifacts("", 2**62, 1000)),
        )
    assert after == before
    # With the audit working again, the same change goes through, and is recorded.
    store.fail_on = ""
    await changes[action]()
    assert (await entries(store))[-1].action == action


async def test_successes_and_refusals_carry_who_where_and_which_request(
    cp: tuple[ControlPlane, FailingAudit],
) -> None:
    core, store = cp
    d = await core.deployments.create(
        ADMIN, DeploymentInput("web", "stage", f"web@sha256:{'a' * 64}")
    )
    with pytest.raises(PermissionDenied):
        await core.deployments.create(
            CI, DeploymentInput("web", "production", d.artifact_id, request_id="ci-7")
        )
    with pytest.raises(InvalidArgument):
        await core.deployments.create(
            CI, DeploymentInput("w\u202eeb\x00" + "x" * 500, "stage", "a")
        )
    ok, denied, invalid = (await entries(store))[-3:]
    assert (ok.action, ok.target, ok.outcome, ok.service) == (
        "deployment.create",
        d.id,
        "ok",
        "web",
    )
    assert (ok.token_id, ok.token_name, ok.peer, ok.request_id) == (
        "t0",
        "admin",
        "ipv4:10.0.0.1:5555",
        "trace-1",
    )
    assert (denied.outcome, denied.request_id, denied.target) == (
        "PERMISSION_DENIED",
        "ci-7",
        "web/production",
    )
    assert "production" in denied.detail
    assert invalid.outcome == "INVALID_ARGUMENT"
    # Escaped and bounded: what a refused request carried cannot forge log lines.
    assert "\u202e" not in invalid.target and "\x00" not in invalid.target
    assert "\\u202e" in invalid.target and len(invalid.target) <= audit.MAX_TARGET
    assert len(invalid.service) <= 63


def test_clean_escapes_and_bounds() -> None:
    assert audit.clean("a\x00b\u202ec\u200bd\x1b", 100) == "a\\x00b\\u202ec\\u200bd\\x1b"
    assert audit.clean("é ok", 100) == "é ok"
    assert len(audit.clean("x" * 1000, 10)) == 10


def test_only_coroutine_functions_can_be_declared_audited() -> None:
    """A plain method's refusals would escape the (async) wrapper unrecorded: refused when
    the class is defined, not found missing from the log later."""

    def plain(self: object, who: Principal) -> None:
        raise NotImplementedError

    with pytest.raises(TypeError, match="coroutine function"):
        audit.audited("x.y", lambda self, who: audit.Subject(who, ""))(plain)  # type: ignore[arg-type]
