"""What CI reads from `sami`: the exit status and the messages that say what to do next."""

from __future__ import annotations

import socket

import pytest

from sami.v1 import deployment_pb2

from .fake_control import DIGEST, READER_TOKEN, REF, FakeControl, script


def test_deploy_without_wait_prints_the_id_last(sami, server, control: FakeControl) -> None:
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF)
    assert result.code == 0
    assert result.lines[-1] == "d1"
    assert "sami watch d1" in result.err


def test_deploy_wait_succeeded_exits_0(sami, server) -> None:
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert "  #4  IN_PROGRESS  converge  web 1/2 running (new)" in result.out
    assert result.lines[0].startswith("deployment d1: web -> stage")
    assert result.lines[-1] == "SUCCEEDED: deployment d1 (web -> stage): web converged: 2/2 running"


@pytest.mark.parametrize(
    "outcome",
    [
        deployment_pb2.FAILED,
        deployment_pb2.ROLLED_BACK,
        deployment_pb2.CANCELLED,
        deployment_pb2.SUPERSEDED,
    ],
)
def test_deploy_wait_unsuccessful_outcomes_exit_1(
    sami, server, control: FakeControl, outcome: deployment_pb2.DeploymentState
) -> None:
    control.steps = script(outcome, "task web.1 failed: exit code 1")
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
    assert result.code == 1
    name = deployment_pb2.DeploymentState.Name(outcome)
    assert (
        result.lines[-1] == f"{name}: deployment d1 (web -> stage): task web.1 failed: exit code 1"
    )


def test_watch_of_a_finished_deployment_replays_it(sami, server, control: FakeControl) -> None:
    deployment_id = control.add_deployment(
        script(deployment_pb2.ROLLED_BACK, "health check failed")
    )
    result = sami("watch", deployment_id)
    assert result.code == 1
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert "health check failed" in result.lines[-1]


def test_invalid_argument_names_the_fields(sami, server) -> None:
    result = sami("deploy", "Web!", "--env", "staging", "--artifact", REF)
    assert result.code == 2
    assert "INVALID_ARGUMENT: invalid deployment" in result.err
    assert "  service: must be lower case letters, digits and '-'" in result.err
    assert "  environment: must be stage, production or pull_request" in result.err
    assert "fix the values named above" in result.err
    assert result.out == ""


def test_failed_precondition_shows_the_servers_remedy(sami, server) -> None:
    result = sami("deploy", "web", "--env", "production", "--artifact", REF, "--wait")
    assert result.code == 2
    assert "sami cluster create NAME --env production" in result.err


def test_unknown_artifact_is_rejected(sami, server) -> None:
    result = sami("deploy", "web", "--env", "stage", "--artifact", "web@sha256:" + "0" * 64)
    assert result.code == 2
    assert "NOT_FOUND" in result.err and "sami artifact list" in result.err


def test_request_id_reused_for_another_body(sami, server) -> None:
    first = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--request-id", "ci-1")
    again = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--request-id", "ci-1")
    assert (first.code, again.code) == (0, 0)
    assert first.lines[-1] == again.lines[-1]
    other = sami("deploy", "api", "--env", "stage", "--artifact", REF, "--request-id", "ci-1")
    assert other.code == 2
    assert "ALREADY_EXISTS" in other.err and "--request-id" in other.err


def test_missing_token_exits_3_and_says_how_to_get_one(sami, server, monkeypatch) -> None:
    monkeypatch.delenv("SAMI_TOKEN")
    result = sami("list")
    assert result.code == 3
    assert "UNAUTHENTICATED" in result.err
    assert "SAMI_TOKEN is not set" in result.err and "sami-control token create" in result.err


def test_wrong_token_exits_3(sami, server) -> None:
    result = sami("--token", "nope", "get", "d1")
    assert result.code == 3
    assert "set SAMI_TOKEN to a valid token" in result.err


def test_permission_denied_exits_2(sami, server, monkeypatch) -> None:
    monkeypatch.setenv("SAMI_TOKEN", READER_TOKEN)
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF)
    assert result.code == 2
    assert "PERMISSION_DENIED" in result.err and "role" in result.err


def test_unreachable_control_plane_exits_3_with_advice(sami, monkeypatch) -> None:
    addr = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("SAMI_ADDR", addr)
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
    assert result.code == 3
    assert "UNAVAILABLE" in result.err
    assert f"is sami-control running at {addr}? set SAMI_ADDR" in result.err


def test_wait_timeout_exits_3_and_says_what_next(sami, server, control: FakeControl) -> None:
    control.release_on_create = 3  # The deployment never gets further.
    result = sami(
        "deploy", "web", "--env", "stage", "--artifact", REF, "--wait", "--timeout", "0.7"
    )
    assert result.code == 3
    assert result.event_sequences == [1, 2, 3]
    assert "timed out after 0.7s waiting for deployment d1" in result.err
    assert "sami watch d1" in result.err and "sami cancel d1" in result.err


def test_usage_errors_exit_2(sami, server) -> None:
    assert sami().code == 2
    assert sami("deploy", "web", "--artifact", REF).code == 2  # --env missing
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--timeout", "5")
    assert result.code == 2 and "--wait" in result.err
    assert sami("list", "--state", "DONE").code == 2
    assert sami("--help").code == 0


def test_get_list_and_cancel(sami, server, control: FakeControl) -> None:
    done = control.add_deployment()
    running = control.add_deployment(release=3)
    got = sami("get", done)
    assert got.code == 0
    assert "SUCCEEDED" in got.out and DIGEST in got.out
    listed = sami("list", "--state", "in_progress")
    assert listed.code == 0
    assert running in listed.out and done not in listed.out
    cancelled = sami("cancel", running, "--reason", "wrong build")
    assert cancelled.code == 0
    assert "cancel requested" in cancelled.out
    assert control.deployments[running].cancel_requested


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unusable_ca_file_is_a_clear_usage_error(sami, tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.pem"
    result = sami("--ca", str(missing), "list")
    assert result.code == 2
    assert str(missing) in result.err and "Traceback" not in result.err
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    result = sami("--ca", str(not_pem), "list")
    assert result.code == 2 and "not a PEM file" in result.err


def test_existing_cluster_is_rejected_without_the_request_id_hint(sami, server) -> None:
    result = sami("cluster", "create", "vps1", "--env", "stage")
    assert result.code == 2
    assert "ALREADY_EXISTS: cluster vps1 exists" in result.err
    assert "request" not in result.err
