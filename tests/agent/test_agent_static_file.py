"""The static_file executor on the real file system, with archives served by a real HTTP
server on 127.0.0.1: deploy, switch, rollback to a kept release, pruning, verification,
hostile archives, cancellation and redelivery."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_fakes import assignment
from static_fixtures import (
    V1,
    V2,
    V3,
    V4,
    ArchiveServer,
    Recorder,
    a_job,
    current_of,
    deploy,
    digest_of,
    entries,
    hex_of,
    member,
    run,
    tar_gz,
)

from sami_agent.executor import ExecutionResult, Outcome
from sami_agent.executors import static_file
from sami_agent.executors.static_file import StaticFileExecutor
from sami_agent.jobs import job_from_assignment

pytestmark = pytest.mark.timeout(30)


# -- deploy, switch, rollback --------------------------------------------------------------


def test_deploy_switch_and_rollback_without_downloading_again(
    server: ArchiveServer, target: Path
) -> None:
    url1 = server.publish("/v1.tar.gz", V1)
    url2 = server.publish("/v2.tar.gz", V2)

    result, report = run(a_job(target, url1, digest_of(V1)))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert current_of(target) == f"releases/{hex_of(V1)}"  # relative: the folder can move
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v1</h1>"
    assert (target / "current" / "css" / "site.css").read_bytes() == b"body{}"
    assert stat.S_IMODE((target / "releases" / hex_of(V1)).stat().st_mode) == 0o755
    phases = [phase for phase, _ in report.reports]
    assert phases[0] == "plan"
    assert {"download", "verify", "unpack", "switch"} <= set(phases)
    assert digest_of(V1) in report.text()

    result, report = run(a_job(target, url2, digest_of(V2), deployment_id="d2"))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert current_of(target) == f"releases/{hex_of(V2)}"
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v2</h1>"
    assert (target / "releases" / hex_of(V1) / "index.html").exists()  # kept for rollback
    assert (target / ".sami-previous").read_text().strip() == hex_of(V1)
    assert "kept for rollback" in result.reason

    # Rollback: deploying v1 again switches to the kept release; nothing is downloaded.
    assert server.requests == {"/v1.tar.gz": 1, "/v2.tar.gz": 1}
    result, report = run(a_job(target, url1, digest_of(V1), deployment_id="d3"))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert server.requests == {"/v1.tar.gz": 1, "/v2.tar.gz": 1}
    assert "without downloading" in report.text()
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v1</h1>"
    assert (target / ".sami-previous").read_text().strip() == hex_of(V2)
    # Nothing temporary is left behind.
    assert entries(target) == {"releases", "current", ".sami-previous", ".sami-lock"}
    assert entries(target / "releases") == {
        hex_of(V1),
        hex_of(V1) + ".sami-release",
        hex_of(V2),
        hex_of(V2) + ".sami-release",
    }


def test_a_redelivered_job_is_recognised_and_downloads_nothing(
    server: ArchiveServer, target: Path
) -> None:
    url = server.publish("/v1.tar.gz", V1)
    job = a_job(target, url, digest_of(V1))
    assert run(job)[0].outcome is Outcome.SUCCEEDED
    result, report = run(dataclasses.replace(job, attempt=2))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert "already" in result.reason
    assert server.requests == {"/v1.tar.gz": 1}
    assert current_of(target) == f"releases/{hex_of(V1)}"


def test_keep_releases_prunes_the_least_recently_used_never_current_or_previous(
    server: ArchiveServer, target: Path
) -> None:
    for data in (V1, V2, V3):
        deploy(server, target, data, keep_releases=3)
    assert {hex_of(V1), hex_of(V2), hex_of(V3)} <= entries(target / "releases")
    deploy(server, target, V1, keep_releases=3)  # rollback: v1 is used again
    time.sleep(0.01)
    deploy(server, target, V4, keep_releases=3)
    # Most recently used: v4 (current), v1 (previous), v3; v2 goes with its marker.
    releases = entries(target / "releases")
    assert releases == {
        name + suffix
        for name in (hex_of(V4), hex_of(V1), hex_of(V3))
        for suffix in ("", ".sami-release")
    }

    # keep_releases 1 still keeps the previous release (for a switch back).
    deploy(server, target, V2, keep_releases=1)
    assert entries(target / "releases") == {
        name + suffix for name in (hex_of(V2), hex_of(V4)) for suffix in ("", ".sami-release")
    }


def test_a_digest_mismatch_fails_naming_both_digests_and_switches_nothing(
    server: ArchiveServer, target: Path
) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    claimed = digest_of(V3)
    result, _ = run(a_job(target, url, claimed))
    assert result.outcome is Outcome.FAILED
    assert claimed in result.reason and digest_of(V2) in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert entries(target / "releases") == {hex_of(V1), hex_of(V1) + ".sami-release"}


# -- hostile archives ----------------------------------------------------------------------


def _with(*members: tarfile.TarInfo) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        for info in members:
            tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)

    return add


def _device(name: str) -> tarfile.TarInfo:
    info = member(name, tarfile.CHRTYPE)
    info.devmajor, info.devminor = 1, 3
    return info


HOSTILE = {
    "absolute path": ("/tmp/sami-evil", _with(member("/tmp/sami-evil"))),
    "dot-dot": ("../x", _with(member("../x"))),
    "dot-dot inside": ("a/../../x", _with(member("a/../../x"))),
    "symlink to /etc": ("etc", _with(member("etc", tarfile.SYMTYPE, "/etc"))),
    "symlink out": ("up", _with(member("up", tarfile.SYMTYPE, "../../outside"))),
    "hardlink out": ("pw", _with(member("pw", tarfile.LNKTYPE, "/etc/passwd"))),
    "hardlink dot-dot": ("pw", _with(member("pw", tarfile.LNKTYPE, "../outside"))),
    "device file": ("null", _with(_device("null"))),
    "fifo": ("pipe", _with(member("pipe", tarfile.FIFOTYPE))),
    "through a symlink": (
        "link/x",
        _with(
            member("sub", tarfile.DIRTYPE), member("link", tarfile.SYMTYPE, "sub"), member("link/x")
        ),
    ),
    "symlink escaping through a later symlink": (
        "s2",
        _with(
            member("deep/er", tarfile.DIRTYPE),
            member("s2", tarfile.SYMTYPE, "deep/er/x/../../q"),
            member("deep/er/x", tarfile.SYMTYPE, "../.."),
        ),
    ),
    "symlink escaping through another symlink": (
        "s2",
        _with(
            member("deep/er", tarfile.DIRTYPE),
            member("deep/er/x", tarfile.SYMTYPE, "../.."),
            member("s2", tarfile.SYMTYPE, "deep/er/x/../../q"),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_naming_the_member(
    server: ArchiveServer, target: Path, tmp_path: Path, case: str
) -> None:
    deploy(server, target, V1)
    name, add = HOSTILE[case]
    data = tar_gz({"index.html": b"evil"}, add)
    url = server.publish("/evil.tar.gz", data)
    result, report = run(a_job(target, url, digest_of(data)))
    assert result.outcome is Outcome.FAILED, report.text()
    assert repr(name) in result.reason, result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert entries(target / "releases") == {hex_of(V1), hex_of(V1) + ".sami-release"}
    assert entries(target) == {"releases", "current", ".sami-lock"}
    assert not (tmp_path / "srv" / "www" / "x").exists()
    assert not (tmp_path / "outside").exists()


def test_unpacked_files_lose_setuid_and_ownership_bits(server: ArchiveServer, target: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        info = member("bin/tool")
        info.mode = 0o4777
        info.size = 2
        tar.addfile(info, io.BytesIO(b"#!"))

    deploy(server, target, tar_gz({"index.html": b"x"}, add))
    mode = stat.S_IMODE((target / "current" / "bin" / "tool").stat().st_mode)
    assert not mode & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH)


def test_archives_over_the_size_limit_are_refused(server: ArchiveServer, target: Path) -> None:
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(
        a_job(target, url, digest_of(V1)), executor=StaticFileExecutor(max_archive_bytes=10)
    )
    assert result.outcome is Outcome.FAILED
    assert "more than the agent accepts" in result.reason
    assert not (target / "current").exists()

    result, _ = run(
        a_job(target, url, digest_of(V1)), executor=StaticFileExecutor(max_unpacked_bytes=5)
    )
    assert result.outcome is Outcome.FAILED
    assert "unpacks to more than" in result.reason
    assert entries(target / "releases") == set()


def test_the_size_limit_holds_when_no_size_is_announced(
    server: ArchiveServer, target: Path
) -> None:
    url = server.publish("/v1.tar.gz", V1)
    server.hide_length.add("/v1.tar.gz")
    result, _ = run(
        a_job(target, url, digest_of(V1)), executor=StaticFileExecutor(max_archive_bytes=10)
    )
    assert result.outcome is Outcome.FAILED
    assert "more than the agent accepts" in result.reason
    assert entries(target / "releases") == set()
    deploy(server, target, V1)  # and without a limit in the way, it deploys


def test_a_file_that_is_not_an_archive_is_refused(server: ArchiveServer, target: Path) -> None:
    data = b"<html>not an archive</html>"
    url = server.publish("/page.html", data)
    result, _ = run(a_job(target, url, digest_of(data)))
    assert result.outcome is Outcome.FAILED
    assert "not a tar archive" in result.reason


# -- cancellation and failures -------------------------------------------------------------


def test_cancelled_before_it_starts_switches_nothing(server: ArchiveServer, target: Path) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    cancelled = threading.Event()
    cancelled.set()
    result, _ = run(a_job(target, url, digest_of(V2)), cancelled=cancelled)
    assert result.outcome is Outcome.CANCELLED
    assert "nothing was switched" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert "/v2.tar.gz" not in server.requests


def test_cancelled_while_downloading_leaves_nothing_behind(
    server: ArchiveServer, target: Path
) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    cancelled = threading.Event()

    def on(phase: str, message: str) -> None:
        if phase == "download" and message.startswith("downloaded "):
            cancelled.set()

    result, report = run(
        a_job(target, url, digest_of(V2)), cancelled=cancelled, report=Recorder(on)
    )
    assert result.outcome is Outcome.CANCELLED, report.text()
    assert "while downloading" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert entries(target / "releases") == {hex_of(V1), hex_of(V1) + ".sami-release"}


def test_cancelled_after_the_switch_switches_back(server: ArchiveServer, target: Path) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    cancelled = threading.Event()

    def on(phase: str, message: str) -> None:
        if phase == "switch":
            cancelled.set()

    result, report = run(
        a_job(target, url, digest_of(V2)), cancelled=cancelled, report=Recorder(on)
    )
    assert result.outcome is Outcome.CANCELLED, report.text()
    assert "switched" in result.reason and "back" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert "rollback" in [phase for phase, _ in report.reports]
    # The release stays unpacked: deploying it later downloads nothing.
    deploy(server, target, V2, deployment_id="d2")
    assert f"/{hex_of(V2)[:8]}.tar.gz" not in server.requests


def test_cancelled_after_the_first_switch_removes_current(
    server: ArchiveServer, target: Path
) -> None:
    url = server.publish("/v1.tar.gz", V1)
    cancelled = threading.Event()
    report = Recorder(lambda phase, _: cancelled.set() if phase == "switch" else None)
    result, _ = run(a_job(target, url, digest_of(V1)), cancelled=cancelled, report=report)
    assert result.outcome is Outcome.CANCELLED
    assert not os.path.lexists(target / "current")


def test_a_failure_after_the_switch_switches_back(
    server: ArchiveServer, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)

    def broken(self: object, hex_: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(static_file._Deployment, "_touch", broken)
    result, _ = run(a_job(target, url, digest_of(V2)))
    assert result.outcome is Outcome.FAILED
    assert "No space left on device" in result.reason and "back" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert (target / ".sami-previous").exists() is False


def test_progress_is_reported_with_bytes_and_total(server: ArchiveServer, target: Path) -> None:
    data = tar_gz({"big.bin": os.urandom(3 << 20)})  # incompressible: ~3 chunks
    url = server.publish("/big.tar.gz", data)
    result, report = run(a_job(target, url, digest_of(data)))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    progress = [m for p, m in report.reports if p == "download" and "%)" in m]
    assert len(progress) >= 3
    assert progress[-1].endswith("(100%)") and " of 3.0 MiB" in progress[-1]


def test_a_busy_target_is_waited_for(server: ArchiveServer, target: Path) -> None:
    target.mkdir(parents=True)
    url = server.publish("/v1.tar.gz", V1)
    fd = os.open(target / ".sami-lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    waiting = threading.Event()
    report = Recorder(lambda phase, _: waiting.set() if phase == "queue" else None)
    results: list[ExecutionResult] = []
    worker = threading.Thread(
        target=lambda: results.append(run(a_job(target, url, digest_of(V1)), report=report)[0])
    )
    worker.start()
    try:
        assert waiting.wait(5)
        assert not (target / "current").exists()
    finally:
        os.close(fd)
    worker.join(5)
    assert results and results[0].outcome is Outcome.SUCCEEDED


def test_leftovers_of_an_interrupted_run_are_removed(server: ArchiveServer, target: Path) -> None:
    hex1 = hex_of(V1)
    (target / "releases" / f"{hex1}.tmp-abc" / "half").mkdir(parents=True)
    (target / "releases" / f"{hex1}.download-abc").write_bytes(b"par")
    (target / ".current.tmp-abc").symlink_to("releases/nothing")
    # A release directory without its marker is incomplete: unpacked again.
    (target / "releases" / hex1).mkdir()
    deploy(server, target, V1)
    assert entries(target / "releases") == {hex1, hex1 + ".sami-release"}
    assert entries(target) == {"releases", "current", ".sami-lock"}
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v1</h1>"


def test_a_current_that_is_no_link_is_left_alone(server: ArchiveServer, target: Path) -> None:
    (target / "current").mkdir(parents=True)
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert "not a symbolic link" in result.reason
    assert server.requests == {}  # refused before downloading


def test_a_lock_file_that_is_a_link_is_refused_and_not_followed(
    server: ArchiveServer, target: Path, tmp_path: Path
) -> None:
    """Opening the lock followed links: a link planted there made the agent create (and
    lock) a file wherever it pointed."""
    target.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    (target / ".sami-lock").symlink_to(elsewhere)
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert f"{target / '.sami-lock'} is a symbolic link" in result.reason
    assert not elsewhere.exists()
    assert not (target / "current").exists()
    assert server.requests == {}


@pytest.mark.parametrize("dangling", [False, True])
def test_a_releases_folder_that_is_a_link_is_refused(
    server: ArchiveServer, target: Path, tmp_path: Path, dangling: bool
) -> None:
    elsewhere = tmp_path / "elsewhere"
    if not dangling:
        elsewhere.mkdir()
    target.mkdir(parents=True)
    (target / "releases").symlink_to(elsewhere)
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert f"{target / 'releases'} is a symbolic link" in result.reason
    assert not elsewhere.exists() or list(elsewhere.iterdir()) == []
    assert entries(target) == {"releases"}
    assert server.requests == {}


# -- what is refused before anything happens -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"artifact_ref": "ghcr.io/example/docs@sha256:" + "ab" * 32},
            "not supported yet: publish the archive at an http(s) URL",
        ),
        ({"artifact_ref": "file:///etc/passwd"}, "is not an http(s) URL"),
        ({"static_target_dir": ""}, "names no static_file.target_dir"),
        ({"static_target_dir": "srv/www"}, "absolute, normalized"),
        ({"static_target_dir": "/srv"}, "two levels deep"),
        ({"static_target_dir": "/srv/www/../etc"}, "absolute, normalized"),
        ({"artifact_digest": "sha256:abc"}, "is not sha256:<64 lower-case hex>"),
        ({"deployment_type": "swarm"}, "does not deploy 'swarm'"),
    ],
)
def test_bad_jobs_are_refused_before_anything_is_touched(
    target: Path, changes: dict[str, object], reason: str
) -> None:
    job = a_job(target, "http://127.0.0.1:9/x.tar.gz", digest_of(V1), **changes)
    result, _ = run(job)
    assert result.outcome is Outcome.FAILED
    assert reason in result.reason
    assert not target.exists()


def test_the_assignment_carries_target_and_keep_releases() -> None:
    a = assignment(deployment_type="static_file")
    assert job_from_assignment(a).keep_releases == 5  # unset: the documented default
    assert job_from_assignment(a).static_target_dir == ""
    a.manifest.static_target_dir = "/srv/www/docs"
    a.manifest.keep_releases = 3
    job = job_from_assignment(a)
    assert (job.static_target_dir, job.keep_releases) == ("/srv/www/docs", 3)


def test_a_dangling_current_is_repaired_and_keeps_its_previous_release(
    server: ArchiveServer, target: Path
) -> None:
    deploy(server, target, V1)
    deploy(server, target, V2)
    (target / "releases" / (hex_of(V2) + ".sami-release")).unlink()
    shutil.rmtree(target / "releases" / hex_of(V2))  # removed by hand: `current` dangles
    deploy(server, target, V2)  # downloads again, since the release is gone
    assert server.requests[f"/{hex_of(V2)[:8]}.tar.gz"] == 2
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v2</h1>"
    assert (target / ".sami-previous").read_text().strip() == hex_of(V1)
