"""The storage conformance suite, continued: live status rows, on every backend (the
fixtures are test_storage.py's)."""

from __future__ import annotations

from dataclasses import replace

from sami_control.core.model import LiveServiceState
from tests.control.test_storage import OpenStore, open_store

__all__ = ["open_store"]  # the fixture, for pytest


def live(cluster: str = "c1", stack: str = "production_web", name: str = "web") -> LiveServiceState:
    return LiveServiceState(
        cluster=cluster,
        stack_name=stack,
        swarm_service=name,
        service="web",
        environment="production",
        pull_request=0,
        deployment_id="dep_1",
        label_digest="sha256:" + "a" * 64,
        image="web@sha256:" + "b" * 64,
        desired_replicas=3,
        running_replicas=2,
        unhealthy_tasks=1,
        update_state="completed",
        update_message="update completed",
        change_time=1700000000.25,
        outside_change="replicas 3 -> 2",
        removed=True,
        reported_at=1700000001.5,
        degraded_since=1700000000.75,
        deployed_replicas=3,
        drift_reason="image: runs bbbb, Sami deployed aaaa",
        drift_since=1700000001.5,
    )


async def test_live_services_round_trip_replace_list_and_delete(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        await tx.put_live_service(live(name="worker"))
        await tx.put_live_service(live())
        await tx.put_live_service(live(cluster="c0", stack="stage_web"))
        await tx.put_live_service(replace(live(), running_replicas=3, removed=False))
    s = await open_store()  # a restart (or another replica) sees them
    async with s.tx() as tx:
        rows = await tx.list_live_services()
        assert [(r.cluster, r.stack_name, r.swarm_service) for r in rows] == [
            ("c0", "stage_web", "web"),
            ("c1", "production_web", "web"),
            ("c1", "production_web", "worker"),
        ]
        assert rows[1] == replace(live(), running_replicas=3, removed=False)
        assert rows[2] == live(name="worker")
        assert [r.cluster for r in await tx.list_live_services("c0")] == ["c0"]
        assert await tx.get_live_service("c1", "production_web", "worker") == live(name="worker")
        assert await tx.get_live_service("c0", "production_web", "worker") is None
        await tx.delete_live_service("c1", "production_web", "worker")
        assert len(await tx.list_live_services("c1")) == 1


async def test_live_report_times(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        assert await tx.live_report_times() == {}
        await tx.put_live_report_time("c1", 10.5)
        await tx.put_live_report_time("c1", 20.5)
        await tx.put_live_report_time("c2", 5.0)
    async with s.tx() as tx:
        assert await tx.live_report_times() == {"c1": 20.5, "c2": 5.0}
