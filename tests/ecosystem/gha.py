"""Just enough of GitHub Actions to run this repo's action and example workflows locally: a
runner for `runs.using: composite` actions and for workflow jobs whose `run` steps go through
bash. Their `${{ }}` expressions and `if:` conditions are gha_expressions.py's.

It follows the runner's behaviour for shells, step outputs ($GITHUB_OUTPUT), $GITHUB_PATH,
$GITHUB_ENV and `if:` conditions. Steps that use other actions (checkout,
docker/build-push-action ...) are handed to stubs the test provides. What it does not
implement raises Unsupported (or ExpressionError), so an example that needs more fails the
tests instead of being half-checked.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .gha_expressions import Status, condition, interpolate, to_string

REPO = Path(__file__).resolve().parents[2]
ACTION_FILE = REPO / "action.yml"
# How the example workflows refer to this repository's action.
ACTION_NAME = "osscameroon/sami"


class Unsupported(RuntimeError):
    pass


# -- YAML ----------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a mapping")
    # YAML 1.1 reads a bare `on` key as the boolean true.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


# -- running steps -------------------------------------------------------------------------


@dataclass
class StepRun:
    id: str
    name: str
    outcome: str  # success | failure | skipped
    outputs: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Runner:
    """The machine a job runs on: a workspace, RUNNER_TEMP, the environment every step
    starts from, and what steps added to PATH ($GITHUB_PATH) and to the env ($GITHUB_ENV)."""

    root: Path
    base_env: dict[str, str]
    github: dict[str, Any]
    path_additions: list[str] = field(default_factory=list)
    job_env_file: dict[str, str] = field(default_factory=dict)
    summary: Path | None = None

    def __post_init__(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.temp.mkdir(parents=True, exist_ok=True)
        self.summary = self.temp / "step-summary.md"
        self.summary.touch()

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    def run_script(
        self,
        script: str,
        shell: str | None,
        env: Mapping[str, str],
        *,
        action_path: Path | None = None,
        working_directory: str | None = None,
        timeout: float = 120,
    ) -> tuple[int, str, str, dict[str, str]]:
        """Run one `run:` step as the runner does; returns (status, stdout, stderr, outputs)."""
        if shell is None:
            argv = ["bash", "-e"]  # the default shell on Linux: `bash -e {0}`
        elif shell == "bash":
            argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
        else:
            raise Unsupported(f"shell {shell!r}")
        fd, script_path = tempfile.mkstemp(suffix=".sh", dir=self.temp)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        output_file = Path(tempfile.mkstemp(prefix="output-", dir=self.temp)[1])
        path_file = Path(tempfile.mkstemp(prefix="path-", dir=self.temp)[1])
        env_file = Path(tempfile.mkstemp(prefix="env-", dir=self.temp)[1])
        full = dict(self.base_env)
        full.update(self.job_env_file)
        full.update(env)
        full.update(
            GITHUB_ACTIONS="true",
            CI="true",
            GITHUB_OUTPUT=str(output_file),
            GITHUB_PATH=str(path_file),
            GITHUB_ENV=str(env_file),
            GITHUB_STEP_SUMMARY=str(self.summary),
            GITHUB_WORKSPACE=str(self.workspace),
            RUNNER_TEMP=str(self.temp),
        )
        for key in ("sha", "repository", "server_url", "run_id", "ref", "event_name"):
            if key in self.github:
                full[f"GITHUB_{key.upper()}"] = str(self.github[key])
        if action_path is not None:
            full["GITHUB_ACTION_PATH"] = str(action_path)
        if self.path_additions:
            full["PATH"] = os.pathsep.join([*reversed(self.path_additions), full["PATH"]])
        cwd = self.workspace / (working_directory or "")
        proc = subprocess.run(
            [*argv, script_path],
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        outputs = parse_file_command(output_file.read_text())
        self.path_additions += [p for p in path_file.read_text().splitlines() if p.strip()]
        self.job_env_file.update(parse_file_command(env_file.read_text()))
        return proc.returncode, proc.stdout, proc.stderr, outputs


def parse_file_command(text: str) -> dict[str, str]:
    """`key=value` lines and `key<<DELIMITER` blocks, as in $GITHUB_OUTPUT and $GITHUB_ENV."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            value: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            i += 1
            out[key] = "\n".join(value)
        else:
            key, sep, value_text = line.partition("=")
            if not sep:
                raise ValueError(f"bad file command line {line!r}")
            out[key] = value_text
    return out


UsesStub = Callable[[dict[str, Any], dict[str, str]], dict[str, str]]


@dataclass
class ActionRun:
    steps: list[StepRun]
    outputs: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(s.outcome != "failure" for s in self.steps)

    def step(self, step_id: str) -> StepRun:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(f"[{s.id}] {s.outcome}\n{s.stdout}{s.stderr}" for s in self.steps)


def action_inputs(action: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    declared = action.get("inputs") or {}
    unknown = set(given) - set(declared)
    if unknown:
        raise ValueError(f"inputs the action does not declare: {sorted(unknown)}")
    values = {}
    for name, spec in declared.items():
        if name in given:
            values[name] = to_string(given[name])
        elif spec.get("required") and "default" not in spec:
            raise ValueError(f"required input {name} is missing")
        else:
            values[name] = to_string(spec.get("default", ""))
    return values


def run_composite(
    runner: Runner,
    given: Mapping[str, str],
    *,
    action_file: Path = ACTION_FILE,
    preset: Mapping[str, dict[str, str]] | None = None,
    uses: Mapping[str, UsesStub] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ActionRun:
    """Run a composite action. `preset`: step id -> outputs, for steps not to run (they
    count as succeeded with those outputs); `uses`: stubs for steps that use other actions."""
    action = load_yaml(action_file)
    runs = action["runs"]
    if runs.get("using") != "composite":
        raise Unsupported("only composite actions")
    inputs = action_inputs(action, given)
    steps_ctx: dict[str, Any] = {}
    status = Status()
    done: list[StepRun] = []
    for index, step in enumerate(runs["steps"]):
        step_id = step.get("id") or f"__{index}"
        ctx = {
            "inputs": inputs,
            "steps": steps_ctx,
            "github": {**runner.github, "action_path": str(action_file.parent)},
            "runner": {"temp": str(runner.temp), "os": "Linux"},
            "env": {**runner.base_env, **(extra_env or {})},
        }
        name = interpolate(step.get("name", step_id), ctx)
        if not condition(step.get("if"), ctx, status):
            done.append(StepRun(step_id, name, "skipped"))
            steps_ctx[step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
            continue
        if preset is not None and step_id in preset:
            run = StepRun(step_id, name, "success", dict(preset[step_id]))
        elif "uses" in step:
            target = str(step["uses"]).split("@", 1)[0]
            if uses is None or target not in uses:
                raise Unsupported(f"step {step_id} uses {step['uses']}: give a stub")
            with_ = {k: interpolate(v, ctx) for k, v in (step.get("with") or {}).items()}
            run = StepRun(step_id, name, "success", uses[target](step, with_))
        else:
            env = {k: interpolate(v, ctx) for k, v in (step.get("env") or {}).items()}
            env = {**(extra_env or {}), **env}
            code, out, err, outputs = runner.run_script(
                step["run"], step.get("shell"), env, action_path=action_file.parent
            )
            run = StepRun(
                step_id, name, "success" if code == 0 else "failure", outputs, out, err, code, env
            )
        done.append(run)
        steps_ctx[step_id] = {"outputs": run.outputs, "outcome": run.outcome}
        if run.outcome == "failure":
            status.failed = True
    ctx = {"inputs": inputs, "steps": steps_ctx, "github": runner.github}
    outputs = {
        name: interpolate(spec.get("value", ""), ctx)
        for name, spec in (action.get("outputs") or {}).items()
    }
    return ActionRun(done, outputs)


@dataclass
class JobRun:
    name: str
    skipped: bool
    steps: list[StepRun]
    actions: dict[str, ActionRun]  # by step id
    outputs: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.skipped or all(s.outcome != "failure" for s in self.steps)

    def step(self, step_id: str) -> StepRun:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def log(self) -> str:
        parts = []
        for s in self.steps:
            parts.append(f"[{s.id}] {s.outcome}\n{s.stdout}{s.stderr}")
            if s.id in self.actions:
                parts.append(self.actions[s.id].log)
        return "\n".join(parts)


@dataclass
class Context:
    """What a workflow run sees: the github context (event included), vars, secrets."""

    github: dict[str, Any]
    vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)


def run_job(
    workflow_file: Path,
    job_name: str,
    run_ctx: Context,
    runner: Runner,
    *,
    needs: Mapping[str, JobRun] | None = None,
    uses: Mapping[str, UsesStub] | None = None,
    action_preset: Mapping[str, dict[str, str]] | None = None,
) -> JobRun:
    """Run one job of a workflow. Steps that use this repo's action run it (action.yml,
    with `action_preset` for its steps); other `uses:` go to the stubs."""
    workflow = load_yaml(workflow_file)
    job = workflow["jobs"][job_name]
    runner.github = {**run_ctx.github, **runner.github}
    needs_ctx = {
        name: {"outputs": run.outputs, "result": "skipped" if run.skipped else "success"}
        for name, run in (needs or {}).items()
    }
    base: dict[str, Any] = {
        "github": run_ctx.github,
        "vars": run_ctx.vars,
        "secrets": {"GITHUB_TOKEN": "ghs_fake", **run_ctx.secrets},
        "inputs": run_ctx.inputs,
        "needs": needs_ctx,
        "runner": {"temp": str(runner.temp), "os": "Linux"},
    }
    status = Status()
    if not condition(job.get("if"), {**base, "env": {}}, status):
        return JobRun(job_name, True, [], {}, {})
    env_ctx: dict[str, str] = {}
    for key, value in (workflow.get("env") or {}).items():
        env_ctx[key] = interpolate(value, {**base, "env": env_ctx})
    for key, value in (job.get("env") or {}).items():
        env_ctx[key] = interpolate(value, {**base, "env": env_ctx})
    steps_ctx: dict[str, Any] = {}
    done: list[StepRun] = []
    actions: dict[str, ActionRun] = {}
    for index, step in enumerate(job["steps"]):
        step_id = step.get("id") or f"__{index}"
        ctx = {**base, "env": {**env_ctx, **runner.job_env_file}, "steps": steps_ctx}
        name = interpolate(step.get("name", step.get("uses", step_id)), ctx)
        if not condition(step.get("if"), ctx, status):
            done.append(StepRun(step_id, name, "skipped"))
            steps_ctx[step_id] = {"outputs": {}, "outcome": "skipped"}
            continue
        step_env = {k: interpolate(v, ctx) for k, v in (step.get("env") or {}).items()}
        env = {**env_ctx, **step_env}
        if "uses" in step:
            target = str(step["uses"]).split("@", 1)[0]
            with_ = {k: interpolate(v, ctx) for k, v in (step.get("with") or {}).items()}
            if target == ACTION_NAME:
                action_run = run_composite(
                    runner, with_, preset=action_preset, extra_env=env, uses=uses
                )
                actions[step_id] = action_run
                run = StepRun(
                    step_id,
                    name,
                    "success" if action_run.ok else "failure",
                    action_run.outputs,
                )
            elif uses is not None and target in uses:
                run = StepRun(step_id, name, "success", uses[target](step, with_))
            else:
                raise Unsupported(f"step {step_id} uses {step['uses']}: give a stub")
        else:
            code, out, err, outputs = runner.run_script(
                step["run"],
                step.get("shell") or (workflow.get("defaults") or {}).get("run", {}).get("shell"),
                env,
                working_directory=step.get("working-directory"),
            )
            run = StepRun(
                step_id, name, "success" if code == 0 else "failure", outputs, out, err, code, env
            )
        done.append(run)
        steps_ctx[step_id] = {"outputs": run.outputs, "outcome": run.outcome}
        if run.outcome == "failure":
            status.failed = True
    ctx = {**base, "env": env_ctx, "steps": steps_ctx}
    outputs = {k: interpolate(v, ctx) for k, v in (job.get("outputs") or {}).items()}
    return JobRun(job_name, False, done, actions, outputs)
