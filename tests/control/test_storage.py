"""The storage suite: every backend runs it (SQLite today; PostgreSQL joins BACKENDS).

Each test reopens the store where it matters: what a user relies on is what is still there
after the control plane restarts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

from sami_control.core.model import (
    AgentRecord,
    Artifact,
    ArtifactKind,
    AuditEntry,
    Cluster,
    Deployment,
    Event,
    EventType,
    Role,
    State,
    TokenRecord,
)
from sami_control.core.store import Conflict, Store
from sami_control.storage.sqlite import DataDirUnsafe, SQLiteStore

BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": SQLiteStore}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    factory = BACKENDS[request.param]
    opened: list[Store] = []

    def make() -> Store:
        s = factory(tmp_path / "data")
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def art(i: int = 1, name: str = "web") -> Artifact:
    return Artifact(
        id=f"art_{i}",
        artifact_name=name,
        kind=ArtifactKind.IMAGE,
        ref=f"reg/{name}@sha256:{i:064x}",
        digest=f"sha256:{i:064x}",
        tags=["v1"],
        labels={"team": "a"},
        created_at=float(i),
    )


def dep(
    i: int,
    service: str = "web",
    env: str = "stage",
    state: State = State.QUEUED,
    request_id: str = "",
    created_by_token: str = "",
) -> Deployment:
    return Deployment(
        id=f"dep_{i}",
        created_by_token=created_by_token,
        service=service,
        environment=env,
        pull_request=0,
        artifact_id="art_1",
        cluster="c1",
        deployment_type="swarm",
        stack_name=f"{env}_{service}",
        state=state,
        request_id=request_id,
        created_at=float(i),
        stack_files=["a.yml"],
        image_services=["web"],
    )


def seed(s: Store) -> None:
    with s.tx() as tx:
        tx.insert_cluster(Cluster("c1", ["production", "stage"], 1.0))
        tx.insert_artifact(art())


def test_data_survives_reopen(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        d = dep(1, request_id="ci-1", created_by_token="tok_ci")
        tx.insert_deployment(d)
        # Another token's request with the same key is another request.
        tx.insert_deployment(dep(2, request_id="ci-1", created_by_token="tok_other"))
        tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED, time=1.0))
    s.close()
    s2 = open_store()
    with s2.tx() as tx:
        got = tx.get_deployment("dep_1")
        assert got is not None
        assert got.stack_files == ["a.yml"] and got.image_services == ["web"]
        assert got.state is State.QUEUED and got.request_id == "ci-1"
        assert tx.get_deployment_by_request_id("tok_ci", "ci-1") == got
        other = tx.get_deployment_by_request_id("tok_other", "ci-1")
        assert other is not None and other.id == "dep_2"
        assert tx.get_deployment_by_request_id("tok_third", "ci-1") is None
        assert tx.get_artifact("art_1") == art()
        assert tx.get_cluster("c1") == Cluster("c1", ["production", "stage"], 1.0)
        assert [e.sequence for e in tx.events_after("dep_1", 0, 10)] == [1]


def test_a_failed_transaction_writes_nothing(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with pytest.raises(RuntimeError), s.tx() as tx:
        tx.insert_deployment(dep(1))
        tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))
        raise RuntimeError("boom")
    with s.tx() as tx:
        assert tx.get_deployment("dep_1") is None
        assert tx.events_after("dep_1", 0, 10) == []


def test_request_id_is_unique_but_empty_ones_are_not(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        tx.insert_deployment(dep(1, request_id="same"))
        tx.insert_deployment(dep(2))
        tx.insert_deployment(dep(3))
    with pytest.raises(Conflict), s.tx() as tx:
        tx.insert_deployment(dep(4, request_id="same"))


def test_list_is_newest_first_with_filters_and_paging(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        for i in range(1, 8):
            tx.insert_deployment(
                dep(
                    i,
                    service="web" if i % 2 else "api",
                    state=State.SUCCEEDED if i < 5 else State.QUEUED,
                )
            )
    with s.tx() as tx:
        all_ = tx.list_deployments("", "", None, 2**62, 100)
        assert [d.id for d in all_] == [f"dep_{i}" for i in range(7, 0, -1)]
        web = tx.list_deployments("web", "stage", None, 2**62, 100)
        assert [d.id for d in web] == ["dep_7", "dep_5", "dep_3", "dep_1"]
        page1 = tx.list_deployments("", "", None, 2**62, 3)
        page2 = tx.list_deployments("", "", None, page1[-1].seq, 3)
        assert [d.id for d in page1 + page2] == [f"dep_{i}" for i in range(7, 1, -1)]
        queued = tx.deployments_in_states([State.QUEUED])
        assert [d.id for d in queued] == ["dep_5", "dep_6", "dep_7"]  # oldest first
        assert tx.list_deployments("", "", State.SUCCEEDED, 2**62, 100)[0].id == "dep_4"
        assert tx.active_keys() == set()
        live = tx.get_deployment("dep_6")
        assert live is not None
        live.state = State.IN_PROGRESS
        tx.update_deployment(live)
        assert tx.active_keys() == {("api", "stage", 0)}


def test_update_round_trips_every_field(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        d = dep(1)
        tx.insert_deployment(d)
        d.state, d.agent_id, d.attempt, d.epoch, d.lease_id = State.IN_PROGRESS, "a1", 2, 7, "l"
        d.lease_expires, d.agent_sequence, d.last_sequence = 99.5, 3, 9
        d.cancel_requested, d.status_message = True, "why"
        tx.update_deployment(d)
    s.close()
    with open_store().tx() as tx:
        assert tx.get_deployment("dep_1") == d


def test_events_page_in_order(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        tx.insert_deployment(dep(1))
        for i in range(1, 1201):
            tx.append_event(
                Event("dep_1", i, EventType.PROGRESS, State.IN_PROGRESS, message=f"m{i}")
            )
    seqs = [e.sequence for e in s.iter_events("dep_1", 0)]
    assert seqs == list(range(1, 1201))
    assert [e.sequence for e in s.iter_events("dep_1", 1195)] == list(range(1196, 1201))


def test_event_sequences_cannot_repeat(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        tx.insert_deployment(dep(1))
        tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))
    with pytest.raises(Conflict), s.tx() as tx:
        tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))


def test_tokens_clusters_agents_audit(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    t = TokenRecord(
        id="t1",
        name="ci",
        role=Role.DEPLOYER,
        secret_hash="h",
        services=["web"],
        environments=["stage"],
        created_at=1.0,
    )
    with s.tx() as tx:
        tx.insert_token(t)
        tx.upsert_agent(AgentRecord("a1", "c1", "0.1", ["swarm"], 1.0, 2.0))
        tx.upsert_agent(AgentRecord("a1", "c1", "0.2", ["swarm"], 1.0, 3.0))
        tx.append_audit(AuditEntry(5.0, "t1", "ci", "deployment.create", "dep_1", "ok"))
    s.close()
    s = open_store()
    with s.tx() as tx:
        assert tx.get_token("t1") == t
        assert tx.revoke_token("t1", 9.0) is True
        assert tx.revoke_token("t1", 10.0) is False
        assert tx.get_token("t1").revoked_at == 9.0  # type: ignore[union-attr]
        assert tx.cluster_for_environment("stage") == "c1"
        assert tx.cluster_for_environment("pull_request") is None
        agents = tx.list_agents("c1")
        assert [(a.agent_id, a.version, a.last_seen_at) for a in agents] == [("a1", "0.2", 3.0)]
        assert [a.action for a in tx.list_audit(0, 10)] == ["deployment.create"]
    # An environment is served by one cluster: the schema refuses a second.
    with pytest.raises(Conflict), s.tx() as tx:
        tx.insert_cluster(Cluster("c2", ["stage"]))
    with s.tx() as tx:
        assert tx.get_cluster("c2") is None


def test_artifacts_unique_on_name_and_digest(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with pytest.raises(Conflict), s.tx() as tx:
        a = art()
        a.id = "art_other"
        tx.insert_artifact(a)
    with s.tx() as tx:
        tx.insert_artifact(art(2, "api"))
        assert tx.find_artifact("api", f"sha256:{2:064x}") == art(2, "api")
        assert [a.id for _, a in tx.list_artifacts("", 2**62, 10)] == ["art_2", "art_1"]
        assert [a.id for _, a in tx.list_artifacts("web", 2**62, 10)] == ["art_1"]


def test_queued_of_key_finds_only_that_key(open_store: Callable[[], Store]) -> None:
    s = open_store()
    seed(s)
    with s.tx() as tx:
        tx.insert_deployment(dep(1))
        tx.insert_deployment(dep(2, state=State.SUCCEEDED))
        tx.insert_deployment(dep(3, env="production"))
        tx.insert_deployment(dep(4, service="api"))
        tx.insert_deployment(dep(5))
    with s.tx() as tx:
        assert [d.id for d in tx.queued_of_key("web", "stage", 0)] == ["dep_1", "dep_5"]
        assert tx.queued_of_key("web", "stage", 7) == []


def test_sqlite_upgrade_carries_rollbacks_over_from_their_reason(tmp_path: Path) -> None:
    """A data folder written before deployments had rollback_of (schema 4): opening it
    upgrades it in place, and the rollbacks `sami rollback` made say what they went back to."""
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    for migration in MIGRATIONS[:4]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 4")
    target, rollback, other = "dep_" + "1" * 16, "dep_" + "2" * 16, "dep_" + "3" * 16
    columns = (
        "id, service, environment, pull_request, cluster, action, deployment_type, stack_name,"
        " state, reason, request_hash, status_message, agent_id, attempt, epoch, lease_id,"
        " lease_expires, agent_sequence, last_sequence, cancel_requested, created_by,"
        " created_at, updated_at, finished_at, manifest_revision, converge_timeout,"
        " stack_files, image_services, manifest_folder, manifest_settings"
    )
    for ident, reason in (
        (target, "release 1"),
        (rollback, f"rollback to {target}: broke login"),
        (other, "rollback to the old one, by hand"),
    ):
        conn.execute(
            f"INSERT INTO deployments ({columns}) VALUES "
            "(?, 'web', 'stage', 0, 'c1', 1, 'swarm', 'stage_web', 4, ?, '', '', '', 1, 1, '',"
            " 0, 0, 1, 0, 'ci', 1, 1, 1, 'rev', 300, '[]', '[]', 'f', '{}')",
            (ident, reason),
        )
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        with store.tx() as tx:
            got = {i: tx.get_deployment(i) for i in (target, rollback, other)}
        assert {i: d.rollback_of for i, d in got.items() if d} == {
            target: "",
            rollback: target,
            other: "",
        }
        assert got[rollback] is not None and got[rollback].reason.endswith("broke login")
    finally:
        store.close()


def test_a_loose_data_folder_is_tightened_to_0700_and_logged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # whatever the umask said
    with structlog.testing.capture_logs() as logs:
        SQLiteStore(data).close()
    assert data.stat().st_mode & 0o777 == 0o700
    assert [e for e in logs if e["event"] == "data_folder_tightened"] == [
        {
            "event": "data_folder_tightened",
            "log_level": "warning",
            "path": str(data),
            "was": "0755",
            "now": "0700",
        }
    ]


def test_a_loose_data_folder_that_is_not_ours_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    data.chmod(0o750)

    def not_allowed(path: object, mode: int) -> None:  # what chmod says to a non-owner
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", not_allowed)
    with pytest.raises(DataDirUnsafe, match=r"mode 0750: other users may read it.*chmod 700"):
        SQLiteStore(data)
    assert not (data / "sami.db").exists()


def test_a_private_data_folder_is_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with structlog.testing.capture_logs() as logs:
        SQLiteStore(data).close()
    assert data.stat().st_mode & 0o777 == 0o700
    assert not [e for e in logs if e["event"] == "data_folder_tightened"]


def test_serve_refuses_a_loose_data_folder_it_cannot_tighten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from sami_control.server import ControlServer, ListenRefused, ServeConfig

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)

    def not_allowed(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    async def build() -> None:
        ControlServer(ServeConfig(data_dir=data))

    monkeypatch.setattr(os, "chmod", not_allowed)
    with pytest.raises(ListenRefused, match="other users may read it"):
        asyncio.run(build())
    monkeypatch.undo()
    # The data folder's lock was released: a server can start once the folder is fixed.
    data.chmod(0o700)

    async def build_and_close() -> None:
        ControlServer(ServeConfig(data_dir=data)).close()

    asyncio.run(build_and_close())


def test_sqlite_upgrade_keys_agents_by_cluster(tmp_path: Path) -> None:
    """A data folder written when agents were keyed by id alone (schema 5): its records are
    kept, and afterwards two clusters may each have an agent of the same id."""
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    for migration in MIGRATIONS[:5]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO agents VALUES ('mgr-1', 'prod', '0.1', '[\"swarm\"]', 1, 2)")
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        with store.tx() as tx:
            tx.upsert_agent(AgentRecord("mgr-1", "stage", "0.2", ["swarm"], 3.0, 4.0))
            tx.upsert_agent(AgentRecord("mgr-1", "stage", "0.3", ["swarm"], 3.0, 5.0))
            got = [(a.cluster, a.agent_id, a.version) for a in tx.list_agents("")]
        assert got == [("prod", "mgr-1", "0.1"), ("stage", "mgr-1", "0.3")]
    finally:
        store.close()


def test_sqlite_upgrade_scopes_request_ids_to_the_token(tmp_path: Path) -> None:
    """A data folder from when request ids were unique across tokens (schema 6): a
    deployment gets the id of the one token with the name it records, so that token's
    retries still find it, and another token may use the same key."""
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    for migration in MIGRATIONS[:6]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO tokens (id, name, role, secret_hash, cluster, services, environments,"
        " created_at, expires_at, revoked_at) VALUES"
        " ('tok_ci', 'ci', 'deployer', 'h', '', '[]', '[]', 1, 0, 0)"
    )
    conn.execute(
        "INSERT INTO deployments (id, service, environment, pull_request, cluster, action,"
        " deployment_type, stack_name, state, reason, request_id, request_hash,"
        " status_message, agent_id, attempt, epoch, lease_id, lease_expires, agent_sequence,"
        " last_sequence, cancel_requested, created_by, created_at, updated_at, finished_at,"
        " manifest_revision, converge_timeout, stack_files, image_services, manifest_folder,"
        " manifest_settings) VALUES ('dep_1', 'web', 'stage', 0, 'c1', 1, 'swarm',"
        " 'stage_web', 4, '', 'ci-7', 'h', '', '', 1, 1, '', 0, 0, 1, 0, 'ci', 1, 1, 1,"
        " 'rev', 300, '[]', '[]', 'f', '{}')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        with store.tx() as tx:
            found = tx.get_deployment_by_request_id("tok_ci", "ci-7")
            assert found is not None and found.id == "dep_1"
            tx.insert_artifact(art())
            tx.insert_deployment(dep(2, request_id="ci-7", created_by_token="tok_admin"))
            assert tx.get_deployment_by_request_id("tok_admin", "ci-7").id == "dep_2"  # type: ignore[union-attr]
    finally:
        store.close()
