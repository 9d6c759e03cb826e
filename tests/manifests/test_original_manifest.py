"""The original deployments repo, as written before Sami existed: a sami.yaml with only
`version`, `service_name`, `type` and `pr_deploy`, next to the one stack file it means."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from manifest_fixtures import write_tree

from sami_manifests import resolve

STAGE = "services/camerdevs/compose/stage"
ORIGINAL_MANIFEST = b"""\
version: v1beta
service_name: camerdevs
type: compose
pr_deploy: false
"""
STACK = b"""\
version: "3.8"
services:
  web:
    image: ghcr.io/osscameroon/camerdevs:latest
"""
ROOT = Path(__file__).resolve().parents[2]


def sami(*argv: str) -> subprocess.CompletedProcess[str]:
    """`sami ARGS` as a user types it: a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "sami_client", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def original_tree(folder: str = STAGE, **stacks: bytes) -> dict[str, bytes]:
    files = {f"{folder}/sami.yaml": ORIGINAL_MANIFEST}
    for name, data in (stacks or {"camerdevs-stack.yml": STACK}).items():
        files[f"{folder}/{name}"] = data
    return files


def test_the_original_stage_folder_lints_clean(tmp_path: Path) -> None:
    write_tree(tmp_path, original_tree())
    result = sami("manifests", "lint", str(tmp_path))
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr
    assert "1 manifest valid, 0 errors, 0 warnings" in result.stderr


def test_the_one_stack_file_is_applied_to_its_one_service() -> None:
    manifest = resolve(original_tree(), "camerdevs", None, "stage")
    assert manifest.stack_files == ("camerdevs-stack.yml",)
    assert manifest.image_services == ("web",)
    assert manifest.pr_deploy is False


def test_every_usual_stack_file_name_is_found() -> None:
    for name in (
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
        "app-stack.yaml",
        "stack.yml",
    ):
        manifest = resolve(original_tree(**{name: STACK}), "camerdevs", None, "stage")
        assert manifest.stack_files == (name,), name


def test_the_prod_folder_keeps_working(tmp_path: Path) -> None:
    write_tree(tmp_path, original_tree("services/camerdevs/compose/prod"))
    result = sami("manifests", "lint", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: folder prod/ is read as environment production" in result.stdout
    manifest = resolve(
        original_tree("services/camerdevs/compose/prod"), "camerdevs", None, "production"
    )
    assert manifest.stack_files == ("camerdevs-stack.yml",)


def test_several_stack_files_are_listed_with_how_to_choose(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        original_tree(**{"camerdevs-stack.yml": STACK, "docker-compose.yml": STACK}),
    )
    result = sami("manifests", "lint", str(tmp_path))
    assert result.returncode == 1
    assert (
        f"{tmp_path}/{STAGE}/sami.yaml:1: error: no 'stack_files' and {STAGE}/ holds 2 stack "
        "files (camerdevs-stack.yml, docker-compose.yml): which to apply is not guessed "
        "— choose with stack_files: [camerdevs-stack.yml]"
    ) in result.stdout


def test_no_stack_file_says_what_was_looked_for(tmp_path: Path) -> None:
    write_tree(tmp_path, original_tree(**{"app.yml": STACK}))
    result = sami("manifests", "lint", str(tmp_path))
    assert result.returncode == 1
    assert f"error: no 'stack_files' and no stack file in {STAGE}/ (looked for *-stack.yml" in (
        result.stdout
    )
    assert "add stack_files: [<compose file in" in result.stdout
