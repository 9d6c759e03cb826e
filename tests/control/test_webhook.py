"""The webhook (`POST /deployment_request`) with a real HTTP client (urllib) against a live
server: the same validation, authorization, idempotency and audit as CreateDeployment."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from sami.v1 import admin_pb2, deployment_pb2
from sami_control import tlsinit
from sami_control.core.settings import Settings
from sami_control.server import ControlServer, ListenRefused, ServeConfig
from tests.harness import PY, Proc, base_env
from tests.security.conftest import REF, Server, Stubs, md, seed, start_server, stop_server

PATH = "/deployment_request"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Hook:
    srv: Server
    admin: str
    stubs: Stubs
    artifact: str
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.srv.server.http.webhook_port}{PATH}"

    def post(
        self,
        fields: dict[str, Any] | str | bytes | None,
        token: str | None = "admin",
        *,
        content_type: str = "application/json",
        method: str = "POST",
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Answer:
        if isinstance(fields, dict):
            data: bytes | None = json.dumps(fields).encode()
        elif isinstance(fields, str):
            data = fields.encode()
        else:
            data = fields
        h = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {self.admin if token == 'admin' else token}"
        req = urllib.request.Request(self.url, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Answer(r.status, json.loads(r.read()), dict(r.headers))
        except urllib.error.HTTPError as e:
            raw = e.read()
            return Answer(e.code, json.loads(raw) if raw else {}, dict(e.headers))

    def agent(self) -> Proc:
        token = self.srv.token("agent", "agent-1", cluster="c1")
        p = Proc(
            [
                PY,
                "-m",
                "sami_agent",
                "--control",
                self.srv.addr,
                "--agent-id",
                "agent-1",
                "--dry-run",
                "--dry-run-step-seconds",
                "0.02",
            ],
            self.tmp / "agent.log",
            env=base_env(SAMI_TOKEN=token),
        ).start()
        return p


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[Hook]:
    srv = start_server(
        tmp_path / "data",
        Settings(heartbeat_interval=0.5),
        webhook_listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
    )
    try:
        admin = srv.token("admin", "root")
        stubs, art = seed(srv, admin)
        yield Hook(srv, admin, stubs, art, tmp_path)
    finally:
        stop_server(srv)


def test_a_request_answers_202_with_the_deployment(hook: Hook) -> None:
    a = hook.post({"service": "web", "environment": "stage", "artifact": REF, "reason": "ci"})
    assert a.status == 202, a.body
    assert a.body["deployment_id"].startswith("dep_")
    assert a.body["state"] == "QUEUED"
    assert (a.body["service"], a.body["environment"], a.body["cluster"]) == ("web", "stage", "c1")
    got = hook.stubs.dep.GetDeployment(
        deployment_pb2.GetDeploymentRequest(name=a.body["deployment_id"]), metadata=md(hook.admin)
    )
    assert got.reason == "ci" and got.artifact.ref == REF


def test_the_old_field_names_and_a_form_body(hook: Hook) -> None:
    digest = REF.rpartition("@")[2]
    a = hook.post(
        f"service_name=web&env=prod&image={REF.rpartition('@')[0]}&digest={digest}&wait=false",
        content_type="application/x-www-form-urlencoded",
    )
    assert a.status == 202, a.body
    assert a.body["environment"] == "production"
    # A bare digest: the artifact registered under the service's name.
    b = hook.post({"service": "web", "env": "stage", "digest": digest})
    assert b.status == 202, b.body
    c = hook.post(
        {"service": "web", "environment": "pull_request", "pr": "7", "ref": REF},
    )
    assert c.status == 202, c.body
    assert c.body["pull_request"] == 7


def test_wait_answers_with_the_outcome(hook: Hook) -> None:
    agent = hook.agent()
    try:
        a = hook.post(
            {"service": "web", "environment": "stage", "artifact": REF, "wait": True, "timeout": 60}
        )
    finally:
        agent.kill()
    assert a.status == 200, (a.body, agent.log()[-3000:])
    assert a.body["state"] == "SUCCEEDED"
    assert a.body["deployment_id"].startswith("dep_")


def test_wait_times_out_with_504_and_a_cancelled_deployment_is_409(hook: Hook) -> None:
    a = hook.post(
        {"service": "web", "environment": "stage", "artifact": REF, "wait": True, "timeout": 0.5}
    )
    assert a.status == 504, a.body
    assert a.body["timed_out"] is True and a.body["state"] == "QUEUED"
    assert f"sami watch {a.body['deployment_id']}" in a.body["message"]

    answers: list[Answer] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            hook.post(
                {
                    "service": "api",
                    "environment": "stage",
                    "artifact": REF,
                    "wait": "true",
                    "request_id": "ci-cancel-1",
                }
            )
        )
    )
    waiter.start()
    deadline = time.monotonic() + 10
    dep = None
    while dep is None and time.monotonic() < deadline:
        rows = hook.stubs.dep.ListDeployments(
            deployment_pb2.ListDeploymentsRequest(service="api"), metadata=md(hook.admin)
        ).deployments
        dep = rows[0].id if rows else None
        time.sleep(0.05)
    assert dep is not None
    hook.stubs.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name=dep), metadata=md(hook.admin)
    )
    waiter.join(20)
    (b,) = answers
    assert b.status == 409, b.body
    assert b.body["state"] == "CANCELLED" and b.body["deployment_id"] == dep


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"service": "Web", "environment": "stage", "artifact": REF}, "service"),
        ({"service_name": "web", "env": "qa", "artifact": REF}, "env"),
        ({"service": "web", "environment": "stage", "image": "nginx:latest"}, "image"),
        ({"service": "web", "environment": "stage"}, "artifact"),
        ({"service": "web", "environment": "pull_request", "artifact": REF, "pr": "x"}, "pr"),
        # Digits to str.isdigit(), not to int(): a 400, not a 500.
        ({"service": "web", "environment": "pull_request", "artifact": REF, "pr": "²"}, "pr"),
        ({"service": "web", "environment": "pull_request", "artifact": REF, "pr": "--7"}, "pr"),
        ({"service": "web", "environment": "stage", "artifact": REF, "servce": "x"}, "servce"),
        ({"service": "web", "service_name": "web", "environment": "stage"}, "service_name"),
        ({"service": "web", "environment": "stage", "artifact": REF, "wait": "maybe"}, "wait"),
        ({"service": "web", "environment": "stage", "artifact": REF, "timeout": 5}, "timeout"),
        ({"service": "web", "environment": "stage", "artifact": REF, "reason": 3}, "reason"),
        ({"service": "web", "environment": "stage", "artifact": REF, "request_id": "a b"}, None),
    ],
)
def test_a_bad_field_is_400_naming_it(hook: Hook, fields: dict[str, Any], field: str) -> None:
    a = hook.post(fields)
    assert a.status == 400, a.body
    assert a.body["error"] == "INVALID_ARGUMENT"
    named = [v["field"] for v in a.body["field_violations"]]
    assert named == [field or "request_id"], a.body


def test_a_body_that_is_not_json_is_400(hook: Hook) -> None:
    a = hook.post("{not json")
    assert a.status == 400 and a.body["field_violations"][0]["field"] == "body"
    b = hook.post("[1, 2]")
    assert b.status == 400 and b.body["field_violations"][0]["field"] == "body"
    c = hook.post("service=web", content_type="text/plain")
    assert c.status == 415
    # JSON labelled as a form (`curl -d '{...}'` without a Content-Type) is JSON.
    d = hook.post(
        json.dumps({"service": "web", "environment": "stage", "artifact": REF}),
        content_type="application/x-www-form-urlencoded",
    )
    assert d.status == 202, d.body


def test_a_key_given_twice_in_the_json_body_is_400_naming_it(hook: Hook) -> None:
    # json.loads would keep the last one; a proxy in front may have checked the first.
    body = f'{{"service": "web", "environment": "stage", "artifact": "{REF}", '
    a = hook.post(body + '"environment": "production"}')
    assert a.status == 400, a.body
    assert [v["field"] for v in a.body["field_violations"]] == ["environment"]
    assert "twice" in a.body["field_violations"][0]["description"]
    # Nested objects too (refused anyway, but as a duplicate first).
    b = hook.post(body + '"reason": {"a": 1, "a": 2}}')
    assert b.status == 400 and b.body["field_violations"][0]["field"] == "a", b.body
    assert (
        hook.stubs.dep.ListDeployments(
            deployment_pb2.ListDeploymentsRequest(), metadata=md(hook.admin)
        ).deployments
        == []
    )


def test_no_token_or_a_wrong_one_is_401(hook: Hook) -> None:
    fields = {"service": "web", "environment": "stage", "artifact": REF}
    a = hook.post(fields, token=None)
    assert a.status == 401 and a.body["error"] == "UNAUTHENTICATED"
    assert "Bearer" in a.headers["WWW-Authenticate"]
    token_id = hook.admin.split("_")[1]
    b = hook.post(fields, token=f"sami_{token_id}_{'x' * 43}")
    assert b.status == 401
    c = hook.post(fields, headers={"Authorization": "Basic dXNlcjpwYXNz"}, token=None)
    assert c.status == 401
    # A refused call leaves nothing behind.
    rows = hook.stubs.dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(), metadata=md(hook.admin)
    ).deployments
    assert not rows


def test_out_of_scope_is_403(hook: Hook) -> None:
    ci = hook.srv.token("deployer", "ci-web", services=["web"], environments=["stage"])
    ok = hook.post({"service": "web", "environment": "stage", "artifact": REF}, token=ci)
    assert ok.status == 202, ok.body
    a = hook.post({"service": "web", "environment": "production", "artifact": REF}, token=ci)
    assert a.status == 403 and a.body["error"] == "PERMISSION_DENIED"
    reader = hook.srv.token("reader", "board")
    b = hook.post({"service": "web", "environment": "stage", "artifact": REF}, token=reader)
    assert b.status == 403


def test_other_domain_errors(hook: Hook) -> None:
    unknown = REF.rpartition("@")[0] + "@sha256:" + "f" * 64
    a = hook.post({"service": "web", "environment": "stage", "artifact": unknown})
    assert a.status == 404 and a.body["error"] == "NOT_FOUND"
    b = hook.post({"service": "nope", "environment": "stage", "artifact": REF})
    assert b.status == 412 and b.body["error"] == "FAILED_PRECONDITION"


def test_a_body_too_large_is_413(hook: Hook) -> None:
    reason = "x" * (64 * 1024)
    a = hook.post({"service": "web", "environment": "stage", "artifact": REF, "reason": reason})
    assert a.status == 413, a.body


def test_only_post_on_the_one_path(hook: Hook) -> None:
    a = hook.post(None, method="GET")
    assert a.status == 405 and a.headers["Allow"] == "POST"
    url = hook.url.replace(PATH, "/other")
    req = urllib.request.Request(url, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 404


def test_the_original_path_is_served_too(hook: Hook) -> None:
    """Existing CI jobs call the original webhook's /hooks/deployment_request."""
    url = hook.url.replace(PATH, "/hooks/deployment_request")
    req = urllib.request.Request(
        url,
        data=json.dumps({"service": "web", "environment": "stage", "artifact": REF}).encode(),
        headers={"Authorization": f"Bearer {hook.admin}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 202
        assert json.loads(r.read())["deployment_id"].startswith("dep_")


@pytest.mark.parametrize("path", [PATH, "/hooks/deployment_request"])
def test_a_token_in_the_url_is_refused_saying_how_to_send_it(hook: Hook, path: str) -> None:
    secret = hook.srv.token("deployer", "ci")
    url = hook.url.replace(PATH, path) + f"?token={secret}"
    body = json.dumps({"service": "web", "environment": "stage", "artifact": REF}).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 400
    answer = json.loads(ei.value.read())
    assert answer["message"].startswith(
        "a token in the URL (?token=) is refused: URLs end up in proxy and server logs. Send it "
        "as a header, `Authorization: Bearer <token>`"
    )
    assert secret not in answer["message"]
    # Refused before anything is read or stored.
    listed = hook.stubs.dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(), metadata=md(hook.admin)
    )
    assert list(listed.deployments) == []


def test_the_same_request_id_is_the_same_deployment(hook: Hook) -> None:
    fields = {"service": "web", "environment": "stage", "artifact": REF, "request_id": "ci-77"}
    a = hook.post(fields)
    b = hook.post(fields)
    assert a.status == b.status == 202
    assert a.body["deployment_id"] == b.body["deployment_id"]
    c = hook.post({**fields, "reason": "another request"})
    assert c.status == 409 and c.body["error"] == "ALREADY_EXISTS"


def test_requests_and_refusals_are_audited(hook: Hook) -> None:
    ci = hook.srv.token("deployer", "ci-web", services=["web"], environments=["stage"])
    a = hook.post(
        {"service": "web", "environment": "stage", "artifact": REF, "request_id": "ci-run-9"},
        token=ci,
    )
    assert a.status == 202
    refused = hook.post(
        {"service": "web", "environment": "production", "artifact": REF},
        token=ci,
        headers={"X-Request-Id": "trace-5"},
    )
    assert refused.status == 403
    entries = hook.stubs.audit.ListAudit(
        admin_pb2.ListAuditRequest(service="web"), metadata=md(hook.admin)
    ).entries
    created = [e for e in entries if e.action == "deployment.create" and e.outcome == "ok"]
    (entry,) = [e for e in created if e.target == a.body["deployment_id"]]
    assert entry.token_name == "ci-web" and entry.request_id == "ci-run-9"
    assert entry.peer.startswith("webhook:ipv4:127.0.0.1:")
    (denied,) = [e for e in entries if e.outcome == "PERMISSION_DENIED"]
    assert denied.action == "deployment.create" and denied.request_id == "trace-5"
    assert denied.peer.startswith("webhook:")


def test_the_webhook_is_counted_in_the_metrics(hook: Hook) -> None:
    hook.post({"service": "web", "environment": "stage", "artifact": REF})
    hook.post({"service": "web", "environment": "stage", "artifact": REF}, token=None)
    port = hook.srv.server.http.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'sami_webhook_requests_total{code="202"} 1.0' in text
    assert 'sami_webhook_requests_total{code="401"} 1.0' in text


def test_a_webhook_off_loopback_needs_tls_or_insecure(tmp_path: Path) -> None:
    with pytest.raises(ListenRefused, match="webhook"):
        ControlServer(
            ServeConfig(
                listen="127.0.0.1:0",
                data_dir=tmp_path / "data",
                webhook_listen="0.0.0.0:0",
            )
        )
    # The refusal released the data folder: a server can use it now.
    with pytest.raises(ListenRefused, match="HOST:PORT"):
        ControlServer(
            ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", metrics_listen="9464")
        )


def test_the_grpc_path_still_refuses_what_the_webhook_refuses(hook: Hook) -> None:
    """Same core call: the same message for the same bad input."""
    a = hook.post({"service": "web", "environment": "prod", "artifact": "nginx:1"})
    with pytest.raises(grpc.RpcError) as ei:
        hook.stubs.dep.CreateDeployment(
            deployment_pb2.CreateDeploymentRequest(
                service="web", environment="production", artifact="nginx:1"
            ),
            metadata=md(hook.admin),
        )
    assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert a.status == 400 and a.body["message"] == ei.value.details()


def test_a_reference_with_a_tag_as_docker_prints_it(hook: Hook) -> None:
    """`repo:tag@sha256:…` (docker build, buildx metadata) names the artifact registered as
    `repo@sha256:…`, in the webhook and in CreateDeployment alike."""
    repo, _, digest = REF.rpartition("@")
    tagged = f"{repo}:1.4.2@{digest}"
    a = hook.post({"service": "web", "environment": "stage", "artifact": tagged})
    assert a.status == 202, a.body
    assert a.body["artifact_id"] == hook.artifact
    b = hook.post(
        f"service=web&environment=production&image={repo}:1.4.2&digest={digest}",
        content_type="application/x-www-form-urlencoded",
    )
    assert b.status == 202, b.body
    assert b.body["artifact_id"] == hook.artifact
    d = hook.stubs.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(
            service="web", environment="pull_request", pull_request=3, artifact=tagged
        ),
        metadata=md(hook.admin),
    )
    assert d.artifact.id == hook.artifact


def test_with_tls_the_webhook_serves_https(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    tlsinit.init(pki, clients=["ci"])
    srv = start_server(
        tmp_path / "data",
        webhook_listen="127.0.0.1:0",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server-key.pem",
    )
    try:
        token = srv.token("reader", "board")
        url = f"https://127.0.0.1:{srv.server.http.webhook_port}{PATH}"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        body = json.dumps({"service": "web", "environment": "stage", "artifact": REF}).encode()
        req = urllib.request.Request(
            url, data=body, headers={"Authorization": f"Bearer {token}"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=10, context=ctx)
        # Over TLS, authenticated, and refused by the core: a reader may not deploy.
        assert ei.value.code == 403
        plain = urllib.request.Request(url.replace("https", "http"), data=b"{}", method="POST")
        with pytest.raises((urllib.error.URLError, ConnectionError)) as no:
            urllib.request.urlopen(plain, timeout=10)
        # HTTPError is a URLError too: that would be an HTTP answer, i.e. no TLS at all.
        assert not isinstance(no.value, urllib.error.HTTPError), no.value
    finally:
        stop_server(srv)
