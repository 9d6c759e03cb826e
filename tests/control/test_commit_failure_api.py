"""A commit that fails (a disk I/O error at COMMIT), over the real API: the caller gets
UNAVAILABLE saying nothing was kept and what to do, nothing of the call is stored or
published, and the next call works. The real server and SQLite file; only the committer's
COMMIT is made to fail, once."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from sami.v1 import deployment_pb2, deployment_pb2_grpc
from tests.control.conftest import LiveServer
from tests.control.test_streams_at_scale import md, prepare


def test_a_failed_commit_answers_unavailable_and_keeps_nothing(live_server: LiveServer) -> None:
    admin, artifact = prepare(live_server)
    store = live_server.server.store
    real = store._run_commit
    failures: list[int] = []

    def failing_commit() -> None:
        # Every commit fails until the test puts the real one back (a background pass of
        # the dispatch loop may commit too: it fails alike, having nothing to keep).
        failures.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    request = deployment_pb2.CreateDeploymentRequest(
        service="web", environment="stage", artifact=artifact, request_id="ci-run-1"
    )
    with grpc.insecure_channel(live_server.addr) as ch:
        stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
        live_server.loop.call_soon_threadsafe(setattr, store, "_run_commit", failing_commit)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateDeployment(request, metadata=md(admin), timeout=10)
        live_server.loop.call_soon_threadsafe(setattr, store, "_run_commit", real)
        assert failures
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "could not store the change (disk I/O error)" in caught.value.details()
        assert "nothing of it was kept" in caught.value.details()
        listed = stub.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
        assert list(listed.deployments) == []
        # Retrying with the same request_id is safe: it was never stored, so it is new.
        d = stub.CreateDeployment(request, metadata=md(admin), timeout=10)
        again = stub.CreateDeployment(request, metadata=md(admin), timeout=10)
        assert again.id == d.id
        listed = stub.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
        assert [x.id for x in listed.deployments] == [d.id]
