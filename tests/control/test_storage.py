"""The storage conformance suite: every backend of the store interface (core/store.py) runs
it, SQLite and a real PostgreSQL (a private cluster, tests/pg.py), and must behave alike.

Each test reopens the store where it matters: what a user relies on is what is still there
after the control plane restarts. What only one backend has (SQLite's data folder and its
upgrades; PostgreSQL's lost connections and migrations) is in test_storage_sqlite.py and
test_storage_postgres.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sami_control.core.model import (
    AgentRecord,
    Artifact,
    ArtifactKind,
    AuditEntry,
    Cluster,
    CronRun,
    CronRunOutcome,
    Deployment,
    Event,
    EventType,
    ManifestRevision,
    Role,
    State,
    TokenRecord,
)
from sami_control.core.store import Conflict, Store
from sami_control.storage.postgres import PostgresStore
from sami_control.storage.sqlite import SQLiteStore

BACKENDS = ("sqlite", "postgresql")

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens the backend's store (each call another one, on the same data: a restart, or a
    second replica); closes them all at the end."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_database").url

        def factory() -> Store:
            return PostgresStore(url, pool_size=4)
    else:

        def factory() -> Store:
            return SQLiteStore(tmp_path / "data")

    opened: list[Store] = []

    async def make() -> Store:
        s = factory()
        await s.open()
        opened.append(s)
        return s

    yield make
    for s in opened:
        await s.close()


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
    pull_request: int = 0,
) -> Deployment:
    return Deployment(
        id=f"dep_{i}",
        created_by_token=created_by_token,
        service=service,
        environment=env,
        pull_request=pull_request,
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


async def seed(s: Store) -> None:
    async with s.tx() as tx:
        await tx.insert_cluster(Cluster("c1", ["production", "stage"], 1.0))
        await tx.insert_artifact(art())


async def test_data_survives_reopen(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        d = dep(1, request_id="ci-1", created_by_token="tok_ci")
        await tx.insert_deployment(d)
        # Another token's request with the same key is another request.
        await tx.insert_deployment(dep(2, request_id="ci-1", created_by_token="tok_other"))
        await tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED, time=1.0))
    await s.close()
    s2 = await open_store()
    async with s2.tx() as tx:
        got = await tx.get_deployment("dep_1")
        assert got is not None
        assert got.stack_files == ["a.yml"] and got.image_services == ["web"]
        assert got.state is State.QUEUED and got.request_id == "ci-1"
        assert got.seq == d.seq > 0
        assert await tx.get_deployment_by_request_id("tok_ci", "ci-1") == got
        other = await tx.get_deployment_by_request_id("tok_other", "ci-1")
        assert other is not None and other.id == "dep_2"
        assert await tx.get_deployment_by_request_id("tok_third", "ci-1") is None
        assert await tx.get_artifact("art_1") == art()
        assert await tx.get_cluster("c1") == Cluster("c1", ["production", "stage"], 1.0)
        assert [e.sequence for e in await tx.events_after("dep_1", 0, 10)] == [1]


async def test_a_failed_transaction_writes_nothing(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    with pytest.raises(RuntimeError):
        async with s.tx() as tx:
            await tx.insert_deployment(dep(1))
            await tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))
            raise RuntimeError("boom")
    async with s.tx() as tx:
        assert await tx.get_deployment("dep_1") is None
        assert await tx.events_after("dep_1", 0, 10) == []


async def test_request_id_is_unique_but_empty_ones_are_not(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1, request_id="same"))
        await tx.insert_deployment(dep(2))
        await tx.insert_deployment(dep(3))
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            await tx.insert_deployment(dep(4, request_id="same"))
    # The conflict undid its whole transaction, and the store goes on.
    async with s.tx() as tx:
        assert await tx.get_deployment("dep_4") is None
        await tx.insert_deployment(dep(5, request_id="other"))


async def test_list_is_newest_first_with_filters_and_paging(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        for i in range(1, 8):
            await tx.insert_deployment(
                dep(
                    i,
                    service="web" if i % 2 else "api",
                    state=State.SUCCEEDED if i < 5 else State.QUEUED,
                )
            )
    async with s.tx() as tx:
        all_ = await tx.list_deployments("", "", None, 2**62, 100)
        assert [d.id for d in all_] == [f"dep_{i}" for i in range(7, 0, -1)]
        web = await tx.list_deployments("web", "stage", None, 2**62, 100)
        assert [d.id for d in web] == ["dep_7", "dep_5", "dep_3", "dep_1"]
        page1 = await tx.list_deployments("", "", None, 2**62, 3)
        page2 = await tx.list_deployments("", "", None, page1[-1].seq, 3)
        assert [d.id for d in page1 + page2] == [f"dep_{i}" for i in range(7, 1, -1)]
        queued = await tx.deployments_in_states([State.QUEUED])
        assert [d.id for d in queued] == ["dep_5", "dep_6", "dep_7"]  # oldest first
        both = await tx.deployments_in_states([State.QUEUED, State.SUCCEEDED], cluster="c1")
        assert [d.id for d in both] == [f"dep_{i}" for i in range(1, 8)]
        assert await tx.deployments_in_states([State.QUEUED], cluster="c2") == []
        assert (await tx.list_deployments("", "", State.SUCCEEDED, 2**62, 100))[0].id == "dep_4"
        assert await tx.active_keys() == set()
        live = await tx.get_deployment("dep_6")
        assert live is not None
        live.state = State.IN_PROGRESS
        await tx.update_deployment(live)
        assert await tx.active_keys() == {("api", "stage", 0)}
        assert await tx.key_busy("api", "stage", 0)
        assert not await tx.key_busy("api", "production", 0)
        assert not await tx.key_busy("web", "stage", 0)


async def test_latest_of_a_key_and_of_each_preview(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1))
        await tx.insert_deployment(dep(2, state=State.SUCCEEDED))
        await tx.insert_deployment(dep(3, env="pull_request", pull_request=7))
        await tx.insert_deployment(dep(4, env="pull_request", pull_request=5))
        await tx.insert_deployment(dep(5, env="pull_request", pull_request=7))
        await tx.insert_deployment(dep(6, service="api", env="pull_request", pull_request=5))
    async with s.tx() as tx:
        latest = await tx.latest_for_key("web", "stage", 0)
        assert latest is not None and latest.id == "dep_2"
        assert await tx.latest_for_key("web", "stage", 0, cluster="c2") is None
        assert (await tx.latest_for_key("web", "stage", 0, cluster="c1")).id == "dep_2"  # type: ignore[union-attr]
        assert await tx.latest_for_key("web", "production", 0) is None
        assert [d.id for d in await tx.latest_previews("web")] == ["dep_4", "dep_5"]


async def test_update_round_trips_every_field(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        d = dep(1)
        await tx.insert_deployment(d)
        d.state, d.agent_id, d.attempt, d.epoch, d.lease_id = State.IN_PROGRESS, "a1", 2, 7, "l"
        d.lease_expires, d.agent_sequence, d.last_sequence = 99.5, 3, 9
        d.cancel_requested, d.status_message = True, "why"
        d.updated_at, d.finished_at = 12.25, 13.5
        await tx.update_deployment(d)
    await s.close()
    async with (await open_store()).tx() as tx:
        assert await tx.get_deployment("dep_1") == d


async def test_events_page_in_order(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1))
        for i in range(1, 1201):
            await tx.append_event(
                Event("dep_1", i, EventType.PROGRESS, State.IN_PROGRESS, message=f"m{i}")
            )
    seqs = [e.sequence async for e in s.iter_events("dep_1", 0)]
    assert seqs == list(range(1, 1201))
    assert [e.sequence async for e in s.iter_events("dep_1", 1195)] == list(range(1196, 1201))
    async with s.tx() as tx:
        page = await tx.events_after("dep_1", 10, 2)
    assert [(e.sequence, e.message, e.type, e.state) for e in page] == [
        (11, "m11", EventType.PROGRESS, State.IN_PROGRESS),
        (12, "m12", EventType.PROGRESS, State.IN_PROGRESS),
    ]


async def test_event_sequences_cannot_repeat(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1))
        await tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            await tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))


async def test_tokens_clusters_agents_audit(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    t = TokenRecord(
        id="t1",
        name="ci",
        role=Role.DEPLOYER,
        secret_hash="h",
        services=["web"],
        environments=["stage"],
        created_at=1.0,
        created_by="admin",
    )
    older = TokenRecord(id="t0", name="boot", role=Role.ADMIN, secret_hash="h0", created_at=0.5)
    async with s.tx() as tx:
        await tx.insert_token(t)
        await tx.insert_token(older)
        await tx.upsert_agent(AgentRecord("a1", "c1", "0.1", ["swarm"], 1.0, 2.0))
        await tx.upsert_agent(AgentRecord("a1", "c1", "0.2", ["swarm"], 1.0, 3.0))
        await tx.append_audit(AuditEntry(5.0, "t1", "ci", "deployment.create", "dep_1", "ok"))
    await s.close()
    s = await open_store()
    async with s.tx() as tx:
        assert await tx.get_token("t1") == t
        assert [x.id for x in await tx.list_tokens()] == ["t0", "t1"]  # oldest first
        assert await tx.revoke_token("t1", 9.0) is True
        assert await tx.revoke_token("t1", 10.0) is False
        assert await tx.revoke_token("t_none", 10.0) is False
        assert (await tx.get_token("t1")).revoked_at == 9.0  # type: ignore[union-attr]
        assert await tx.cluster_for_environment("stage") == "c1"
        assert await tx.cluster_for_environment("pull_request") is None
        agents = await tx.list_agents("c1")
        assert [(a.agent_id, a.version, a.last_seen_at) for a in agents] == [("a1", "0.2", 3.0)]
        assert [a.action for a in await tx.list_audit(0, 10)] == ["deployment.create"]
    # An environment is served by one cluster: the schema refuses a second.
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            await tx.insert_cluster(Cluster("c2", ["stage"]))
    async with s.tx() as tx:
        assert await tx.get_cluster("c2") is None


async def test_clusters_list_and_change_their_environments(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_cluster(Cluster("B-prod", ["pull_request"], 2.0))
        await tx.set_cluster_environments("c1", ["stage"])
    async with s.tx() as tx:
        # Byte order, as SQLite sorts ("B" before "c"), whatever the database's locale.
        assert await tx.list_clusters() == [
            Cluster("B-prod", ["pull_request"], 2.0),
            Cluster("c1", ["stage"], 1.0),
        ]
        assert await tx.cluster_for_environment("production") is None
        await tx.set_cluster_environments("c1", [])
    async with s.tx() as tx:
        assert await tx.get_cluster("c1") == Cluster("c1", [], 1.0)


async def test_agents_are_keyed_by_cluster_and_can_be_forgotten(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        await tx.upsert_agent(AgentRecord("mgr-1", "stage", "0.1", ["swarm"], 1.0, 2.0))
        await tx.upsert_agent(AgentRecord("mgr-1", "prod", "0.2", ["swarm", "cron"], 1.0, 2.0))
        await tx.upsert_agent(AgentRecord("Mgr-0", "prod", "0.2", [], 1.0, 2.0))
    async with s.tx() as tx:
        everyone = [(a.agent_id, a.cluster) for a in await tx.list_agents("")]
        assert everyone == [("Mgr-0", "prod"), ("mgr-1", "prod"), ("mgr-1", "stage")]
        prod = await tx.list_agents("prod")
        assert prod[1].capabilities == ["swarm", "cron"]
        assert await tx.delete_agent("stage", "mgr-1") is True
        assert await tx.delete_agent("stage", "mgr-1") is False
        assert [a.cluster for a in await tx.list_agents("")] == ["prod", "prod"]


async def test_artifacts_unique_on_name_and_digest(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            a = art()
            a.id = "art_other"
            await tx.insert_artifact(a)
    async with s.tx() as tx:
        await tx.insert_artifact(art(2, "api"))
        same_digest = art(3, "api-copy")
        same_digest.digest = art(1).digest
        await tx.insert_artifact(same_digest)
        assert await tx.find_artifact("api", f"sha256:{2:064x}") == art(2, "api")
        assert await tx.find_artifact("api", "sha256:none") is None
        listed = await tx.list_artifacts("", 2**62, 10)
        assert [a.id for _, a in listed] == ["art_3", "art_2", "art_1"]
        after = await tx.list_artifacts("", listed[0][0], 1)
        assert [a.id for _, a in after] == ["art_2"]
        assert [a.id for _, a in await tx.list_artifacts("web", 2**62, 10)] == ["art_1"]
        by_digest = await tx.find_artifacts_by_digest(art(1).digest)
        assert [a.id for a in by_digest] == ["art_1", "art_3"]


async def test_queued_of_key_finds_only_that_key(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1))
        await tx.insert_deployment(dep(2, state=State.SUCCEEDED))
        await tx.insert_deployment(dep(3, env="production"))
        await tx.insert_deployment(dep(4, service="api"))
        await tx.insert_deployment(dep(5))
    async with s.tx() as tx:
        assert [d.id for d in await tx.queued_of_key("web", "stage", 0)] == ["dep_1", "dep_5"]
        assert await tx.queued_of_key("web", "stage", 7) == []


def revision(i: int) -> ManifestRevision:
    return ManifestRevision(
        id=f"rev_{i}",
        commit=f"{i:040x}",
        created_at=float(i),
        created_by="ci",
        file_count=2,
        entries=[{"service": "web", "environment": "stage", "files": ["web/stage.yml"]}],
        warnings=[{"path": "x", "message": f"w{i}"}],
    )


async def test_manifest_revisions_and_their_files(open_store: OpenStore) -> None:
    s = await open_store()
    files = {"web/stage.yml": b"services: {}\n", "web/bin.dat": bytes(range(256))}
    async with s.tx() as tx:
        assert await tx.current_manifest_revision() is None
        assert await tx.current_manifest_revision_id() is None
        for i in (1, 2, 3):
            rev = revision(i)
            rev.synced_seq = await tx.next_synced_seq()
            await tx.insert_manifest_revision(rev, files if i == 2 else {})
        # A revision synced again becomes the current one.
        await tx.mark_revision_synced("rev_1", await tx.next_synced_seq())
    await s.close()
    s = await open_store()
    async with s.tx() as tx:
        assert await tx.current_manifest_revision_id() == "rev_1"
        current = await tx.current_manifest_revision()
        assert current is not None and current.synced_seq == 4
        assert current.entries == revision(1).entries
        got = await tx.get_manifest_revision("rev_2")
        assert got is not None and got.commit == revision(2).commit and got.synced_seq == 2
        assert got.warnings == [{"path": "x", "message": "w2"}]
        assert await tx.get_manifest_revision("rev_9") is None
        listed = await tx.list_manifest_revisions(2**62, 2)
        assert [r.id for r in listed] == ["rev_1", "rev_3"]
        more = await tx.list_manifest_revisions(listed[-1].synced_seq, 10)
        assert [r.id for r in more] == ["rev_2"]
        assert await tx.manifest_files("rev_2") == files
        assert await tx.manifest_files("rev_2", "web/s") == {
            "web/stage.yml": files["web/stage.yml"]
        }
        assert await tx.manifest_files("rev_2", "api/") == {}
        assert await tx.manifest_files("rev_3") == {}
    # Two revisions cannot claim one sync position.
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            clash = revision(4)
            clash.synced_seq = 2
            await tx.insert_manifest_revision(clash, {})


async def test_audit_pages_from_a_time_and_a_position(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        for i in range(1, 7):
            entry = AuditEntry(
                float(i), "t1", "ci", "deployment.create", f"dep_{i}", "ok",
                request_id=f"r{i}", service="web" if i % 2 else "api",
            )  # fmt: skip
            await tx.append_audit(entry)
            assert entry.seq > 0
    async with s.tx() as tx:
        everything = await tx.list_audit(0, 100)
        assert [e.target for e in everything] == [f"dep_{i}" for i in range(1, 7)]
        assert [e.seq for e in everything] == sorted(e.seq for e in everything)
        assert everything[0].request_id == "r1" and everything[0].service == "web"
        since = await tx.list_audit(3.0, 2)
        assert [e.target for e in since] == ["dep_3", "dep_4"]
        rest = await tx.list_audit(3.0, 100, after_seq=since[-1].seq)
        assert [e.target for e in rest] == ["dep_5", "dep_6"]
        assert [e.target for e in await tx.list_audit(0, 100, service="api")] == [
            "dep_2",
            "dep_4",
            "dep_6",
        ]


async def test_audit_of_a_service_by_actions_newest_first(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        for i, (action, service) in enumerate(
            [
                ("drift.detected", "web"),
                ("deployment.create", "web"),
                ("drift.healed", "web"),
                ("drift.detected", "api"),
                ("drift.detected", "web"),
            ]
        ):
            await tx.append_audit(
                AuditEntry(float(i), "t1", "ci", action, f"t{i}", "ok", service=service)
            )
    async with s.tx() as tx:
        drift = ("drift.detected", "drift.healed")
        found = await tx.list_audit_actions("web", drift, 10)
        assert [e.target for e in found] == ["t4", "t2", "t0"]
        assert [e.target for e in await tx.list_audit_actions("web", drift, 2)] == ["t4", "t2"]
        assert await tx.list_audit_actions("db", drift, 10) == []


def cron_run(i: int, environment: str = "production", exit_code: int | None = 0) -> CronRun:
    return CronRun(
        run_id=f"run_{i}",
        deployment_id="dep_1",
        service="web",
        environment=environment,
        pull_request=0,
        cluster="c1",
        stack="production_web",
        job="nightly",
        scheduled_for=float(i),
        started_at=float(i) + 0.5,
        finished_at=float(i) + 1.5,
        outcome=CronRunOutcome.SUCCEEDED if exit_code == 0 else CronRunOutcome.FAILED,
        exit_code=exit_code,
        message=f"run {i}",
        schedule="0 3 * * *",
        agent_id="a1",
        reported_at=float(i) + 2,
    )


async def test_cron_runs_are_written_once_and_page_newest_first(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1))
        for i in range(1, 5):
            run = cron_run(i, "stage" if i == 2 else "production", None if i == 3 else i % 2)
            await tx.insert_cron_run(run)
            assert run.seq > 0
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            await tx.insert_cron_run(cron_run(1))
    async with s.tx() as tx:
        got = await tx.get_cron_run("run_3")
        assert got is not None and got.exit_code is None and got.seq > 0
        expected = cron_run(3, exit_code=None)
        expected.seq = got.seq
        assert got == expected
        assert await tx.get_cron_run("run_9") is None
        newest = await tx.list_cron_runs("web", "production", 2**62, 2)
        assert [r.run_id for r in newest] == ["run_4", "run_3"]
        older = await tx.list_cron_runs("web", "production", newest[-1].seq, 10)
        assert [r.run_id for r in older] == ["run_1"]
        assert [r.run_id for r in await tx.list_cron_runs("", "", 2**62, 10)] == [
            "run_4",
            "run_3",
            "run_2",
            "run_1",
        ]


async def test_locked_read_then_write_is_serialised(open_store: OpenStore) -> None:
    """Two replicas (two stores on one database) and several tasks each, doing what the
    core does to a deployment: lock its name, read it, write what they read plus one. No
    increment is lost (without the lock, PostgreSQL's READ COMMITTED would lose some)."""
    stores = [await open_store(), await open_store()]
    await seed(stores[0])
    async with stores[0].tx() as tx:
        await tx.insert_deployment(dep(1))

    async def increment(s: Store, times: int) -> None:
        for _ in range(times):
            async with s.tx() as tx:
                await tx.lock("deployment:dep_1")
                d = await tx.get_deployment("dep_1")
                assert d is not None
                if not isinstance(s, SQLiteStore):  # SQLite's blocks must not suspend
                    await asyncio.sleep(0)  # let the other tasks read in between
                d.attempt += 1
                await tx.update_deployment(d)

    await asyncio.gather(*(increment(stores[i % 2], 10) for i in range(6)))
    async with stores[1].tx() as tx:
        final = await tx.get_deployment("dep_1")
    assert final is not None and final.attempt == 60


async def test_one_request_id_under_concurrency_makes_one_deployment(
    open_store: OpenStore,
) -> None:
    """Several callers retry one request at once, each checking for it before creating
    it: exactly one creates it, every other is told Conflict."""
    stores = [await open_store(), await open_store()]
    await seed(stores[0])

    async def create(s: Store, i: int) -> str:
        try:
            async with s.tx() as tx:
                if await tx.get_deployment_by_request_id("tok_ci", "ci-42"):
                    return "found"
                await tx.insert_deployment(dep(i, request_id="ci-42", created_by_token="tok_ci"))
            return "created"
        except Conflict:
            return "conflict"

    outcomes = await asyncio.gather(*(create(stores[i % 2], i) for i in range(1, 9)))
    assert outcomes.count("created") == 1
    assert set(outcomes) <= {"created", "conflict", "found"}
    async with stores[1].tx() as tx:
        assert len(await tx.list_deployments("", "", None, 2**62, 100)) == 1
