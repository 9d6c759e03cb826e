"""Stack-file pre-flight warnings, and the small grammars (durations, cron, names)."""

from __future__ import annotations

import pytest
from manifest_fixtures import WEB

from sami_manifests import Problem, Severity, lint
from sami_manifests.values import (
    cron_error,
    is_valid_name,
    is_valid_stack_name,
    parse_go_duration,
    parse_sami_duration,
)

Files = dict[str, bytes]


def stack_problems(files: Files, stack: str) -> list[Problem]:
    files[f"{WEB}/web-stack.yml"] = stack.encode()
    files[f"{WEB}/sami.yaml"] = files[f"{WEB}/sami.yaml"].replace(b"image_services:\n", b"x:\n")
    files[f"{WEB}/sami.yaml"] = files[f"{WEB}/sami.yaml"].replace(b"x:\n  - web\n", b"")
    return [p for p in lint(files) if p.file == f"{WEB}/web-stack.yml"]


def codes(problems: list[Problem]) -> list[tuple[str, int]]:
    return [(p.code, p.line) for p in problems]


def test_privileged_cap_add_and_docker_socket_are_warned(files: Files) -> None:
    problems = stack_problems(
        files,
        """\
services:
  web:
    image: x
    privileged: true
    cap_add: [NET_ADMIN, SYS_TIME]
    volumes:
      - data:/data
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - type: bind
        source: /run/docker.sock
        target: /var/run/docker.sock
""",
    )
    assert codes(problems) == [
        ("privileged", 4),
        ("cap-add", 5),
        ("docker-socket", 8),
        ("docker-socket", 9),
    ]
    assert all(p.severity is Severity.WARNING for p in problems)
    assert "NET_ADMIN, SYS_TIME" in problems[1].message


def test_monitor_shorter_than_the_health_check_failure_window(files: Files) -> None:
    problems = stack_problems(
        files,
        """\
services:
  web:
    image: x
    healthcheck:
      test: ["CMD", "true"]
      interval: 20s
      retries: 3
      start_period: 30s
    deploy:
      update_config:
        monitor: 1m
""",
    )
    (problem,) = problems
    assert (problem.code, problem.line, problem.severity) == (
        "monitor-window",
        11,
        Severity.WARNING,
    )
    assert "20s x 3 + start_period 30s = 1m30s" in problem.message
    assert problem.hint == "set deploy.update_config.monitor to at least 1m30s"


def test_monitor_left_to_swarm_default_with_default_health_check(files: Files) -> None:
    problems = stack_problems(
        files,
        """\
services:
  web:
    image: x
    healthcheck:
      test: ["CMD", "true"]
""",
    )
    (problem,) = problems
    assert problem.line == 4
    assert "not set (Swarm uses 5s)" in problem.message
    assert "30s x 3 + start_period 0s = 1m30s" in problem.message


@pytest.mark.parametrize(
    "healthcheck",
    [
        "healthcheck:\n      disable: true",
        'healthcheck:\n      test: ["NONE"]',
        "healthcheck:\n      test: [CMD, 'true']\n      interval: 1s\n      retries: 2",
        "hostname: y",  # no health check at all
    ],
)
def test_monitor_check_stays_quiet(files: Files, healthcheck: str) -> None:
    stack = f"services:\n  web:\n    image: x\n    {healthcheck}\n"
    assert stack_problems(files, stack) == []


def test_monitor_long_enough_is_quiet(files: Files) -> None:
    stack = """\
services:
  web:
    image: x
    healthcheck: {test: [CMD, "true"], interval: 10s, retries: 3, start_period: 5s}
    deploy: {update_config: {monitor: 35s}}
"""
    assert stack_problems(files, stack) == []


def test_anchors_and_merge_keys_in_stack_files(files: Files) -> None:
    stack = """\
x-defaults: &defaults
  image: x
  privileged: true
services:
  web:
    <<: *defaults
    privileged: false
  worker:
    <<: *defaults
"""
    files[f"{WEB}/sami.yaml"] = files[f"{WEB}/sami.yaml"].replace(b"  - web\n", b"  - worker\n")
    files[f"{WEB}/web-stack.yml"] = stack.encode()
    problems = [p for p in lint(files) if p.file.endswith("web-stack.yml")]
    # web overrides privileged; worker inherits it (reported where it is written).
    assert codes(problems) == [("privileged", 3)]
    assert "service worker" in problems[0].message


def test_env_file_paths_are_checked(files: Files) -> None:
    files[f"{WEB}/app.env"] = b"A=1\n"
    problems = stack_problems(
        files,
        """\
services:
  web:
    image: x
    env_file:
      - app.env
      - missing.env
      - /etc/host.env
""",
    )
    assert codes(problems) == [("missing-file", 6), ("absolute-path", 7)]
    assert [p.severity for p in problems] == [Severity.ERROR, Severity.WARNING]


def test_several_stack_files_are_merged_for_image_services(files: Files) -> None:
    files[f"{WEB}/override.yml"] = b"services:\n  worker:\n    image: w\n"
    files[f"{WEB}/sami.yaml"] = (
        files[f"{WEB}/sami.yaml"]
        .replace(b"  - web-stack.yml\n", b"  - web-stack.yml\n  - ./override.yml\n")
        .replace(b"  - web\n", b"  - web\n  - worker\n")
    )
    assert [p for p in lint(files) if p.is_error] == []


def test_swarm_service_name_length_is_warned(files: Files) -> None:
    name = "a" * 60
    files[f"{WEB}/web-stack.yml"] = f"services:\n  {name}:\n    image: x\n".encode()
    files[f"{WEB}/sami.yaml"] = files[f"{WEB}/sami.yaml"].replace(
        b"  - web\n", f"  - {name}\n".encode()
    )
    (problem,) = [p for p in lint(files) if p.code == "name-too-long"]
    assert f"stage_web_{name}" in problem.message


# --- grammars ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("2h", 7200),
        (" 10s ", 10),
        # The grammar of every Sami duration (sami_common.durations), as the CLI reads it.
        ("300", 300),
        ("1.5m", 90),
        ("1d", 86400),
    ],
)
def test_sami_durations(value: object, seconds: int) -> None:
    assert parse_sami_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "1m1h", "", "1.5s", True, 1.5, None, [1]])
def test_bad_sami_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_sami_duration(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("1m30s", 90), ("1.5s", 1.5), ("500ms", 0.5), ("0", 0), ("1h", 3600)],
)
def test_go_durations(value: str, seconds: float) -> None:
    assert parse_go_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/15 * * * *",
        "0 3 * * mon-fri",
        "30 2 1,15 jan-jun 0",
        "0 0 * * 7",
        "5-55/10 8-18 * * 1-5",
        "5/15 * * * *",
        "@daily",
        "@hourly",
    ],
)
def test_valid_cron(expression: str) -> None:
    assert cron_error(expression) is None


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("* 24 * * *", "hour: 24 is outside 0-23"),
        ("* * 0 * *", "day of month: 0 is outside 1-31"),
        ("* * * 13 *", "month: 13 is outside 1-12"),
        ("* * * * 8", "day of week: 8 is outside 0-7"),
        ("* * * *", "5 fields"),
        ("0 0 * * * *", "5 fields"),
        ("*/0 * * * *", "step '0'"),
        ("10-5 * * * *", "runs backwards"),
        ("x * * * *", "'x' is not a number"),
        ("@reboot", "unknown cron macro"),
        ("", "5 fields"),
    ],
)
def test_invalid_cron(expression: str, says: str) -> None:
    error = cron_error(expression)
    assert error is not None and says in error


def test_names() -> None:
    assert is_valid_name("caparledev-bot")
    assert not is_valid_name("Web")
    assert not is_valid_name("web_app")
    assert not is_valid_name("-web")
    assert not is_valid_name("a" * 64)
    assert is_valid_stack_name("production_web")
    assert not is_valid_stack_name("web stack")
    assert not is_valid_stack_name("_web")
