"""Approvals end to end (issue 21 item 2): a production manifest with `approval: required`
makes `sami deploy` wait in AWAITING_APPROVAL until `sami approve` by another identity that
the manifest's `approvers` allow; `sami reject` and expiry end it CANCELLED with the reason.
Real sami-control, a dry-run agent and `sami` processes over real sockets."""

from __future__ import annotations

import json

from tests import samples
from tests.e2e.conftest import Stack, sync
from tests.harness import sami, sami_popen, wait_for


def gate_production(stack: Stack, *lines: str) -> None:
    files = samples.repo()
    files["services/web/swarm/production/sami.yaml"] += "".join(
        f"{x}\n" for x in ("approval: required", *lines)
    ).encode()
    sync(stack.control, stack.admin, files)


def queue_rows(stack: Stack) -> dict[str, str]:
    r = stack.sami("queue", "--env", "production", "--output", "json")
    assert r.rc == 0, r.err
    return {e["deployment"]["id"]: e["waits_for"] for e in json.loads(r.out)["queue"]}


def test_a_gated_deploy_waits_for_another_approver_then_deploys(stack: Stack) -> None:
    gate_production(stack, "approvers: [release-manager, admin]")
    manager = stack.control.token("deployer", name="release-manager")
    dev = stack.control.token("deployer", "--service", "web", name="dev")
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    waiting = sami_popen(
        stack.control,
        stack.admin,
        *("deploy", "web", "--env", "production", "--artifact", stack.artifact),
        *("--wait", "--timeout", "120"),
    )
    try:
        wait_for(lambda: queue_rows(stack), timeout=60, what="the request")
        ((dep_id, why),) = queue_rows(stack).items()
        assert why.startswith("awaiting approval by release-manager or admin until ")
        got = stack.sami("get", dep_id, "--output", "json")
        assert json.loads(got.out)["state"] == "AWAITING_APPROVAL"
        # A wait bounded by --timeout gives up (exit 3) and says what it waited for.
        w = stack.sami("watch", dep_id, "--timeout", "2")
        assert w.rc == 3, w.err
        assert f"deployment {dep_id} is AWAITING_APPROVAL (awaiting approval by" in w.err
        assert waiting.poll() is None, "the deploy keeps waiting"

        own = stack.sami("approve", dep_id)  # the requester (ci) itself
        assert own.rc == 2 and "another identity must approve it" in own.err
        r = sami(stack.control, dev, "approve", dep_id)
        assert r.rc == 2
        assert "'dev' (role deployer) is not among the approvers of web/production" in r.err
        r = sami(stack.control, manager, "approve", dep_id, "--comment", "changelog read")
        assert r.rc == 0, r.err
        assert f"approved: deployment {dep_id}" in r.out and "QUEUED" in r.out
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    assert "is AWAITING_APPROVAL" in err and "waiting for it up to" in err
    assert "approved by release-manager: changelog read" in out and "SUCCEEDED" in out
    history = stack.sami("history", "web", "--env", "production")
    assert history.rc == 0 and dep_id in history.out
    audit = stack.sami("audit", "--output", "json").out
    assert "deployment.approve" in audit and "release-manager" in audit


def test_reject_and_expiry_end_the_request_with_the_reason(stack: Stack) -> None:
    gate_production(stack, "approval_expires: 5s")
    reviewer = stack.control.token("deployer", name="reviewer")
    r = stack.sami("deploy", "web", "--env", "production", "--artifact", stack.artifact)
    assert r.rc == 0, r.err
    rejected = r.last
    r = sami(stack.control, reviewer, "reject", rejected, "--reason", "freeze until Monday")
    assert r.rc == 0, r.err
    assert "CANCELLED: rejected by reviewer: freeze until Monday" in r.out
    w = stack.sami("watch", rejected, "--timeout", "30")
    assert w.rc == 1, w.err  # ended without deploying: exit 1, as for CANCELLED
    assert "rejected by reviewer: freeze until Monday" in w.out
    again = sami(stack.control, reviewer, "approve", rejected)
    assert again.rc == 2 and "is CANCELLED, not AWAITING_APPROVAL" in again.err

    # Nobody approves the next one: the control plane ends it after approval_expires.
    r = stack.sami(
        "deploy",
        *("web", "--env", "production", "--artifact", stack.artifact),
        *("--wait", "--timeout", "60"),
    )
    assert r.rc == 1, r.err
    assert "approval expired: nobody approved it within 5s" in r.out
    got = json.loads(stack.sami("get", r.out.split()[1].rstrip(":"), "--output", "json").out)
    assert got["state"] == "CANCELLED"
    assert stack.sami("queue", "--env", "production").out.startswith("nothing is queued")


def test_a_promotion_to_a_gated_target_awaits_approval_too(stack: Stack) -> None:
    gate_production(stack)
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    r = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact, "--wait")
    assert r.rc == 0, r.err
    r = stack.sami("promote", "web", "--from", "stage", "--to", "production")
    assert r.rc == 0, r.err
    assert "AWAITING_APPROVAL" in r.err and "awaiting approval by anyone who may deploy" in r.err
    promoted = r.last
    assert json.loads(stack.sami("get", promoted, "--output", "json").out)["state"] == (
        "AWAITING_APPROVAL"
    )
    # Following it waits for the approval, as for a deploy (exit 3 when --timeout runs out).
    w = stack.sami("watch", promoted, "--timeout", "2")
    assert w.rc == 3 and "is AWAITING_APPROVAL" in w.err
    reviewer = stack.control.token("deployer", name="reviewer")
    assert sami(stack.control, reviewer, "approve", promoted).rc == 0
    assert stack.sami("watch", promoted, "--timeout", "60").rc == 0
