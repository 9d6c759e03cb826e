"""`sami deploy` puts an artifact only on a deployment type that runs its kind: an image on
swarm/compose/cron, a static-files archive on static_file (against the real server)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sami_control import offline
from tests.client.cli_result import Result
from tests.control.conftest import LiveServer
from tests.samples import repo, write

Sami = Callable[..., Result]
IMAGE_DIGEST = "sha256:" + "1" * 64
ARCHIVE_DIGEST = "sha256:" + "2" * 64
SITE = """\
version: v1beta
service_name: site
type: static_file
static_file:
  target_dir: /srv/www/site
"""


@pytest.fixture
def world(sami: Sami, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", live_server.token("admin"))
    offline.add_cluster(live_server.data, "c1", ["stage"])
    files = repo(("web",))
    files["services/site/static_file/stage/sami.yaml"] = SITE.encode()
    assert sami("manifests", "sync", str(write(files, tmp_path / "deployments"))).code == 0
    image = f"127.0.0.1:5000/web@{IMAGE_DIGEST}"
    assert sami("artifact", "register", "web", "--ref", image).code == 0
    archive = ("artifact", "register", "site", "--kind", "static_file")
    url = "https://downloads.example.com/site.tar.gz"
    assert sami(*archive, "--ref", url, "--digest", ARCHIVE_DIGEST).code == 0
    return live_server


def test_an_archive_on_a_swarm_service_is_refused_with_exit_2(sami: Sami, world: object) -> None:
    result = sami("deploy", "web", "--env", "stage", "--artifact", f"site@{ARCHIVE_DIGEST}")
    assert result.code == 2, result.err
    assert "FAILED_PRECONDITION" in result.err
    assert (
        f"artifact site@{ARCHIVE_DIGEST} is a static_file artifact, but web in stage is a "
        "swarm deployment, which deploys image artifacts" in result.err
    )
    assert sami("list", "--service", "web").out.strip() == "(none)"  # nothing was queued


def test_an_image_on_a_static_file_site_is_refused(sami: Sami, world: object) -> None:
    result = sami("deploy", "site", "--env", "stage", "--artifact", f"web@{IMAGE_DIGEST}")
    assert result.code == 2, result.err
    assert "is a image artifact, but site in stage is a static_file deployment" not in result.err
    assert "is an image artifact, but site in stage is a static_file deployment" in result.err


def test_the_right_kinds_are_accepted(sami: Sami, world: object) -> None:
    assert sami("deploy", "web", "--env", "stage", "--artifact", f"web@{IMAGE_DIGEST}").code == 0
    site = sami("deploy", "site", "--env", "stage", "--artifact", f"site@{ARCHIVE_DIGEST}")
    assert site.code == 0, site.err
