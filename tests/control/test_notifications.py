"""Notifications from the outbox (core/notifications.py, notify_http.py), against real HTTP
receivers on 127.0.0.1 (tests/notify_receiver.py): written with the state change, signed,
retried with backoff, dead-lettered, sent once per idempotency key, never holding up a
deployment; chat and GitHub formats; secrets never shown."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sami_control.core.commands import AssignCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import InvalidArgument, PermissionDenied
from sami_control.core.model import ArtifactKind, Deployment, Outcome, Principal, Role, State
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.settings import Settings
from sami_control.core.store import Store
from sami_control.core.transitions import move
from sami_control.notify_http import HttpTransport
from sami_control.storage.postgres import PostgresStore
from sami_control.storage.sqlite import SQLiteStore
from tests import samples
from tests.control.core_env import ADMIN, AGENT_C1, AGENT_C2, REF, connect, drain, tick
from tests.notify_receiver import Receiver, wait_for
from tests.pg import PgDatabase

DEPLOYER = Principal("t9", "ci", Role.DEPLOYER)
REPO_REF = "127.0.0.1:5000/web@sha256:" + "c" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SECRET = "s3cret-signing-key"


def verify(secret: str, headers: dict[str, str], body: bytes, now: float, window: float) -> bool:
    """The receiver's check, as docs/notifications.md shows it."""
    timestamp = headers["X-Sami-Timestamp"]
    if abs(now - int(timestamp)) > window:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + expected.hexdigest(), headers["X-Sami-Signature-256"])


async def setup(
    store: Store, files: dict[str, bytes] | None = None, **settings: object
) -> ControlPlane:
    opts: dict[str, object] = {"notify_backoff": 0.05, "notify_max_attempts": 4}
    opts.update(settings)
    cp = ControlPlane(store, Settings(**opts))  # type: ignore[arg-type]
    await cp.clusters.create(ADMIN, "c1", ["stage", "production"])
    await cp.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
    await cp.artifacts.register(
        ADMIN,
        ArtifactInput(
            "web",
            ArtifactKind.IMAGE,
            REPO_REF,
            "",
            git_repo="https://github.com/acme/web.git",
            git_commit=COMMIT,
        ),
    )
    await cp.manifests.sync(ADMIN, "", list((files or samples.repo()).items()))
    return cp


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The outbox's behaviour on both backends."""
    store: Store
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path / "data")
    else:
        store = PostgresStore(request.getfixturevalue("pg_database").url, pool_size=4)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def lifecycle(
    cp: ControlPlane,
    outcome: Outcome = Outcome.SUCCEEDED,
    environment: str = "stage",
    ref: str = REF,
    reason: str = "",
) -> Deployment:
    """One deployment from request to result, as an agent would drive it."""
    d = await cp.deployments.create(
        ADMIN, DeploymentInput("web", environment, ref, reason="release")
    )
    return await run(cp, d, outcome, reason)


async def run(
    cp: ControlPlane,
    d: Deployment,
    outcome: Outcome = Outcome.SUCCEEDED,
    reason: str = "",
    cluster: str = "c1",
    agent: Principal = AGENT_C1,
) -> Deployment:
    """Drive a created deployment to its result through an agent of `cluster`."""
    session = cp.sessions.get(cluster, "a-" + cluster) or await connect(cp, "a-" + cluster, agent)
    await tick(cp)
    (cmd,) = [c for c in drain(session) if isinstance(c, AssignCommand)]
    lease, epoch = cmd.deployment.lease_id, cmd.deployment.epoch
    await cp.reports.ack(session, d.id, lease, epoch)
    await cp.reports.result(session, d.id, lease, epoch, outcome, reason)
    drain(session)
    return d


async def started(cp: ControlPlane) -> HttpTransport:
    """The sender only: the tests drive dispatch themselves (tick), with agents whose
    tokens the background loop would not find."""
    transport = HttpTransport(timeout=2.0)
    cp.send_notifications(transport).start()
    return transport


async def stop(cp: ControlPlane, transport: HttpTransport) -> None:
    assert cp.notifications.sender is not None
    await cp.notifications.sender.stop()
    await transport.close()


async def test_the_delivery_is_in_the_outbox_of_the_state_change(any_store: Store) -> None:
    cp = await setup(any_store)  # no sender: deliveries wait
    await cp.notifications.create_target(ADMIN, "hook", "generic", "http://127.0.0.1:9/x")
    d = await lifecycle(cp)
    (row,) = await cp.notifications.list_deliveries(ADMIN)
    assert (row.deployment_id, row.event, row.status, row.attempts) == (
        d.id,
        "succeeded",
        "pending",
        0,
    )
    doc = json.loads(row.payload)
    assert doc["schema"] == "sami.notification/v1"
    assert doc["deployment"]["id"] == d.id and doc["deployment"]["state"] == "succeeded"
    assert doc["deployment"]["requested_by"] == "admin"
    assert doc["artifact"]["digest"] == "sha256:" + "a" * 64


async def test_a_generic_webhook_is_signed_and_carries_the_schema(
    any_store: Store, receiver: Receiver
) -> None:
    cp = await setup(any_store, dashboard_url="https://sami.example.com/")
    await cp.notifications.create_target(
        ADMIN, "hook", "generic", receiver.url + "/hook", secret=SECRET
    )
    transport = await started(cp)
    try:
        d = await lifecycle(cp, Outcome.FAILED, reason="task exited 1")
        await wait_for(lambda: receiver.answered == 1)
    finally:
        await stop(cp, transport)
    (req,) = receiver.requests
    assert verify(SECRET, req.headers, req.body, time.time(), 300)
    # Another body, or the same body at another time, does not verify.
    assert not verify(SECRET, req.headers, req.body + b" ", time.time(), 300)
    assert not verify(SECRET, req.headers, req.body, time.time() + 3600, 300)
    doc = req.json()
    assert doc["event"] == "failed" and doc["deployment"]["reason"] == "task exited 1"
    assert doc["links"]["dashboard"] == f"https://sami.example.com/deployments/{d.id}"
    (row,) = await cp.notifications.list_deliveries(ADMIN, "hook")
    assert req.headers["X-Sami-Delivery"] == row.id
    assert (row.status, row.attempts, row.status_code) == ("delivered", 1, 200)


async def test_a_receiver_that_fails_gets_it_later(any_store: Store) -> None:
    receiver = await Receiver(fail_first=2).start()
    cp = await setup(any_store)
    await cp.notifications.create_target(ADMIN, "hook", "generic", receiver.url)
    transport = await started(cp)
    try:
        await lifecycle(cp)
        await wait_for(lambda: receiver.answered == 1)
        await wait_for(
            lambda: _statuses(cp, "hook", "delivered"),
        )
    finally:
        await stop(cp, transport)
        await receiver.stop()
    (row,) = await cp.notifications.list_deliveries(ADMIN, "hook")
    assert (row.attempts, row.status_code, row.last_error) == (3, 200, "")
    # Every try carried the same idempotency key.
    assert {r.headers["X-Sami-Delivery"] for r in receiver.requests} == {row.id}


async def _statuses(cp: ControlPlane, name: str, status: str) -> bool:
    rows = await cp.notifications.list_deliveries(ADMIN, name)
    return bool(rows) and all(r.status == status for r in rows)


async def test_finished_deliveries_are_deleted_after_the_retention(
    any_store: Store, receiver: Receiver
) -> None:
    cp = await setup(any_store)
    await cp.notifications.create_target(ADMIN, "hook", "generic", receiver.url)
    transport = await started(cp)
    try:
        await lifecycle(cp)
        await wait_for(lambda: _statuses(cp, "hook", "delivered"))
    finally:
        await stop(cp, transport)
    await cp.notifications.create_target(ADMIN, "later", "generic", "http://127.0.0.1:9/")
    await lifecycle(cp)  # pending: never pruned, however old
    sender = cp.notifications.sender
    assert sender is not None
    sender._stopping = False  # prune() runs in a stopped sender's place here
    sender.retention = 3600.0
    assert await sender.prune() == 0  # delivered just now: kept
    sender.retention = -1.0
    assert await sender.prune() == 1
    rows = await cp.notifications.list_deliveries(ADMIN)
    assert {(r.target_name, r.status) for r in rows} == {("hook", "pending"), ("later", "pending")}


async def test_a_receiver_that_hangs_up_gets_it_again(sqlite_store: Store) -> None:
    receiver = await Receiver(close_first=1).start()
    cp = await setup(sqlite_store)
    await cp.notifications.create_target(ADMIN, "hook", "generic", receiver.url)
    transport = await started(cp)
    try:
        await lifecycle(cp)
        await wait_for(lambda: _statuses(cp, "hook", "delivered"))
    finally:
        await stop(cp, transport)
        await receiver.stop()
    (row,) = await cp.notifications.list_deliveries(ADMIN, "hook")
    assert (row.attempts, row.status_code) == (2, 200)
    assert len(receiver.requests) == 2 and receiver.answered == 1


async def test_after_the_last_attempt_it_is_dead_lettered(any_store: Store) -> None:
    receiver = await Receiver(fail_first=1000).start()
    cp = await setup(any_store, notify_max_attempts=3)
    await cp.notifications.create_target(ADMIN, "hook", "generic", receiver.url)
    transport = await started(cp)
    try:
        await lifecycle(cp)
        await wait_for(lambda: _statuses(cp, "hook", "dead"))
    finally:
        await stop(cp, transport)
        await receiver.stop()
    (row,) = await cp.notifications.list_deliveries(ADMIN, "hook")
    assert (row.attempts, row.status_code, row.last_error) == (3, 500, "HTTP 500")
    assert len(receiver.requests) == 3


async def test_a_slow_receiver_holds_up_neither_deployments_nor_other_targets(
    sqlite_store: Store,
) -> None:
    receiver = await Receiver(hang=3.0).start()
    fast = await Receiver().start()
    cp = await setup(sqlite_store)
    await cp.notifications.create_target(ADMIN, "slow", "generic", receiver.url)
    await cp.notifications.create_target(ADMIN, "fast", "generic", fast.url)
    transport = await started(cp)
    try:
        await lifecycle(cp)
        await wait_for(lambda: receiver.in_flight == 1)
        # While the receiver holds the first request, the next deployments run through,
        # and the other target hears of each.
        for _ in range(3):
            d = await lifecycle(cp)
            assert (await cp.deployments.get(ADMIN, d.id)).state.name == "SUCCEEDED"
        await wait_for(lambda: fast.answered == 4)
        assert receiver.answered == 0 and receiver.in_flight >= 1
    finally:
        await stop(cp, transport)
        await receiver.stop()
        await fast.stop()


async def test_chats_get_one_short_line_per_outcome_that_matters(
    sqlite_store: Store, receiver: Receiver
) -> None:
    cp = await setup(sqlite_store)
    await cp.notifications.create_target(ADMIN, "slack", "slack", receiver.url + "/slack")
    await cp.notifications.create_target(ADMIN, "discord", "discord", receiver.url + "/discord")
    await cp.notifications.create_target(
        ADMIN, "tg", "telegram", receiver.url + "/bot123:TOKEN/sendMessage?chat_id=-42"
    )
    transport = await started(cp)
    try:
        await lifecycle(cp)  # a success in stage: not worth a chat message by default
        await lifecycle(cp, Outcome.ROLLED_BACK, reason="health check failed")
        await lifecycle(cp, environment="production")
        await wait_for(lambda: receiver.answered == 6)
    finally:
        await stop(cp, transport)
    by_path: dict[str, list[str]] = {}
    for r in receiver.requests:
        doc = r.json()
        by_path.setdefault(r.path.split("?")[0], []).append(
            doc.get("text") or doc.get("content") or ""
        )
        if "sendMessage" in r.path:
            assert doc["chat_id"] == "-42"
    assert set(by_path) == {"/slack", "/discord", "/bot123:TOKEN/sendMessage"}
    for texts in by_path.values():
        rolled, live = sorted(texts, key=lambda t: "rolled back" not in t)
        assert "was rolled back in stage: health check failed" in rolled
        assert "asked by admin" in rolled
        assert "is live in production" in live


async def test_github_gets_a_deployment_and_its_statuses(
    any_store: Store, receiver: Receiver
) -> None:
    files = samples.repo()
    files["services/web/swarm/stage/sami.yaml"] += b"environment_url: https://stage.example.com\n"
    cp = await setup(any_store, files, dashboard_url="https://sami.example.com")
    await cp.notifications.create_target(
        ADMIN, "gh", "github", receiver.url + "/api/v3", secret="ghp_TOKEN"
    )
    transport = await started(cp)
    try:
        await lifecycle(cp)  # no provenance: nothing to tell GitHub
        d = await lifecycle(cp, ref=REPO_REF)
        await wait_for(lambda: receiver.answered == 4)
    finally:
        await stop(cp, transport)
    calls = [(r.method, r.path) for r in receiver.requests]
    assert calls[:4] == [
        ("POST", "/api/v3/repos/acme/web/deployments"),
        ("POST", "/api/v3/repos/acme/web/deployments/1001/statuses"),
        ("POST", "/api/v3/repos/acme/web/deployments/1001/statuses"),
        ("POST", "/api/v3/repos/acme/web/deployments/1001/statuses"),
    ]
    created = receiver.requests[0].json()
    assert (created["ref"], created["environment"], created["required_contexts"]) == (
        COMMIT,
        "stage",
        [],
    )
    assert len(calls) == 4
    states = [r.json()["state"] for r in receiver.requests[1:]]
    assert states == ["queued", "in_progress", "success"]
    last = receiver.requests[-1].json()
    assert last["log_url"] == f"https://sami.example.com/deployments/{d.id}"
    assert last["environment_url"] == "https://stage.example.com"
    assert all(r.headers["Authorization"] == "Bearer ghp_TOKEN" for r in receiver.requests)
    assert all(r.headers["Accept"] == "application/vnd.github+json" for r in receiver.requests)
    # `sami notify test` asks the API whether it takes the token, and creates nothing.
    cp.send_notifications(HttpTransport(timeout=2.0))
    result = await cp.notifications.test_target(ADMIN, "gh")
    assert result.ok and (receiver.requests[-1].method, receiver.requests[-1].path) == (
        "GET",
        "/api/v3/rate_limit",
    )
    assert cp.notifications.sender is not None
    await cp.notifications.sender.transport.close()  # type: ignore[attr-defined]


async def test_secrets_never_appear_in_answers_logs_or_the_audit_log(
    sqlite_store: Store,
) -> None:
    cp = await setup(sqlite_store)
    with capture_logs() as logs:
        await cp.notifications.create_target(
            ADMIN, "hook", "generic", "http://127.0.0.1:9/hook", secret=SECRET
        )
        await cp.notifications.create_target(
            ADMIN, "tg", "telegram", "http://127.0.0.1:9/botSECRETTOKEN/sendMessage?chat_id=1"
        )
        with pytest.raises(InvalidArgument) as bad:
            await cp.notifications.create_target(
                ADMIN, "bad", "generic", "ftp://127.0.0.1/botSECRETTOKEN"
            )
        transport = await started(cp)  # nothing listens on port 9: the sends fail
        try:
            await lifecycle(cp)
            await wait_for(
                lambda: _attempted(cp),
            )
        finally:
            await stop(cp, transport)
    audit, _ = await cp.audit.list(ADMIN, 0, "", 100, "")
    assert {"notify.create"} <= {e.action for e in audit}  # the refusal is there too
    answers = [
        repr(await cp.notifications.list_targets(ADMIN)),
        repr(await cp.notifications.list_deliveries(ADMIN)),
        repr(audit),
        str(bad.value),
        repr(logs),
    ]
    for text in answers:
        assert SECRET not in text and "SECRETTOKEN" not in text
    targets = await cp.notifications.list_targets(ADMIN)
    assert [(t.url, has) for t, has in targets] == [
        ("http://127.0.0.1:9/…", True),
        ("http://127.0.0.1:9/…", False),
    ]
    assert "notify_delivery" in repr(logs)  # the logs were looked at, not empty


async def _attempted(cp: ControlPlane) -> bool:
    rows = await cp.notifications.list_deliveries(ADMIN)
    return bool(rows) and all(r.attempts > 0 for r in rows)


async def test_targets_are_for_admins_only(sqlite_store: Store) -> None:
    cp = await setup(sqlite_store)
    with pytest.raises(PermissionDenied):
        await cp.notifications.create_target(DEPLOYER, "hook", "generic", "http://127.0.0.1:9/")
    with pytest.raises(PermissionDenied):
        await cp.notifications.list_targets(DEPLOYER)
    with pytest.raises(PermissionDenied):
        await cp.notifications.list_deliveries(DEPLOYER)
    with pytest.raises(InvalidArgument, match="events"):
        await cp.notifications.create_target(
            ADMIN, "hook", "generic", "http://127.0.0.1:9/", events=["exploded"]
        )


async def test_on_postgresql_two_replicas_never_send_one_delivery_twice(
    pg_database: PgDatabase,
) -> None:
    """Two control planes on one database, both sending from the outbox: every delivery
    reaches the receiver, each exactly once (the claims keep the replicas apart)."""
    stores = [PostgresStore(pg_database.url, pool_size=4) for _ in range(2)]
    for s in stores:
        await s.open()
    receiver = await Receiver(hang=0.02).start()
    transports: list[HttpTransport] = []
    try:
        one = await setup(stores[0])
        two = ControlPlane(stores[1], Settings(notify_backoff=0.05))
        await one.notifications.create_target(
            ADMIN,
            "hook",
            "generic",
            receiver.url,
            events=["queued", "assigned", "in_progress", "succeeded"],
        )
        for _ in range(8):
            await lifecycle(one)
        rows = await one.notifications.list_deliveries(ADMIN, "hook")
        assert len(rows) == 32 and {r.status for r in rows} == {"pending"}
        # Both replicas start sending the same outbox at once.
        transports = [await started(one), await started(two)]
        await wait_for(lambda: _statuses(two, "hook", "delivered"))
    finally:
        for cp, t in zip((one, two), transports, strict=False):
            await stop(cp, t)
        await receiver.stop()
        for s in stores:
            await s.close()
    assert len(receiver.requests) == 32
    assert sorted(receiver.by_delivery()) == sorted(r.id for r in rows)
    assert set(receiver.by_delivery().values()) == {1}
    # Per deployment, in the order of its events.
    for dep in {r.deployment_id for r in rows}:
        events = [
            r.json()["event"] for r in receiver.requests if r.json()["deployment"]["id"] == dep
        ]
        assert events == ["queued", "assigned", "in_progress", "succeeded"]


async def test_github_marks_a_torn_down_preview_inactive(
    sqlite_store: Store, receiver: Receiver
) -> None:
    files = samples.repo()
    files["services/web/swarm/pull_request/sami.yaml"] += (
        b"environment_url: https://pr-{pr}.preview.example.com\n"
    )
    cp = await setup(sqlite_store, files)
    await cp.clusters.create(ADMIN, "c2", ["pull_request"])
    await cp.notifications.create_target(
        ADMIN, "gh", "github", receiver.url, secret="ghp_TOKEN", events=["succeeded", "torn_down"]
    )
    transport = await started(cp)
    try:
        preview = await cp.deployments.create(
            ADMIN, DeploymentInput("web", "pull_request", REPO_REF, pull_request=7)
        )
        await run(cp, preview, cluster="c2", agent=AGENT_C2)
        await wait_for(lambda: receiver.answered == 2)
        teardown = await cp.deployments.teardown_preview(ADMIN, "web", 7, "PR closed", "")
        await run(cp, teardown, cluster="c2", agent=AGENT_C2)
        await wait_for(lambda: receiver.answered == 4)
    finally:
        await stop(cp, transport)
    created = [r.json() for r in receiver.requests if r.path.endswith("/deployments")]
    assert [(c["environment"], c["transient_environment"]) for c in created] == [
        ("pr-7", True),
        ("pr-7", True),
    ]
    statuses = [r.json() for r in receiver.requests if r.path.endswith("/statuses")]
    assert [st["state"] for st in statuses] == ["success", "inactive"]
    assert statuses[0]["environment_url"] == "https://pr-7.preview.example.com"


async def test_a_state_change_rolled_back_leaves_no_delivery(any_store: Store) -> None:
    """The delivery is part of the state change's transaction: if that transaction does not
    commit, neither does the delivery."""
    cp = await setup(any_store)
    await cp.notifications.create_target(ADMIN, "hook", "generic", "http://127.0.0.1:9/")
    d = await cp.deployments.create(ADMIN, DeploymentInput("web", "stage", REF))
    with pytest.raises(RuntimeError, match="disk full"):
        async with any_store.tx() as tx:
            held = await tx.get_deployment(d.id)
            assert held is not None
            ev = move(held, State.CANCELLED, time.time(), "cancelled")
            await tx.update_deployment(held)
            await tx.append_event(ev)
            assert await cp.notifications.outbox.enqueue(tx, held, ev) == 1
            raise RuntimeError("disk full")
    assert await cp.notifications.list_deliveries(ADMIN) == []
    assert (await cp.deployments.get(ADMIN, d.id)).state is State.QUEUED


async def test_a_deployment_awaiting_approval_tells_chats_and_its_approval_github(
    sqlite_store: Store,
) -> None:
    files = samples.repo()
    prod = "services/web/swarm/production/sami.yaml"
    files[prod] += b"approval: required\n"
    cp = await setup(sqlite_store, files)
    await cp.notifications.create_target(ADMIN, "chat", "slack", "http://127.0.0.1:9/slack")
    await cp.notifications.create_target(
        ADMIN, "gh", "github", "http://127.0.0.1:9/gh", secret="ghp_T"
    )
    d = await cp.deployments.create(
        ADMIN, DeploymentInput("web", "production", REPO_REF, reason="release")
    )
    assert d.state is State.AWAITING_APPROVAL
    other = Principal("t_bob", "bob", Role.DEPLOYER)
    await cp.approvals.approve(other, d.id, "go")
    rows = await cp.notifications.list_deliveries(ADMIN)
    told = sorted((r.target_name, r.event) for r in rows)
    # Someone must act: the chat hears of the request; GitHub sees pending, then queued.
    assert told == [
        ("chat", "awaiting_approval"),
        ("gh", "awaiting_approval"),
        ("gh", "queued"),
    ]
