"""`sami cluster update NAME --env …` against the real server: an existing cluster gains
pull_request (the README's path for turning previews on)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.client.cli_result import Result
from tests.control.conftest import LiveServer

Sami = Callable[..., Result]


@pytest.fixture
def admin(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", live_server.token("admin"))
    return live_server


def test_an_existing_cluster_gains_pull_request(sami: Sami, admin: LiveServer) -> None:
    assert sami("cluster", "create", "main", "--env", "stage", "--env", "production").code == 0
    result = sami(
        "cluster",
        "update",
        "main",
        "--env",
        "stage",
        "--env",
        "production",
        "--env",
        "pull_request",
    )
    assert result.code == 0, result.err
    assert result.out == "cluster main serves production, pull_request, stage\n"
    shown = json.loads(sami("cluster", "list", "-o", "json").out)
    assert [c["environments"] for c in shown] == [["production", "pull_request", "stage"]]


def test_an_environment_of_another_cluster_is_refused_with_exit_2(
    sami: Sami, admin: LiveServer
) -> None:
    assert sami("cluster", "create", "main", "--env", "stage").code == 0
    assert sami("cluster", "create", "previews", "--env", "pull_request").code == 0
    result = sami("cluster", "update", "main", "--env", "stage", "--env", "pull_request")
    assert result.code == 2
    assert (
        "environment 'pull_request' is already served by cluster 'previews'; an environment is "
        "served by one cluster (drop it there first: `sami cluster update previews --env ...`)"
    ) in result.err
    unknown = sami("cluster", "update", "nope", "--env", "stage")
    assert unknown.code == 2 and "cluster 'nope' does not exist" in unknown.err
    reader = sami("cluster", "update", "main", "--env", "stage", "--token", admin.token("reader"))
    assert reader.code == 2 and "PERMISSION_DENIED" in reader.err
