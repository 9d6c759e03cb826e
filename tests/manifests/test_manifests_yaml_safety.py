"""Hostile YAML in a deployments repo is refused quickly and never run: entity expansion
(billion laughs), recursive and excessive aliases, Python tags, several documents."""

from __future__ import annotations

import time
from pathlib import Path

from manifest_fixtures import BILLION_LAUGHS, WEB, WEB_MANIFEST, WEB_STACK

from sami_manifests import Problem, lint

Files = dict[str, bytes]


def find(problems: list[Problem], code: str) -> list[Problem]:
    return [p for p in problems if p.code == code]


def test_billion_laughs_is_refused_quickly(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = BILLION_LAUGHS.encode()
    files[f"{WEB}/web-stack.yml"] = BILLION_LAUGHS.replace("version: v1beta\n", "").encode()
    start = time.perf_counter()
    problems = lint(files)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert len(find(problems, "yaml-size")) == 1  # the stack file is not reached


def test_billion_laughs_in_a_stack_file_is_refused_quickly(files: Files) -> None:
    files[f"{WEB}/web-stack.yml"] = (
        "x-lol:\n  "
        + BILLION_LAUGHS.replace("version: v1beta\n", "").replace("\n", "\n  ")
        + "\n"
        + WEB_STACK
    ).encode()
    start = time.perf_counter()
    problems = lint(files)
    assert time.perf_counter() - start < 1.0
    (problem,) = find(problems, "yaml-size")
    assert problem.file == f"{WEB}/web-stack.yml"


def test_recursive_alias_is_refused(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = (WEB_MANIFEST + "x: &x [1, *x]\n").encode()
    (problem,) = find(lint(files), "yaml-recursive")
    assert problem.line == 10


def test_too_many_aliases_are_refused(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = ("a: &a 1\nb: [" + ", ".join(["*a"] * 300) + "]\n").encode()
    assert find(lint(files), "yaml-aliases")


def test_python_tags_are_never_constructed(files: Files, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files[f"{WEB}/sami.yaml"] = (
        WEB_MANIFEST
        + f"x: !!python/object/apply:os.system ['touch {marker}']\n"
        + "y: !!python/name:os.system\n"
    ).encode()
    problems = find(lint(files), "yaml-tag")
    assert len(problems) == 2
    assert not marker.exists()


def test_multiple_documents_are_refused(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = (WEB_MANIFEST + "---\nversion: v1beta\n").encode()
    (problem,) = find(lint(files), "yaml-documents")
    assert problem.line == 10
