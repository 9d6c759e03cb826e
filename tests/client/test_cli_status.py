"""`sami status` rows: the artifact and short digest, replicas, health with staleness and
its age, and drift with its reason."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from sami_client import render
from sami_client.errors import SamiError
from sami_client.pb import status_pb2
from sami_client.release_cmd import drift_notes
from sami_client.status_cmd import age, drift_text, health_text, status_table

NOW = 1_800_000_000.0


def _ts(t: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


def row(**kw: object) -> status_pb2.ServiceStatus:
    base = status_pb2.ServiceStatus(
        service="web",
        environment="stage",
        cluster="c1",
        stack_name="stage_web",
        swarm_service="web",
        artifact_name="web",
        running_digest="sha256:" + "a" * 64,
        deployment_id="dep_1",
        deploy_time=_ts(NOW - 600),
        desired_replicas=2,
        running_replicas=2,
        health="healthy",
        report_time=_ts(NOW - 5),
    )
    base.MergeFrom(status_pb2.ServiceStatus(**kw))  # type: ignore[arg-type]
    return base


def test_a_healthy_row() -> None:
    text = status_table([row()], NOW)
    line = text.splitlines()[-1]
    assert "web sha256:aaaaaaaaaaaa" in line and "2/2" in line and "healthy" in line
    assert line.rstrip().endswith("-")  # no drift


def test_drift_and_stale_are_spelled_out() -> None:
    drifted = row(
        drifted=True,
        drift_reason="image: runs sha256:cccccccccccc, Sami deployed sha256:aaaaaaaaaaaa",
        drift_time=_ts(NOW - 90),
    )
    assert drift_text(drifted, NOW) == (
        "DRIFT: image: runs sha256:cccccccccccc, Sami deployed sha256:aaaaaaaaaaaa (90s ago)"
    )
    stale = row(stale=True, report_time=_ts(NOW - 3 * 3600))
    assert health_text(stale, NOW) == "healthy STALE (3h ago)"
    assert health_text(row(health="degraded", unhealthy_tasks=1), NOW) == "degraded (1 unhealthy)"


def test_age() -> None:
    assert [age(s) for s in (5, 119, 600, 7300, 200000)] == ["5s", "119s", "10m", "2h", "2d"]


class FakeClient:
    def __init__(
        self,
        rows: list[status_pb2.ServiceStatus] | None,
        records: list[status_pb2.DriftRecord] | None = None,
    ) -> None:
        self.rows = rows
        self.records = records or []

    def get_status(self, service: str, environment: str) -> list[status_pb2.ServiceStatus]:
        if self.rows is None:
            raise SamiError(grpc.StatusCode.UNIMPLEMENTED, "an older control plane")
        return [r for r in self.rows if r.service == service and r.environment == environment]

    def list_drift_records(
        self, service: str, environment: str, pull_request: int = 0
    ) -> list[status_pb2.DriftRecord]:
        return list(self.records)


def test_history_notes_the_drift_of_its_target_only() -> None:
    drifted = row(drifted=True, drift_reason="replicas: scaled to 1 outside Sami (Sami deployed 2)")
    preview = row(drifted=True, drift_reason="removed: gone", pull_request=4)
    client = FakeClient([drifted, preview, row(swarm_service="worker")])
    assert drift_notes(client, "web", "stage", 0) == [  # type: ignore[arg-type]
        "drift: stage_web_web: replicas: scaled to 1 outside Sami (Sami deployed 2)"
    ]
    assert drift_notes(FakeClient(None), "web", "stage", 0) == []  # type: ignore[arg-type]


def test_history_notes_ended_drift_records_after_the_current_drift() -> None:
    drifted = row(drifted=True, drift_reason="image: runs b")
    going_on = status_pb2.DriftRecord(
        swarm_service="stage_web_web", reason="image: runs b", start_time=_ts(NOW)
    )
    ended = status_pb2.DriftRecord(
        swarm_service="stage_web_web",
        reason="replicas: scaled to 1 outside Sami (Sami deployed 2)",
        start_time=_ts(NOW - 600),
        end_time=_ts(NOW - 300),
    )
    notes = drift_notes(FakeClient([drifted], [going_on, ended]), "web", "stage", 0)  # type: ignore[arg-type]
    assert len(notes) == 2 and notes[0] == "drift: stage_web_web: image: runs b"
    assert notes[1].startswith("drift (ended ")
    assert notes[1].endswith(
        "): stage_web_web: replicas: scaled to 1 outside Sami (Sami deployed 2) (from "
        + render.timestamp(_ts(NOW - 600))
        + ")"
    )
