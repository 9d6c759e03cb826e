"""Notifications survive a kill -9: deliveries pending in the outbox (their receiver was
down) are sent after the control plane restarts and the receiver is back, each exactly
once per idempotency key, signed. A real `sami-control serve` process and the `sami` CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
from pathlib import Path

from tests.e2e.conftest import REF, sync
from tests.harness import ControlPlane, free_port, sami, wait_for
from tests.notify_receiver import Receiver, ThreadedReceiver

SECRET = "restart-secret"


def test_deliveries_pending_at_a_kill_9_are_sent_once_after_restart(tmp_path: Path) -> None:
    control = ControlPlane(tmp_path, "--notify-backoff", "0.2")
    control.cluster("local", "stage", "production")
    admin = control.token("admin", name="ci")
    control.start()
    port = free_port()  # the receiver's, down for now
    receiver: ThreadedReceiver | None = None
    try:
        sync(control, admin)
        assert sami(control, admin, "artifact", "register", "web", "--ref", REF).rc == 0
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET + "\n")
        r = sami(
            control,
            admin,
            "notify",
            "add",
            "hook",
            "--kind",
            "generic",
            "--url",
            f"http://127.0.0.1:{port}/hook",
            "--events",
            "queued",
            "--secret-from-file",
            str(secret_file),
        )
        assert r.rc == 0, r.err
        for env in ("stage", "production"):
            r = sami(control, admin, "deploy", "web", "--env", env, "--artifact", REF)
            assert r.rc == 0, r.err

        def tried_and_pending() -> bool:
            log = json.loads(sami(control, admin, "notify", "log", "--output", "json").out)
            rows = log["deliveries"]
            return len(rows) == 2 and all(
                d["status"] == "pending" and d.get("attempts", 0) >= 1 for d in rows
            )

        wait_for(tried_and_pending, timeout=30, what="two failed attempts")
        log = json.loads(sami(control, admin, "notify", "log", "--output", "json").out)
        assert all("cannot connect" in d["last_error"] for d in log["deliveries"])
        control.kill(signal.SIGKILL)

        receiver = ThreadedReceiver(Receiver())
        got = receiver.start(port)
        control.start()
        wait_for(lambda: len(got.requests) >= 2, timeout=60, what="the deliveries")

        def all_delivered() -> bool:
            log = json.loads(sami(control, admin, "notify", "log", "hook", "--output", "json").out)
            return {d["status"] for d in log["deliveries"]} == {"delivered"}

        wait_for(all_delivered, timeout=30, what="delivered in the log")
        log = json.loads(sami(control, admin, "notify", "log", "hook", "--output", "json").out)
        ids = sorted(d["id"] for d in log["deliveries"])
        assert sorted(got.by_delivery()) == ids and set(got.by_delivery().values()) == {1}
        for req in got.requests:
            ts = req.headers["X-Sami-Timestamp"]
            mac = hmac.new(SECRET.encode(), ts.encode() + b"." + req.body, hashlib.sha256)
            assert req.headers["X-Sami-Signature-256"] == "sha256=" + mac.hexdigest()
            assert req.json()["event"] == "queued"
    finally:
        control.kill(signal.SIGTERM)
        if receiver is not None:
            receiver.stop()
