"""Lint of a cron manifest's stack files: what the agent would refuse in a job (a mode other
than replicated-job, an update_config) is an error, what it replaces (a restart policy) a
warning; the rollout-monitor check of long-running services does not apply to jobs."""

from __future__ import annotations

from manifest_fixtures import JOBS

from sami_manifests import Problem, Severity, lint

Files = dict[str, bytes]


def job_problems(files: Files, stack: str) -> list[Problem]:
    files[f"{JOBS}/job.yml"] = stack.encode()
    return [p for p in lint(files) if p.file == f"{JOBS}/job.yml"]


def test_a_plain_job_or_one_that_says_replicated_job_is_clean(files: Files) -> None:
    assert job_problems(files, "services:\n  cleanup:\n    image: x\n") == []
    stack = """\
services:
  cleanup:
    image: x
    deploy:
      mode: replicated-job
      replicas: 2
      restart_policy:
        condition: none
"""
    assert job_problems(files, stack) == []


def test_what_swarm_jobs_cannot_have_is_an_error(files: Files) -> None:
    stack = """\
services:
  cleanup:
    image: x
    healthcheck:
      test: ["CMD", "true"]
      interval: 60s
    deploy:
      mode: global
      update_config:
        monitor: 1s
      restart_policy:
        condition: on-failure
"""
    problems = job_problems(files, stack)
    assert [(p.code, p.line, p.severity) for p in problems] == [
        ("cron-job-mode", 8, Severity.ERROR),
        ("cron-update-config", 9, Severity.ERROR),
        ("cron-restart-policy", 12, Severity.WARNING),
    ]
    assert "not mode global" in problems[0].message
    # The same update_config in a swarm stack is a rollout setting, checked as such.
    assert all(p.code != "monitor-too-short" for p in problems)
