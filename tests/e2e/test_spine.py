"""The spine end to end, as a CI job uses it: real sami-control, sami-agent and sami
processes over real gRPC sockets, a real SQLite file, processes killed for real."""

from __future__ import annotations

import json
import signal
import time

from tests.e2e.conftest import Stack
from tests.harness import sami_popen, wait_for


def ledger(stack: Stack) -> list[dict[str, object]]:
    if not stack.ledger.exists():
        return []
    return [json.loads(line) for line in stack.ledger.read_text().splitlines() if line]


def json_events(out: str) -> list[dict[str, object]]:
    return [json.loads(line)["event"] for line in out.splitlines() if line.startswith('{"event"')]


def state(stack: Stack, dep_id: str) -> str:
    r = stack.sami("get", dep_id, "--output", "json")
    assert r.rc == 0, r.err
    return str(json.loads(r.out)["state"])


def test_register_deploy_wait_succeeds_with_live_events_in_order(stack: Stack) -> None:
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    r = stack.sami(
        "deploy",
        "web",
        "--env",
        "stage",
        "--artifact",
        stack.artifact,
        "--wait",
        "--timeout",
        "60",
        "--output",
        "json",
    )
    assert r.rc == 0, r.err
    events = json_events(r.out)
    seqs = [int(str(e["sequence"])) for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    states = [e["state"] for e in events if e["type"] == "STATE_CHANGED"]
    assert states == ["QUEUED", "ASSIGNED", "IN_PROGRESS", "SUCCEEDED"]
    phases = {e.get("phase") for e in events if e["type"] == "PROGRESS"}
    assert phases >= {"plan", "apply", "converge"}
    assert [entry["attempt"] for entry in ledger(stack)] == [1]
    # Text output for people: the same run, readable, exit 0.
    r2 = stack.sami(
        "deploy",
        "web",
        "--env",
        "production",
        "--artifact",
        stack.artifact,
        "--wait",
        "--timeout",
        "60",
    )
    assert r2.rc == 0, r2.err
    assert "SUCCEEDED" in r2.out


def test_request_id_retry_returns_the_same_deployment(stack: Stack) -> None:
    args = (
        "deploy",
        "web",
        "--env",
        "stage",
        "--artifact",
        stack.artifact,
        "--request-id",
        "ci-run-41",
    )
    first, again = stack.sami(*args), stack.sami(*args)
    assert first.rc == again.rc == 0
    assert first.last == again.last
    other = stack.sami(
        "deploy",
        "web",
        "--env",
        "production",
        "--artifact",
        stack.artifact,
        "--request-id",
        "ci-run-41",
    )
    assert other.rc == 2
    assert "request_id" in other.err


def test_newer_request_supersedes_queued_one(stack: Stack) -> None:
    # No agent yet: both stay queued, and the newer one wins.
    old = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    new = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    w = stack.sami("watch", old, "--timeout", "20")
    assert w.rc == 1, w.err
    assert "SUPERSEDED" in w.out and new in w.out
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    assert stack.sami("watch", new, "--timeout", "60").rc == 0


def test_cancel_mid_deployment(stack: Stack) -> None:
    stack.agent("a1", "--dry-run-step-seconds", "2")
    dep = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    wait_for(lambda: state(stack, dep) == "IN_PROGRESS", what="in progress")
    c = stack.sami("cancel", dep)
    assert c.rc == 0, c.err
    w = stack.sami("watch", dep, "--timeout", "30")
    assert w.rc == 1 and "CANCELLED" in w.out


def test_agent_killed_mid_deployment_is_redelivered_to_another_agent(stack: Stack) -> None:
    a1 = stack.agent("a1", "--dry-run-step-seconds", "3")
    wait_for(lambda: "a1" in stack.sami("agents").out, what="a1 connected")
    dep = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    wait_for(lambda: len(ledger(stack)) == 1, what="a1 applies")
    a1.kill(signal.SIGKILL)
    stack.agent("a2", "--dry-run-step-seconds", "0.05")
    w = stack.sami("watch", dep, "--timeout", "60", "--output", "json")
    assert w.rc == 0, w.err
    applies = [(e["agent_id"], e["attempt"]) for e in ledger(stack)]
    assert applies == [("a1", 1), ("a2", 2)]
    notices = [e for e in json_events(w.out) if e["state"] == "QUEUED"]
    assert any("lost" in str(e.get("message")) for e in notices)


def test_control_plane_killed_mid_watch_resumes_without_gap_or_duplicate(
    stack: Stack,
) -> None:
    stack.agent("a1", "--dry-run-step-seconds", "0.7")
    dep = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    watcher = sami_popen(
        stack.control, stack.admin, "watch", dep, "--timeout", "90", "--output", "json"
    )
    wait_for(lambda: state(stack, dep) == "IN_PROGRESS", what="in progress")
    stack.control.kill(signal.SIGKILL)
    time.sleep(1.0)
    stack.control.start()
    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, err
    events = json_events(out)
    seqs = [int(str(e["sequence"])) for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert events[-1]["state"] == "SUCCEEDED"
    assert "reconnect" in err.lower() or "resum" in err.lower()
    # Nothing acknowledged was lost, and the work was not applied twice.
    assert state(stack, dep) == "SUCCEEDED"
    assert [e["attempt"] for e in ledger(stack)] == [1]


def test_data_survives_a_restart(stack: Stack) -> None:
    dep = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    stack.control.kill(signal.SIGTERM)
    stack.control.start()
    assert state(stack, dep) == "QUEUED"
    listing = stack.sami("list", "--output", "json")
    assert dep in listing.out
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    assert stack.sami("watch", dep, "--timeout", "60").rc == 0
