"""The storage conformance suite, continued: target locks and the finished deploys
quarantine is decided on, on every backend (the fixtures are test_storage.py's)."""

from __future__ import annotations

from dataclasses import replace

from sami_control.core.model import DeploymentAction, State, TargetLock
from tests.control.test_storage import OpenStore, dep, open_store, seed

__all__ = ["open_store"]  # the fixture, for pytest


def lock(env: str = "production", service: str = "", at: float = 10.0) -> TargetLock:
    return TargetLock(
        environment=env,
        service=service,
        reason="release freeze",
        holder="alice",
        holder_token="tok_a",
        created_at=at,
        expires_at=at + 3600,
    )


async def test_target_locks_round_trip_replace_list_and_delete(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        await tx.put_target_lock(lock(service="web", at=20.0))
        await tx.put_target_lock(lock(at=10.0))
        await tx.put_target_lock(lock(env="stage", at=30.0))
    s = await open_store()  # a restart (or another replica) sees them
    async with s.tx() as tx:
        assert await tx.get_target_lock("production", "") == lock(at=10.0)
        assert await tx.get_target_lock("production", "api") is None
        listed = await tx.list_target_locks()
        assert [(lk.environment, lk.service) for lk in listed] == [
            ("production", ""),
            ("production", "web"),
            ("stage", ""),
        ]
        assert [lk.service for lk in await tx.list_target_locks("production")] == ["", "web"]
        # Taking a target's lock again replaces its row (the core checked the old one ended).
        await tx.put_target_lock(replace(lock(at=50.0), holder="bob", expires_at=0.0))
    async with s.tx() as tx:
        again = await tx.get_target_lock("production", "")
        assert again is not None and (again.holder, again.expires_at) == ("bob", 0.0)
        assert await tx.delete_target_lock("production", "") is True
        assert await tx.delete_target_lock("production", "") is False
        assert [lk.service for lk in await tx.list_target_locks("production")] == ["web"]


async def test_finished_deploys_of_a_key_newest_first(open_store: OpenStore) -> None:
    s = await open_store()
    await seed(s)
    async with s.tx() as tx:
        await tx.insert_deployment(dep(1, state=State.SUCCEEDED))
        await tx.insert_deployment(dep(2, state=State.ROLLED_BACK))
        await tx.insert_deployment(dep(3, state=State.CANCELLED))
        await tx.insert_deployment(dep(4, state=State.FAILED, env="production"))
        await tx.insert_deployment(dep(5, state=State.QUEUED))
        await tx.insert_deployment(dep(6, state=State.FAILED))
        await tx.insert_deployment(dep(7, state=State.FAILED, pull_request=0, service="api"))
        teardown = dep(8, state=State.SUCCEEDED)
        teardown.action = DeploymentAction.TEARDOWN
        await tx.insert_deployment(teardown)
    async with s.tx() as tx:
        found = await tx.finished_deploys_of_key("web", "stage", 0, 10)
        assert [d.id for d in found] == ["dep_6", "dep_2", "dep_1"]
        assert [d.id for d in await tx.finished_deploys_of_key("web", "stage", 0, 2)] == [
            "dep_6",
            "dep_2",
        ]
