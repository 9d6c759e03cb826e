"""action.yml's steps, run by bash as the runner runs them, with a recording `sami`: the
command lines each mode builds, the connection settings it passes, its errors, and the
install step (a virtualenv, pip, PATH)."""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from . import gha, recorder

DIGEST = "sha256:" + "ab" * 32
CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----"


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.record = tmp_path / "calls.jsonl"
        self.fake = recorder.install(tmp_path / "fake-bin")
        self.runner = gha.Runner(
            tmp_path / "runner",
            {
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path / "home"),
                "SAMI_RECORD": str(self.record),
            },
            {
                "repository": "acme/web",
                "server_url": "https://github.com",
                "run_id": "99",
                "sha": "f" * 40,
            },
        )

    def run(self, job_env: dict[str, str] | None = None, **inputs: str) -> gha.ActionRun:
        self.record.unlink(missing_ok=True)
        return gha.run_composite(
            self.runner,
            {k.replace("_", "-"): v for k, v in inputs.items()},
            preset={"python": {"python": sys.executable}, "install": {"bin": str(self.fake)}},
            extra_env=job_env,
        )

    def calls(self) -> list[dict[str, object]]:
        return recorder.records(self.record)

    def argv(self) -> list[str]:
        (call,) = self.calls()
        argv = call["argv"]
        assert isinstance(argv, list)
        return argv


@pytest.fixture
def action(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_register_from_image_and_digest(action: Harness) -> None:
    run = action.run(
        command="register",
        name="web",
        image="127.0.0.1:5000/acme/web:1.2",  # a registry port stays, the tag goes
        digest=DIGEST,
        tags="v1.2, latest\nsha-abc",
        labels="team=core\n  note=two words  \n\n",
        kind="image",
    )
    assert run.ok, run.log
    assert action.argv() == [
        "artifact", "register", "web", "--ref", f"127.0.0.1:5000/acme/web@{DIGEST}",
        "--kind", "image", "--tag", "v1.2", "--tag", "latest", "--tag", "sha-abc",
        "--label", "team=core", "--label", "note=two words",
    ]  # fmt: skip
    assert run.outputs["artifact_id"] == "a-recorded"
    assert run.outputs["digest"] == "sha256:" + "0" * 64
    assert run.outputs["exit_code"] == "0"
    assert run.outputs["deployment_id"] == ""


def test_register_from_ref(action: Harness) -> None:
    run = action.run(command="register", name="web", ref=f"ghcr.io/acme/web@{DIGEST}")
    assert run.ok, run.log
    assert action.argv() == ["artifact", "register", "web", "--ref", f"ghcr.io/acme/web@{DIGEST}"]


def test_deploy_waits_by_default_with_the_run_as_reason(action: Harness) -> None:
    run = action.run(
        command="deploy", service="web", environment="stage", artifact="a1", timeout="600"
    )
    assert run.ok, run.log
    assert action.argv() == [
        "deploy", "web", "--env", "stage", "--artifact", "a1",
        "--reason", "GitHub Actions: https://github.com/acme/web/actions/runs/99",
        "--wait", "--timeout", "600",
    ]  # fmt: skip
    assert run.outputs["deployment_id"] == "d-recorded"


def test_deploy_every_option(action: Harness) -> None:
    run = action.run(
        command="deploy",
        service="web",
        environment="pull_request",
        image="ghcr.io/acme/web:pr-4",
        digest=DIGEST,
        pr="4",
        type="swarm",
        request_id="run-99-1",
        reason="preview",
        wait="false",
        timeout="5",  # only with wait
    )
    assert run.ok, run.log
    assert action.argv() == [
        "deploy", "web", "--env", "pull_request", "--artifact", f"ghcr.io/acme/web@{DIGEST}",
        "--reason", "preview", "--pr", "4", "--type", "swarm", "--request-id", "run-99-1",
    ]  # fmt: skip


def test_run_splits_like_a_shell_without_evaluating(action: Harness) -> None:
    run = action.run(command="run", args="sami rollback web --env stage --reason 'bad $HOME'")
    assert run.ok, run.log
    assert action.argv() == ["rollback", "web", "--env", "stage", "--reason", "bad $HOME"]
    assert action.run(command="run", args="teardown web --pr 4\n  --wait").ok
    assert action.argv() == ["teardown", "web", "--pr", "4", "--wait"]


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"command": "register", "ref": f"r@{DIGEST}"}, "register needs name"),
        ({"command": "register", "name": "web", "image": "r"}, "register needs ref"),
        ({"command": "deploy", "environment": "stage", "artifact": "a"}, "deploy needs service"),
        ({"command": "deploy", "service": "w", "artifact": "a"}, "deploy needs environment"),
        ({"command": "deploy", "service": "w", "environment": "stage"}, "deploy needs artifact"),
        (
            {
                "command": "deploy",
                "service": "w",
                "environment": "stage",
                "artifact": "a",
                "wait": "yes",
            },
            "wait must be true or false",
        ),
        ({"command": "run"}, "run needs args"),
        ({"command": "run", "args": "deploy 'web"}, "args is not a sami command line"),
        ({"command": "promote"}, "unknown command 'promote'"),
    ],
)
def test_bad_inputs_fail_with_an_annotation(
    action: Harness, inputs: dict[str, str], message: str
) -> None:
    run = action.run(**inputs)
    assert not run.ok
    step = run.step("sami")
    assert step.returncode == 2
    assert f"::error title=sami action::{message}" in step.stdout
    assert run.outputs["exit_code"] == "2"
    assert action.calls() == []


def test_sami_exit_status_is_the_steps(action: Harness) -> None:
    run = action.run(
        {"SAMI_RECORD_EXIT": "3"},
        command="deploy",
        service="web",
        environment="stage",
        artifact="a1",
    )
    assert not run.ok
    assert run.step("sami").returncode == 3
    assert run.outputs["exit_code"] == "3"
    assert run.outputs["deployment_id"] == "d-recorded"  # written before the wait


def test_install_only_runs_nothing(action: Harness) -> None:
    run = action.run(command="install")
    assert run.ok, run.log
    assert action.calls() == []
    assert run.outputs["cli"] == str(action.fake)


def test_connection_inputs_win_and_pem_text_goes_to_private_files(action: Harness) -> None:
    run = action.run(
        command="run",
        args="agents",
        addr="sami.example:7443",
        token="tok",
        ca=CA,
        client_cert=CA,
        client_key=KEY,
    )
    assert run.ok, run.log
    (call,) = action.calls()
    assert call["addr"] == "sami.example:7443" and call["token"] is True
    for field, text in (("ca", CA), ("client_cert", CA), ("client_key", KEY)):
        path = Path(str(call[field]))
        assert path.parent == action.runner.temp
        assert path.read_text() == text + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tok" not in run.log


def test_empty_inputs_keep_the_jobs_variables(action: Harness, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA)
    job_env = {"SAMI_ADDR": "from-job:7443", "SAMI_TOKEN": "job-token", "SAMI_CA": str(ca)}
    assert action.run(job_env, command="run", args="agents").ok
    (call,) = action.calls()
    assert (call["addr"], call["token"], call["ca"]) == ("from-job:7443", True, str(ca))
    # A path (not PEM text) is used as it is.
    assert action.run(job_env, command="run", args="agents", ca="certs/ca.pem").ok
    assert action.calls()[0]["ca"] == "certs/ca.pem"


# -- the install step -----------------------------------------------------------------------


def fake_wheel(folder: Path) -> Path:
    """A wheel named `sami` whose `sami` console script prints its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sami-0.0.1-py3-none-any.whl"
    info = "sami-0.0.1.dist-info"
    files = {
        "fake_sami.py": "import sys\ndef main():\n    print('fake sami', *sys.argv[1:])\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: sami\nVersion: 0.0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nsami = fake_sami:main\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]))
    return path


def test_install_makes_a_virtualenv_once_and_puts_sami_on_path(tmp_path: Path) -> None:
    """The real python and install steps: a Python 3.11+ is found on PATH (so
    actions/setup-python is skipped), pip installs `pip-spec` into $RUNNER_TEMP/sami-cli, the
    CLI is on PATH for later steps, and a second use in the job reuses it."""
    wheel = fake_wheel(tmp_path / "dist")
    py_dir = tmp_path / "py"
    py_dir.mkdir()
    (py_dir / "python3").symlink_to(sys.executable)
    runner = gha.Runner(
        tmp_path / "runner",
        {
            "PATH": f"{py_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path / "home"),
            "PIP_NO_INDEX": "1",  # offline: everything comes from the wheel
        },
        {},
    )
    first = gha.run_composite(runner, {"command": "install", "pip-spec": str(wheel)})
    assert first.ok, first.log
    assert first.step("setup-python").outcome == "skipped"
    assert first.step("python").outputs["python"] == str(py_dir / "python3")
    venv = runner.temp / "sami-cli"
    assert first.outputs["cli"] == str(venv / "bin" / "sami")
    assert f"sami 0.0.1: {venv}/bin/sami" in first.step("install").stdout
    assert runner.path_additions == [str(venv / "bin")]
    later, out, err, _ = runner.run_script("sami manifests lint .", None, {})
    assert (later, out) == (0, "fake sami manifests lint .\n"), err

    again = gha.run_composite(runner, {"command": "install", "pip-spec": str(wheel)})
    assert again.ok, again.log
    assert f"already installed from {wheel}" in again.step("install").stdout


def test_install_spec_default_version_and_pip_spec(tmp_path: Path) -> None:
    """Which spec pip gets: the action's own checkout by default, `version` from the
    repository, `pip-spec` over both. (A fake python records what pip was asked.)"""
    log = tmp_path / "pip.log"
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(
        "#!/bin/bash\n"
        'if [ "$1 $2" = "-m venv" ]; then\n'
        '  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"\n'
        '  printf "#!/bin/sh\\n" > "$3/bin/sami" && chmod +x "$3/bin/sami"\n'
        'elif [ "$1 $2" = "-m pip" ]; then echo "$*" >> "$FAKE_PIP_LOG"\n'
        "else echo 0.0.0; fi\n"
    )
    fake_python.chmod(0o755)
    runner = gha.Runner(
        tmp_path / "runner",
        {"PATH": os.environ["PATH"], "FAKE_PIP_LOG": str(log)},
        {},
    )
    preset = {"python": {"python": str(fake_python)}}
    cases = [
        ({}, str(gha.REPO)),
        ({"version": "v0.2.0"}, "git+https://github.com/osscameroon/sami@v0.2.0"),
        (
            {"version": "main", "repository": "https://git.example/me/sami/"},
            "git+https://git.example/me/sami@main",
        ),
        ({"version": "v0.2.0", "pip-spec": "sami==0.2.0"}, "sami==0.2.0"),
    ]
    for inputs, spec in cases:
        run = gha.run_composite(runner, {"command": "install", **inputs}, preset=preset)
        assert run.ok, run.log
        args = log.read_text().splitlines()[-1].split(" ")
        assert args[-1] == spec
        # Its own code is installed with the pinned versions; another spec with its own.
        pinned = ["--constraint", str(gha.REPO / "action-constraints.txt")]
        assert (args[-3:-1] == pinned) == (not inputs), args


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_what_the_cli_needs_and_nothing_else() -> None:
    """action-constraints.txt pins every dependency of the base install at a version its
    specifier allows, and none that only sami[control] or sami[agent] need."""
    from packaging.requirements import Requirement

    project = tomllib.loads((gha.REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (gha.REPO / "action-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_normal(name)] = version.strip()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = _normal(requirement.name)
        assert name in pins, f"{name} is not pinned in action-constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}: {text}"
    base = {_normal(Requirement(t).name) for t in project["dependencies"]}
    extras_only = {
        _normal(Requirement(t).name)
        for extra in ("control", "agent")
        for t in project["optional-dependencies"][extra]
    } - base
    assert extras_only and not extras_only & pins.keys()
