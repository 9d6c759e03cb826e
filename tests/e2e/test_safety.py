"""Release safety end to end (issue 21): `sami lock|unlock|locks`, `deploy --wait-lock`,
quarantined digests refused unless `--force` and skipped by `rollback` and `promote`, and
`sami queue`: real sami-control, dry-run agents and `sami` processes over real sockets."""

from __future__ import annotations

import json
import time

from tests import samples
from tests.e2e.conftest import Stack, sync
from tests.harness import DIGEST_B, sami, sami_popen, wait_for

REF_B = f"127.0.0.1:5000/web@{DIGEST_B}"


def deploy(stack: Stack, env: str, artifact: str, *extra: str) -> tuple[int, str, str]:
    r = stack.sami("deploy", "web", "--env", env, "--artifact", artifact, *extra)
    return r.rc, r.last, r.err


def test_a_lock_refuses_waits_and_is_listed(stack: Stack) -> None:
    r = stack.sami("lock", "--env", "stage", "--reason", "release freeze", "--expires", "2h")
    assert r.rc == 0, r.err
    assert "locked stage (every service)" in r.out and "release freeze" in r.out
    listed = stack.sami("locks", "--output", "json")
    assert listed.rc == 0, listed.err
    (lock,) = json.loads(listed.out)["locks"]
    assert (lock["environment"], lock["holder"], lock["reason"]) == (
        "stage",
        "ci",
        "release freeze",
    )
    assert lock["expire_time"] and lock["create_time"]
    table = stack.sami("locks").out
    assert "release freeze" in table and "HOLDER" in table and "UNTIL" in table

    rc, _, err = deploy(stack, "stage", stack.artifact)
    assert rc == 2
    assert "stage (every service) is locked by ci: release freeze" in err
    # Another environment deploys.
    assert deploy(stack, "production", stack.artifact)[0] == 0
    # Bounded by --timeout, the wait gives up with the refusal (exit 2).
    rc, _, err = deploy(stack, "stage", stack.artifact, "--wait-lock", "--timeout", "1")
    assert rc == 2 and "still locked" in err

    # A deployer scoped to web in stage may not break the admin's lock.
    scoped = stack.control.token("deployer", "--service", "web", "--env", "stage", name="dev")
    r = sami(stack.control, scoped, "unlock", "--env", "stage")
    assert r.rc == 2 and "PERMISSION_DENIED" in r.err + r.out

    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    waiting = sami_popen(
        stack.control,
        stack.admin,
        *("deploy", "web", "--env", "stage", "--artifact", stack.artifact),
        *("--wait-lock", "--wait", "--timeout", "90"),
    )
    try:
        wait_for(lambda: waiting.poll() is None, what="the deploy to wait")
        time.sleep(1.5)
        assert waiting.poll() is None, "it waits for the unlock"
        r = stack.sami("unlock", "--env", "stage")
        assert r.rc == 0, r.err
        assert "unlocked stage (every service) (held by ci: release freeze)" in r.out
        out, err = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    assert "waiting for the unlock" in err and "SUCCEEDED" in out
    assert stack.sami("locks").out.strip() == "no locks hold"


def test_the_queue_says_why_each_deployment_waits(stack: Stack) -> None:
    first = deploy(stack, "stage", stack.artifact)[1]
    r = stack.sami("queue")
    assert r.rc == 0, r.err
    assert first in r.out and "no agent of cluster local has ever connected" in r.out
    assert "supersedes a queued one" in r.out
    held = deploy(stack, "production", stack.artifact)[1]
    r = stack.sami("lock", "--env", "production", "--service", "web", "--reason", "incident 12")
    assert r.rc == 0, r.err
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    assert stack.sami("watch", first, "--timeout", "60").rc == 0
    r = stack.sami("queue", "--env", "production", "--output", "json")
    (entry,) = json.loads(r.out)["queue"]
    assert entry["deployment"]["id"] == held
    assert entry["waits_for"] == "web in production is locked by ci: incident 12"
    # A wait on it says so too, after its first check (5 s), then times out (exit 3).
    w = stack.sami("watch", held, "--timeout", "8")
    assert w.rc == 3, w.err
    assert "still QUEUED" in w.err and "web in production is locked by ci: incident 12" in w.err
    assert stack.sami("queue", "--env", "stage").out.startswith("nothing is queued")
    assert stack.sami("unlock", "--env", "production", "--service", "web").rc == 0
    assert stack.sami("watch", held, "--timeout", "60").rc == 0


def test_a_rolled_back_digest_is_quarantined(stack: Stack) -> None:
    b = stack.sami("artifact", "register", "web", "--ref", REF_B).last
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    for env in ("stage", "production"):
        assert deploy(stack, env, stack.artifact, "--wait", "--timeout", "60")[0] == 0
    for env in ("stage", "production"):
        assert deploy(stack, env, b, "--wait", "--timeout", "60")[0] == 0
    back = stack.sami("rollback", "web", "--env", "production", "--wait", "--timeout", "60")
    assert back.rc == 0, back.err
    history = json.loads(stack.sami("list", "--env", "production", "--output", "json").out)
    rollback_id = history[0]["id"]
    assert history[0]["rollback_of"]

    rc, _, err = deploy(stack, "production", b)
    assert rc == 2
    assert f"quarantined in web/production: deployment {rollback_id} rolled it back" in err
    # Promotion from stage, where B is live, does not pick it: it takes A.
    r = stack.sami("promote", "web", "--from", "stage", "--to", "production", "--wait")
    assert r.rc == 0, r.err
    assert "web@sha256:aaaa" in r.err and DIGEST_B not in r.err
    # --force deploys it, and the audit log says so.
    rc, _, err = deploy(stack, "production", b, "--force", "--wait", "--timeout", "60")
    assert rc == 0, err
    audit = stack.sami("audit", "--output", "json")
    assert audit.rc == 0, audit.err
    assert f"forced past quarantine: deployment {rollback_id}" in audit.out


def with_manifest_lines(env: str, *lines: str) -> dict[str, bytes]:
    files = samples.repo()
    files[f"services/web/swarm/{env}/sami.yaml"] += "".join(f"{x}\n" for x in lines).encode()
    return files


def test_promote_waits_until_the_artifact_was_live_for_promote_after(stack: Stack) -> None:
    sync(stack.control, stack.admin, with_manifest_lines("production", "promote_after: 2s"))
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    assert deploy(stack, "stage", stack.artifact, "--wait", "--timeout", "60")[0] == 0
    r = stack.sami("promote", "web", "--from", "stage", "--to", "production")
    assert r.rc == 2, r.err
    assert "not promoting web@sha256:aaaa" in r.err
    assert "it has been live in stage for" in r.err
    assert "production's manifest requires 2s (promote_after)" in r.err
    assert "may be promoted from" in r.err and "wait and run `sami promote` again" in r.err
    assert json.loads(stack.sami("list", "--env", "production", "--output", "json").out) == []
    time.sleep(2.5)
    r = stack.sami("promote", "web", "--from", "stage", "--to", "production", "--wait")
    assert r.rc == 0, r.err
    assert "SUCCEEDED" in r.out


def test_queue_fifo_keeps_every_request_and_the_queue_says_so(stack: Stack) -> None:
    sync(stack.control, stack.admin, with_manifest_lines("stage", "queue: fifo"))
    first = deploy(stack, "stage", stack.artifact)[1]
    second = deploy(stack, "stage", stack.artifact)[1]
    prod_first = deploy(stack, "production", stack.artifact)[1]
    prod = deploy(stack, "production", stack.artifact)[1]
    r = stack.sami("queue", "--output", "json")
    assert r.rc == 0, r.err
    rows = {e["deployment"]["id"]: e for e in json.loads(r.out)["queue"]}
    assert set(rows) == {first, second, prod}, "production superseded its older request"
    assert prod_first not in rows
    assert [rows[i]["rule"] for i in (first, second, prod)] == ["fifo", "fifo", "supersede"]
    assert rows[second]["waits_for"] == (
        f"deployment {first} of the same target, queued before it: they run in order (queue: fifo)"
    )
    table = stack.sami("queue", "--env", "stage").out
    assert "RULE" in table and "fifo:" in table
    stack.agent("a1", "--dry-run-step-seconds", "0.05")
    assert stack.sami("watch", second, "--timeout", "60").rc == 0
    assert stack.sami("watch", first, "--timeout", "60").rc == 0
