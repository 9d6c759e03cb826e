"""`sami manifests sync|list|show` and `sami deploy --type`, against the real control plane
(in a thread of this process, see tests/control/conftest.py)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import structlog

from sami_client import manifests_cmd
from sami_client.client import SamiClient
from sami_client.errors import SamiError
from sami_common.dial import Endpoint
from sami_control import offline
from sami_manifests import ScanResult
from tests.control.conftest import LiveServer
from tests.harness import free_port

from .cli_result import Result

Sami = Callable[..., Result]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "deployments"
STAGE = "services/camerdevs/compose/stage"
DIGEST = "sha256:" + "ab" * 32
SHA = "0123456789abcdef0123456789abcdef01234567"
_REVISION_ID = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(autouse=True)
def _server_logs_apart() -> Iterator[io.StringIO]:
    """The in-process server logs through structlog, to stdout by default: keep its lines out
    of the CLI's captured stdout."""
    saved = structlog.get_config()
    sink = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))
    try:
        yield sink
    finally:
        structlog.configure(**saved)


@pytest.fixture
def admin(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    """The live server, with SAMI_ADDR and an admin SAMI_TOKEN set for the CLI."""
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", live_server.token("admin"))
    return live_server


def copy_examples(dest: Path) -> Path:
    shutil.copytree(EXAMPLES, dest)
    return dest


def with_error(root: Path) -> Path:
    """`root` with two errors in the camerdevs stage manifest: a misspelt field, and so no
    stack_files in a folder that holds two stack files."""
    manifest = root / STAGE / "sami.yaml"
    manifest.write_text(manifest.read_text().replace("stack_files:", "stack_file:"))
    shutil.copy(root / STAGE / "camerdevs-stack.yml", root / STAGE / "docker-compose.yml")
    return root


def with_swarm_stage(root: Path) -> Path:
    """`root` where camerdevs also has a swarm/stage folder: stage under two types."""
    swarm = root / "services/camerdevs/swarm/stage"
    shutil.copytree(root / STAGE, swarm)
    manifest = swarm / "sami.yaml"
    manifest.write_text(manifest.read_text().replace("type: compose", "type: swarm"))
    return root


def git_head(path: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def synced_id(result: Result) -> str:
    assert result.code == 0, result.err
    rid = result.lines[-1]
    assert _REVISION_ID.fullmatch(rid), result.out
    return rid


# Sync


def test_sync_examples_prints_the_revision_id(sami: Sami, admin: LiveServer) -> None:
    result = sami("manifests", "sync", str(EXAMPLES))
    rid = synced_id(result)
    assert f"created manifest revision {rid[:12]}" in result.err
    assert "6 manifests" in result.err
    # The server's warnings (prod/ read as production, ...), in lint's format.
    assert f"{EXAMPLES}/services/portainer/compose/prod/" in result.err
    assert ": warning: " in result.err

    shown = json.loads(sami("manifests", "show", "current", "-o", "json").out)
    assert shown["id"] == rid and shown["current"] is True
    assert shown["commit"] == git_head(EXAMPLES)  # examples/ lives in this repo's checkout
    assert shown["created_by"] == "t-admin"


def test_syncing_the_same_files_again_is_already_stored(
    sami: Sami, admin: LiveServer, tmp_path: Path
) -> None:
    first = synced_id(sami("manifests", "sync", str(EXAMPLES)))
    again = sami("manifests", "sync", str(EXAMPLES))
    assert synced_id(again) == first
    assert "already stored" in again.err and "created" not in again.err

    # Content-addressed: another revision becomes current, the first one current again.
    other = synced_id(
        sami("manifests", "sync", str(with_swarm_stage(copy_examples(tmp_path / "d"))))
    )
    assert other != first
    assert json.loads(sami("manifests", "show", "-o", "json").out)["id"] == other
    back = sami("manifests", "sync", str(EXAMPLES), "-o", "json")
    response = json.loads(back.lines[-1])
    assert response["created"] is False and response["revision"]["id"] == first
    assert json.loads(sami("manifests", "show", "-o", "json").out)["id"] == first


def test_lint_errors_stop_the_sync_before_contacting_sami_control(
    sami: Sami, tmp_path: Path
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # Nothing listens: contacting it would exit 3.
    bad = with_error(copy_examples(tmp_path / "bad"))
    result = sami("manifests", "sync", str(bad), "--addr", nowhere, "--token", "x")
    assert result.code == 1
    assert result.out == ""  # No revision id.
    assert f"{bad}/{STAGE}/sami.yaml:" in result.err
    assert "unknown field 'stack_file'" in result.err
    assert "nothing was synced" in result.err
    assert "UNAVAILABLE" not in result.err

    good = sami("manifests", "sync", str(EXAMPLES), "--addr", nowhere, "--token", "x")
    assert good.code == 3 and "UNAVAILABLE" in good.err


def test_lint_errors_as_json_and_github_annotations(
    sami: Sami, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    bad = with_error(copy_examples(tmp_path / "bad"))
    result = sami("manifests", "sync", str(bad), "--addr", f"127.0.0.1:{free_port()}")
    assert result.code == 1
    annotation = f"::error file={bad}/{STAGE}/sami.yaml,line="
    assert any(line.startswith(annotation) for line in result.lines), result.out

    result = sami("manifests", "sync", str(bad), "-o", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["ok"] is False and report["errors"] == 2  # Misspelt field, ambiguous stack files.
    assert "::error" in result.err  # Annotations move to stderr, stdout stays JSON.


def test_sami_control_revalidates_what_the_client_sends(
    sami: Sami, admin: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = with_error(copy_examples(tmp_path / "bad"))
    files = {
        str(p.relative_to(bad)): p.read_bytes()
        for p in (bad / "services").rglob("*")
        if p.is_file()
    }
    token = admin.token("admin")
    with SamiClient(Endpoint(addr=admin.addr, token=token)) as client:
        with pytest.raises(SamiError) as caught:
            client.sync_manifests(files, SHA)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.exit_code == 2
        fields = [field for field, _ in caught.value.field_violations]
        assert any(f.startswith(f"files[{STAGE}/sami.yaml]:") for f in fields), fields
        # Nothing was stored.
        assert list(client.list_manifest_revisions()) == []

    # The CLI with its own lint out of the way: the server's refusal, one line per violation.
    monkeypatch.setattr(manifests_cmd, "scan", lambda files, policy="off": ScanResult((), ()))
    result = sami("manifests", "sync", str(bad))
    assert result.code == 2
    assert "INVALID_ARGUMENT" in result.err
    violation = f"  files[{STAGE}/sami.yaml]:"
    lines = [line for line in result.err.splitlines() if line.startswith(f"sami: {violation}")]
    assert len(lines) == 2, result.err  # stack_file unknown, which stack file unclear.
    assert any("unknown field 'stack_file'" in line for line in lines)


def test_commit_from_git_from_github_sha_or_given(
    sami: Sami, admin: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = copy_examples(tmp_path / "plain")  # Not in a git checkout.
    rid = synced_id(sami("manifests", "sync", str(plain)))
    assert json.loads(sami("manifests", "show", rid, "-o", "json").out)["commit"] == ""

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = with_swarm_stage(copy_examples(tmp_path / "repo"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "deployments"], check=True)
    monkeypatch.setenv("GITHUB_SHA", SHA)  # git's HEAD comes first.
    result = sami("manifests", "sync", str(repo))
    rid = synced_id(result)
    shown = json.loads(sami("manifests", "show", rid, "-o", "json").out)
    assert shown["commit"] == git_head(repo) != ""
    assert "uncommitted" not in result.err

    # Outside a checkout, GITHUB_SHA; --commit wins over both.
    other = with_error(copy_examples(tmp_path / "other"))
    (other / STAGE / "sami.yaml").write_text((EXAMPLES / STAGE / "sami.yaml").read_text())
    (other / "README.md").write_text("another revision\n")
    rid = synced_id(sami("manifests", "sync", str(other)))
    assert json.loads(sami("manifests", "show", rid, "-o", "json").out)["commit"] == SHA

    bad_commit = sami("manifests", "sync", str(other), "--commit", "main")
    assert bad_commit.code == 2 and "not a full commit sha" in bad_commit.err


def test_github_actions_output(
    sami: Sami, admin: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    rid = synced_id(sami("manifests", "sync", str(copy_examples(tmp_path / "d")), "--commit", SHA))
    assert outputs.read_text() == f"manifest_revision={rid}\n"


# List and show


def test_list_and_show(sami: Sami, admin: LiveServer, tmp_path: Path) -> None:
    assert sami("manifests", "list").out == "(none)\n"
    missing = sami("manifests", "show")
    assert missing.code == 2 and "sami manifests sync" in missing.err

    first = synced_id(sami("manifests", "sync", str(EXAMPLES), "--commit", SHA))
    second = synced_id(
        sami("manifests", "sync", str(with_swarm_stage(copy_examples(tmp_path / "d"))))
    )

    listed = sami("manifests", "list")
    assert listed.code == 0
    header, newest, oldest = listed.lines
    assert header.split() == ["ID", "COMMIT", "ENTRIES", "FILES", "CREATED", "BY", "CURRENT"]
    assert newest.startswith(second[:12]) and newest.endswith("*")
    assert oldest.startswith(f"{first[:12]}  {SHA[:12]}  6 ") and not oldest.endswith("*")
    rows = json.loads(sami("manifests", "list", "--output", "json").out)
    assert [(r["id"], r["current"], len(r["entries"])) for r in rows] == [
        (second, True, 7),
        (first, False, 6),
    ]
    assert len(json.loads(sami("manifests", "list", "--limit", "1", "-o", "json").out)) == 1

    # By a short id (as list shows it), with the files.
    shown = sami("manifests", "show", first[:12], "--files")
    assert shown.code == 0, shown.err
    assert f"revision   {first}" in shown.out
    assert f"commit     {SHA}" in shown.out
    assert "current    no" in shown.out
    stage = next(
        line for line in shown.lines if line.startswith("camerdevs ") and " stage " in line
    )
    assert stage.split()[:6] == [
        "camerdevs",
        "compose",
        "stage",
        "camerdevs-stack.yml",
        "web",
        "300s",
    ]
    assert "cluster=osscameroon" in stage
    assert "warning: " in shown.out
    stack = EXAMPLES / STAGE / "camerdevs-stack.yml"
    assert f"{STAGE}/camerdevs-stack.yml" in shown.out
    row = next(line for line in shown.lines if line.startswith(f"{STAGE}/camerdevs-stack.yml"))
    assert row.split()[1] == str(stack.stat().st_size)
    assert "conf/" not in shown.out  # Only services/ and README.md are synced.

    without = sami("manifests", "show", first)
    assert f"{STAGE}/camerdevs-stack.yml" not in without.out

    unknown = sami("manifests", "show", "f" * 64)
    assert unknown.code == 2 and "NOT_FOUND" in unknown.err


# Deploy with a type


def test_deploy_with_a_type(sami: Sami, admin: LiveServer, tmp_path: Path) -> None:
    offline.add_cluster(admin.data, "osscameroon", ["stage"])
    artifact = sami("artifact", "register", "web", "--ref", f"127.0.0.1:5000/web@{DIGEST}")
    assert artifact.code == 0, artifact.err
    art = artifact.lines[-1]

    unsynced = sami("deploy", "camerdevs", "--env", "stage", "--artifact", art)
    assert unsynced.code == 2 and "sami manifests sync" in unsynced.err

    synced_id(sami("manifests", "sync", str(EXAMPLES)))
    no_swarm = sami("deploy", "camerdevs", "--env", "stage", "--artifact", art, "--type", "swarm")
    assert no_swarm.code == 2
    assert "add services/camerdevs/swarm/stage/sami.yaml" in no_swarm.err
    compose = sami("deploy", "camerdevs", "--env", "stage", "--artifact", art, "-o", "json")
    assert compose.code == 0, compose.err
    assert json.loads(compose.lines[-1])["deployment_type"] == "compose"

    rid = synced_id(sami("manifests", "sync", str(with_swarm_stage(copy_examples(tmp_path / "d")))))
    ambiguous = sami("deploy", "camerdevs", "--env", "stage", "--artifact", art)
    assert ambiguous.code == 2 and "name the deployment type" in ambiguous.err
    swarm = sami(
        "deploy", "camerdevs", "--env", "stage", "--artifact", art, "--type", "swarm", "-o", "json"
    )
    assert swarm.code == 0, swarm.err
    deployment = json.loads(swarm.lines[-1])
    assert deployment["deployment_type"] == "swarm"
    assert deployment["stack_name"] == "stage_camerdevs"
    assert deployment["manifest_revision"] == rid
    unknown = sami("deploy", "camerdevs", "--env", "stage", "--artifact", art, "--type", "ecs")
    assert unknown.code == 2 and "unknown deployment type 'ecs'" in unknown.err


# Permissions


def test_only_admin_or_unscoped_deployer_may_sync(
    sami: Sami, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    data = live_server.data
    scoped = offline.add_token(data, "deployer", "ci-web", services=["camerdevs"]).plaintext
    staged = offline.add_token(data, "deployer", "ci-stage", environments=["stage"]).plaintext
    reader = offline.add_token(data, "reader", "viewer").plaintext
    deployer = offline.add_token(data, "deployer", "ci").plaintext

    for token in (scoped, staged):
        result = sami("manifests", "sync", str(EXAMPLES), "--token", token)
        assert result.code == 2
        assert "PERMISSION_DENIED" in result.err
        assert "needs an admin token or an unscoped deployer token" in result.err
    assert sami("manifests", "sync", str(EXAMPLES), "--token", reader).code == 2

    synced_id(sami("manifests", "sync", str(EXAMPLES), "--token", deployer))
    # Reading needs no more than a reader token.
    assert sami("manifests", "list", "--token", reader).code == 0
    assert sami("manifests", "show", "--token", scoped).code == 0


def test_unauthenticated_exits_3(sami: Sami, live_server: LiveServer) -> None:
    result = sami("manifests", "sync", str(EXAMPLES), "--addr", live_server.addr)
    assert result.code == 3 and "UNAUTHENTICATED" in result.err


def test_lint_is_part_of_the_sami_cli(sami: Sami, tmp_path: Path) -> None:
    assert sami("manifests", "lint", str(EXAMPLES)).code == 0
    assert sami("manifests", "lint", str(with_error(copy_examples(tmp_path / "d")))).code == 1


def test_a_sync_too_big_for_one_message_is_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sami_client.client.MAX_MESSAGE_BYTES", 1000)
    nowhere = Endpoint(addr=f"127.0.0.1:{free_port()}", token="x")
    with SamiClient(nowhere) as client, pytest.raises(SamiError) as caught:
        client.sync_manifests({"README.md": b"x" * 2000})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the 1000 bytes" in caught.value.message
