"""`sami` with image references as Docker writes them: `repo:tag@sha256:…`."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from sami_control import offline
from tests.client.cli_result import Result
from tests.control.conftest import LiveServer
from tests.samples import repo, write

from .fake_control import DIGEST, REF, FakeControl

Sami = Callable[..., Result]


def test_deploy_sends_the_reference_without_its_tag(
    sami: Sami, server: object, control: FakeControl
) -> None:
    """The fake knows only `127.0.0.1:5000/web@…`: the client normalised what it sent."""
    repository = REF.rpartition("@")[0]
    result = sami("deploy", "web", "--env", "stage", "--artifact", f"{repository}:1.2@{DIGEST}")
    assert result.code == 0, result.err
    assert result.lines[-1] == "d1"


def test_register_and_deploy_with_tags_against_sami_control(
    sami: Sami, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", live_server.token("admin"))
    offline.add_cluster(live_server.data, "c1", ["stage"])
    deployments = write(repo(("web",)), tmp_path / "deployments")  # type: ignore[operator]
    assert sami("manifests", "sync", str(deployments)).code == 0
    built = f"ghcr.io/example/web:main-1f2e3d@{DIGEST}"  # as `docker build` prints it
    registered = sami("artifact", "register", "web", "--ref", built, "-o", "json")
    assert registered.code == 0, registered.err
    artifact = json.loads(registered.out)
    assert artifact["ref"] == f"ghcr.io/example/web@{DIGEST}"
    assert artifact["tags"] == ["main-1f2e3d"]
    for ref in (built, f"ghcr.io/example/web:latest@{DIGEST}", f"ghcr.io/example/web@{DIGEST}"):
        deployed = sami("deploy", "web", "--env", "stage", "--artifact", ref, "-o", "json")
        assert deployed.code == 0, (ref, deployed.err)
        assert json.loads(deployed.lines[-1])["artifact"]["id"] == artifact["id"]
    shown = sami("artifact", "get", f"ghcr.io/example/web:v0@{DIGEST}", "-o", "json")
    assert json.loads(shown.out)["id"] == artifact["id"]
