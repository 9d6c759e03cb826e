"""`sami-control` and `sami-agent` installed without their extra: one line that says which
extra to install, exit 2."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import pytest

from sami_common import entry


def _missing(name: str):  # type: ignore[no-untyped-def]
    def import_module(module: str) -> ModuleType:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    return import_module


def test_a_missing_extra_names_it(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(importlib, "import_module", _missing("docker"))
    with pytest.raises(SystemExit) as caught:
        entry.agent()
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "sami-agent: the Python package 'docker' is missing: sami-agent needs the 'agent' "
        "extra: pip install 'sami[agent]'\n"
    )


def test_a_module_only_serve_imports_is_named_before_any_command(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    # `sami-control token create` does not import the dashboard's aiohttp, but an install
    # without it is told at once, not when `serve` is first run.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a)
    )
    with pytest.raises(SystemExit) as caught:
        entry.control()
    assert caught.value.code == 2
    assert "'aiohttp' is missing" in capsys.readouterr().err


def test_another_missing_module_is_not_hidden(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(importlib, "import_module", _missing("sami_control.oops"))
    with pytest.raises(ModuleNotFoundError):
        entry.control()


def test_with_the_extra_it_runs_the_program(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.argv", ["sami-control", "--version"])
    with pytest.raises(SystemExit) as caught:
        entry.control()
    assert caught.value.code == 0
