"""Readers for deploy/: the Dockerfile's instructions and the stack files."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .gha import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
STACK = DEPLOY / "sami-stack.yml"
AGENT_STACK = DEPLOY / "sami-agent-stack.yml"
STACK_ENV = DEPLOY / "stack.env.example"


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case
    args: str


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, f"{path}: the last instruction continues past the end"
    return out


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction]


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """Build stages, with ARG defaults declared before the first FROM substituted."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions(path):
        if ins.keyword == "ARG" and not result:
            name, _, default = ins.args.partition("=")
            args[name] = default
        elif ins.keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", ins.args, re.I)
            assert m, f"FROM {ins.args}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda v: args[v.group(1) or v.group(2)], m[1])
            result.append(Stage(base, m[2] or "", []))
        else:
            assert result, f"line {ins.line}: {ins.keyword} before FROM"
            result[-1].instructions.append(ins)
    return result


def exec_form(args: str) -> list[str]:
    """A JSON exec-form argument list (`["a", "b"]`)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


def load_stack(path: Path = STACK) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def stack_env() -> dict[str, str]:
    """The variables of deploy/stack.env.example."""
    values = {}
    for line in STACK_ENV.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def variables(path: Path) -> set[str]:
    """The ${VARIABLES} a compose file interpolates."""
    return set(re.findall(r"\$\{(\w+)(?:[:?-][^}]*)?\}", path.read_text()))
