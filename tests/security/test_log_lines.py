"""The shape of the logs of real processes (a control plane and a dry-run agent, JSON logs as
when they run under a supervisor): one canonical `deployment_state` line per state change,
each with the deployment id, service, environment, cluster and state; the agent's lines
about a job carry the same; no token appears anywhere, whether it came over gRPC or in the
webhook's Authorization header."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from sami.v1 import deployment_pb2, deployment_pb2_grpc
from tests.e2e.conftest import FAST, REF, sync
from tests.harness import ControlPlane, agent, free_port, sami, stopping

CONTEXT = ("deployment_id", "service", "environment", "cluster")


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        assert line.startswith("{"), f"not a JSON log line: {line[:300]}"
        parsed.append(json.loads(line))
    return parsed


def state_changes(addr: str, token: str, deployment_id: str) -> list[str]:
    with grpc.insecure_channel(addr) as ch:
        stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
        items = stub.WatchDeployment(
            deployment_pb2.WatchDeploymentRequest(name=deployment_id),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=30,
        )
        return [
            deployment_pb2.DeploymentState.Name(i.event.state)
            for i in items
            if i.WhichOneof("item") == "event" and i.event.type == deployment_pb2.STATE_CHANGED
        ]


def test_one_line_per_state_change_with_its_context_and_no_token(tmp_path: Path) -> None:
    webhook = free_port()
    control = ControlPlane(tmp_path, *FAST, "--webhook-listen", f"127.0.0.1:{webhook}")
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="root")
    agent_token = control.token("agent", "--cluster", "local", name="agent")
    ci = control.token("deployer", "--service", "api", "--env", "stage", name="ci-api")
    control.start()
    worker = agent(
        control, agent_token, "agent-1", tmp_path, "--dry-run", "--dry-run-step-seconds", "0.05"
    )
    with stopping([worker, control]):
        sync(control, admin)
        assert sami(control, admin, "artifact", "register", "web", "--ref", REF).rc == 0
        r = sami(control, admin, "deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
        assert r.rc == 0, r.err
        by_cli = json.loads(
            sami(control, admin, "list", "--service", "web", "--output", "json").out
        )
        req = urllib.request.Request(
            f"http://127.0.0.1:{webhook}/deployment_request",
            data=b"service=api&env=stage&artifact=" + REF.encode() + b"&wait=true",
            headers={"Authorization": f"Bearer {ci}"},
        )
        with urllib.request.urlopen(req, timeout=60) as answer:
            by_hook = json.loads(answer.read())
        assert by_hook["state"] == "SUCCEEDED"
        # A refused webhook call, with a token that is almost right.
        bad = urllib.request.Request(
            f"http://127.0.0.1:{webhook}/deployment_request",
            data=b"{}",
            headers={"Authorization": f"Bearer {ci[:-1]}{'y' if ci.endswith('x') else 'x'}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 401
        deployments = {
            _id(by_cli): ("web", "stage"),
            by_hook["deployment_id"]: ("api", "stage"),
        }
        expected = {d: state_changes(control.addr, admin, d) for d in deployments}
        control.kill(signal.SIGTERM)
        worker.kill(signal.SIGTERM)

    control_lines = json_lines(control.log_path.read_text())
    agent_lines = json_lines(worker.log())
    for dep, (service, env) in deployments.items():
        states = [
            line
            for line in control_lines
            if line.get("event") == "deployment_state" and line.get("deployment_id") == dep
        ]
        assert [s["state"] for s in states] == expected[dep]
        assert expected[dep][0] == "QUEUED" and expected[dep][-1] == "SUCCEEDED"
        assert len(set(expected[dep])) == len(expected[dep]), "each state once"
        for s in states:
            assert (s["service"], s["environment"], s["cluster"]) == (service, env, "local"), s
            assert s["level"] == "info" and s["timestamp"]
        about = [line for line in agent_lines if line.get("deployment_id") == dep]
        events = {line["event"] for line in about}
        assert {"assignment_received", "progress", "job_ended"} <= events, events
        for line in about:
            assert all(line.get(k) for k in CONTEXT), line
            assert (line["service"], line["environment"], line["cluster"]) == (
                service,
                env,
                "local",
            )

    everything = (control.log_path.read_text() + worker.log()).encode()
    for token in (admin, agent_token, ci):
        secret = token.split("_", 2)[2]
        assert token.encode() not in everything
        assert secret.encode() not in everything
        assert secret[:-1].encode() not in everything


def _id(listing: Any) -> str:
    rows = listing if isinstance(listing, list) else listing.get("deployments", [])
    (row,) = rows
    return str(row.get("id") or row.get("deployment_id"))
