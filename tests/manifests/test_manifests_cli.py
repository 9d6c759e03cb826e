"""`sami manifests lint DIR`: output, exit codes; read_tree: what is read, what is refused."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
from manifest_fixtures import EXAMPLES, WEB, WEB_MANIFEST, base_files, write_tree

from sami_client.manifests_cmd import main, register
from sami_manifests import Limits, RepoReadError, read_tree


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_examples_pass_with_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "manifests", "lint", str(EXAMPLES))
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 4
    assert all(": warning: " in line for line in lines)
    assert (
        f"{EXAMPLES}/services/portainer/compose/prod/portainer-agent-stack.yml:7: warning: " in out
    )
    assert "6 manifests valid, 0 errors, 4 warnings" in err


def test_errors_exit_1_with_file_line_severity_message_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = base_files()
    files[f"{WEB}/sami.yaml"] = WEB_MANIFEST.replace("stack_files:", "stack_file:").encode()
    write_tree(tmp_path, files)
    status, out, _ = run(capsys, "manifests", "lint", str(tmp_path))
    assert status == 1
    expected = (
        f"{tmp_path}/{WEB}/sami.yaml:4: error: unknown field 'stack_file': did you mean "
        "'stack_files'? — rename it to stack_files; fields: version, "
    )
    assert any(line.startswith(expected) for line in out.splitlines()), out


def test_clean_tree_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, base_files())
    status, out, err = run(capsys, "manifests", "lint", str(tmp_path))
    assert (status, out) == (0, "")
    assert "3 manifests valid, 0 errors, 0 warnings" in err


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = base_files()
    files[f"{WEB}/sami.yaml"] = WEB_MANIFEST.replace("version: v1beta", "version: v2").encode()
    write_tree(tmp_path, files)
    status, out, err = run(capsys, "manifests", "lint", str(tmp_path), "--output", "json")
    assert status == 1
    assert err == ""
    report = json.loads(out)
    assert report["ok"] is False
    assert (report["errors"], report["warnings"]) == (1, 0)
    assert report["problems"] == [
        {
            "severity": "error",
            "file": f"{WEB}/sami.yaml",
            "line": 1,
            "message": "unsupported version 'v2': this Sami reads v1beta",
            "hint": "set version: v1beta",
            "code": "bad-version",
        }
    ]
    assert {m["service"] for m in report["manifests"]} == {"jobs", "site"}

    status, out, _ = run(capsys, "manifests", "lint", str(EXAMPLES), "--output", "json")
    report = json.loads(out)
    assert status == 0 and report["ok"] is True and report["warnings"] == 4


def test_not_a_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "manifests", "lint", str(tmp_path / "nope"))
    assert status == 2
    assert "not a directory" in err


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["manifests", "lint", ".", "--output", "xml"])
    assert caught.value.code == 2


def test_symlink_outside_the_repo_fails_lint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    write_tree(repo, base_files())
    secret = tmp_path / "secret.yml"
    secret.write_text("services: {x: {image: y}}\n")
    os.symlink(secret, repo / WEB / "web-stack.yml.link")
    status, out, _ = run(capsys, "manifests", "lint", str(repo))
    assert status == 1
    assert f"{WEB}/web-stack.yml.link: error: symbolic link to {secret} points outside" in out


def test_register_adds_the_group_to_an_existing_cli() -> None:
    parser = argparse.ArgumentParser(prog="sami")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["manifests", "lint", "deployments"])
    assert args.dir == "deployments" and args.output == "text"
    assert callable(args.func)


class _ParserWithOutput(argparse.ArgumentParser):
    """Like the sami CLI's parser class: every (sub)command already has -o/--output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("-o", "--output", choices=("text", "json"), default=argparse.SUPPRESS)


def test_register_with_a_parser_that_already_has_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = _ParserWithOutput(prog="sami")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["manifests", "lint", str(EXAMPLES), "-o", "json"])
    assert args.func(args, object()) == 0  # the CLI passes (args, Context)
    assert json.loads(capsys.readouterr().out)["ok"] is True
    args = parser.parse_args(["manifests", "lint", str(EXAMPLES)])
    assert not hasattr(args, "output")  # SUPPRESSed: the handler defaults to text
    assert args.func(args) == 0
    assert ": warning: " in capsys.readouterr().out


# --- read_tree --------------------------------------------------------------------------


def test_read_tree_reads_services_and_readme_only(tmp_path: Path) -> None:
    files = base_files()
    files[".git/config"] = b"[core]\n"
    files[f"{WEB}/.git/HEAD"] = b"ref\n"
    files[".github/workflows/ci.yml"] = b"on: push\n"
    write_tree(tmp_path, files)
    read = read_tree(tmp_path)
    assert set(read) == {p for p in base_files() if p.startswith("services/")} | {"README.md"}
    assert read[f"{WEB}/sami.yaml"] == WEB_MANIFEST.encode()


def test_read_tree_follows_links_inside_the_repo(tmp_path: Path) -> None:
    write_tree(tmp_path, base_files())
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/common.env").write_text("A=1\n")
    os.symlink(tmp_path / "shared/common.env", tmp_path / WEB / "common.env")
    os.symlink("../../../../shared", tmp_path / WEB / "shared")
    read = read_tree(tmp_path)
    assert read[f"{WEB}/common.env"] == b"A=1\n"
    assert read[f"{WEB}/shared/common.env"] == b"A=1\n"


def test_read_tree_refuses_links_outside_broken_and_looping(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_tree(repo, base_files())
    os.symlink("/etc", repo / WEB / "etc")
    os.symlink(repo / WEB / "missing", repo / WEB / "broken")
    os.symlink("..", repo / WEB / "loop")
    with pytest.raises(RepoReadError) as caught:
        read_tree(repo)
    codes = {(p.file, p.code) for p in caught.value.problems}
    assert (f"{WEB}/etc", "symlink-outside") in codes
    assert (f"{WEB}/broken", "broken-symlink") in codes
    assert any(code == "symlink-loop" for _, code in codes)


def test_read_tree_limits(tmp_path: Path) -> None:
    write_tree(tmp_path, base_files())
    with pytest.raises(RepoReadError) as caught:
        read_tree(tmp_path, Limits(max_files=3))
    assert [p.code for p in caught.value.problems] == ["too-many-files"]
    with pytest.raises(RepoReadError) as caught:
        read_tree(tmp_path, Limits(max_file_bytes=100))
    assert {p.code for p in caught.value.problems} == {"file-too-large"}
    with pytest.raises(RepoReadError) as caught:
        read_tree(tmp_path, Limits(max_total_bytes=300))
    assert {p.code for p in caught.value.problems} == {"revision-too-large"}


def test_read_tree_refuses_special_files(tmp_path: Path) -> None:
    write_tree(tmp_path, base_files())
    os.mkfifo(tmp_path / WEB / "fifo")
    with pytest.raises(RepoReadError) as caught:
        read_tree(tmp_path)
    assert [p.code for p in caught.value.problems] == ["not-a-file"]


def test_read_tree_on_a_file_raises(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RepoReadError, match="not a directory"):
        read_tree(tmp_path / "f")


def test_lint_with_the_strict_stack_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """What `sami-control serve --stack-policy strict` would refuse at sync, found in CI: the
    example portainer agent mounts the Docker socket and Docker's own volumes."""
    status, out, err = run(capsys, "manifests", "lint", "--stack-policy", "strict", str(EXAMPLES))
    assert status == 1
    stack = f"{EXAMPLES}/services/portainer/compose/prod/portainer-agent-stack.yml"
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in errors] == [f"{stack}:7", f"{stack}:8"]
    assert "service agent mounts host path '/var/run/docker.sock'" in errors[0]
    assert "strict stack policy" in errors[0]
    assert "2 errors" in err
    status, _, _ = run(capsys, "manifests", "lint", "--stack-policy", "off", str(EXAMPLES))
    assert status == 0
    with pytest.raises(SystemExit):
        run(capsys, "manifests", "lint", "--stack-policy", "lax", str(EXAMPLES))
