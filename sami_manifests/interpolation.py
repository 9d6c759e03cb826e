"""Compose's variable interpolation, on text, from a given mapping only (no environment).

The syntax is compose's (the compose specification, "Interpolation"):

    $NAME  ${NAME}        the value; NAME undefined is an error here (compose: empty + warning)
    ${NAME:-default}      default when NAME is undefined or empty
    ${NAME-default}       default when NAME is undefined
    ${NAME:?message}      error (with message) when NAME is undefined or empty
    ${NAME?message}       error (with message) when NAME is undefined
    ${NAME:+alt}          alt when NAME is set and not empty, else empty
    ${NAME+alt}           alt when NAME is set, else empty
    $$                    a literal `$`

A default, message or alternative may itself hold `$NAME`, `${...}` and `$$`. Names are
`[A-Za-z_][A-Za-z0-9_]*`. Unlike compose, an undefined variable without a default is an
error: Sami fills stack files from the values recorded with a deployment (`sami var set`),
and an empty value where one was forgotten would deploy something nobody asked for.

Pure: no I/O, no environment. The agent uses it on stack files before `docker stack deploy`
(with `escape_dollars`, so that docker's own interpolation finds nothing left to fill); the
control plane can use it to say what a stack needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "InterpolationError",
    "Problem",
    "interpolate",
    "required_in_tree",
    "required_variables",
    "tree_has_references",
    "variables_of",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The operators of a braced reference, longest first.
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a text: an undefined variable (`message` empty, or the text of
    `${NAME?message}`), or a malformed reference (`name` empty)."""

    name: str
    message: str = ""

    def describe(self) -> str:
        if not self.name:
            return self.message
        if self.message:
            return f"{self.name} ({self.message})"
        return self.name


@dataclass
class InterpolationError(ValueError):
    """What cannot be filled in `source` (a file name, for the message)."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def undefined(self) -> list[str]:
        """The undefined variables' names, each once, in order of first use."""
        return list(dict.fromkeys(p.name for p in self.problems if p.name))

    def __str__(self) -> str:
        undefined = [p for p in self.problems if p.name]
        malformed = [p for p in self.problems if not p.name]
        parts: list[str] = []
        if undefined:
            seen: dict[str, Problem] = {}
            for p in undefined:
                if p.name not in seen or (p.message and not seen[p.name].message):
                    seen[p.name] = p
            names = ", ".join(p.describe() for p in seen.values())
            parts.append(f"undefined variable{'s' if len(seen) > 1 else ''}: {names}")
        parts.extend(p.message for p in malformed)
        where = f"{self.source}: " if self.source else ""
        return where + "; ".join(parts)


@dataclass(frozen=True)
class _Reference:
    name: str
    operator: str = ""  # "" for $NAME / ${NAME}
    argument: str = ""  # the raw default / message / alternative
    end: int = 0  # index just after the reference


def _parse_reference(text: str, start: int) -> _Reference | str:
    """The reference starting at `text[start] == "$"` (not `$$`), or an error message."""
    if start + 1 < len(text) and text[start + 1] == "{":
        m = _NAME.match(text, start + 2)
        if m is None:
            return f"invalid reference at {_snippet(text, start)}: a variable name must follow ${{"
        i = m.end()
        if i < len(text) and text[i] == "}":
            return _Reference(m.group(), end=i + 1)
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is None:
            return f"invalid reference at {_snippet(text, start)}"
        close = _closing_brace(text, i + len(operator))
        if close < 0:
            return f"unclosed reference at {_snippet(text, start)}"
        return _Reference(m.group(), operator, text[i + len(operator) : close], close + 1)
    m = _NAME.match(text, start + 1)
    if m is None:
        return f"a lone $ at {_snippet(text, start)}: write $$ for a literal $"
    return _Reference(m.group(), end=m.end())


def _closing_brace(text: str, i: int) -> int:
    """The index of the `}` that closes a reference whose argument starts at `i` (nested
    `${...}` and `$$` in the argument are skipped), or -1."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "$" and text.startswith("$$", i):
            i += 2
            continue
        if c == "$" and text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _snippet(text: str, start: int) -> str:
    piece = text[start : start + 24].splitlines()[0] if text[start:] else ""
    return repr(piece + ("…" if len(text) - start > 24 else ""))


def _fill(text: str, values: Mapping[str, str], escape: bool, problems: list[Problem]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        if text.startswith("$$", dollar):
            out.append("$$" if escape else "$")
            i = dollar + 2
            continue
        ref = _parse_reference(text, dollar)
        if isinstance(ref, str):
            problems.append(Problem("", ref))
            out.append(text[dollar])
            i = dollar + 1
            continue
        out.append(_resolve(ref, values, escape, problems))
        i = ref.end
    return "".join(out)


def _resolve(
    ref: _Reference, values: Mapping[str, str], escape: bool, problems: list[Problem]
) -> str:
    value = values.get(ref.name)
    defined = value is not None
    nonempty = bool(value)
    op = ref.operator

    def literal(v: str) -> str:
        return v.replace("$", "$$") if escape else v

    if op == "":
        if not defined:
            problems.append(Problem(ref.name))
            return ""
        return literal(value or "")
    if op in (":-", "-"):
        use_value = nonempty if op == ":-" else defined
        return literal(value or "") if use_value else _fill(ref.argument, values, escape, problems)
    if op in (":?", "?"):
        ok = nonempty if op == ":?" else defined
        if not ok:
            message = _fill(ref.argument, values, False, [])
            problems.append(Problem(ref.name, message or ("empty" if defined else "")))
            return ""
        return literal(value or "")
    # ":+" / "+"
    use_alt = nonempty if op == ":+" else defined
    return _fill(ref.argument, values, escape, problems) if use_alt else ""


def interpolate(
    text: str, values: Mapping[str, str], *, source: str = "", escape_dollars: bool = False
) -> str:
    """`text` with every reference filled from `values` (never from the environment).

    Raises InterpolationError naming every undefined variable (and every malformed
    reference) of the text at once, with `source` in its message. With `escape_dollars`
    the result is meant for another round of compose interpolation (docker's): `$$` stays
    `$$` and a `$` in a value becomes `$$`, so that round finds nothing to fill.
    """
    problems: list[Problem] = []
    out = _fill(text, values, escape_dollars, problems)
    if problems:
        raise InterpolationError(source, problems)
    return out


def tree_has_references(node: Any) -> bool:
    """Whether any string value of a parsed document refers to a variable (`$$` does not)."""
    if isinstance(node, str):
        return bool(variables_of(node)) or _malformed(node)
    if isinstance(node, dict):
        return any(tree_has_references(v) for v in node.values())
    if isinstance(node, list):
        return any(tree_has_references(v) for v in node)
    return False


def required_in_tree(node: Any) -> list[str]:
    """The variables a parsed document's string values need a value for (keys are left
    alone, as compose does; comments are not values), each once, in order."""
    names: list[str] = []

    def walk(n: Any) -> None:
        if isinstance(n, str):
            names.extend(required_variables(n))
        elif isinstance(n, dict):
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node)
    return list(dict.fromkeys(names))


def _malformed(text: str) -> bool:
    problems: list[Problem] = []
    _fill(text, {}, False, problems)
    return any(not p.name for p in problems)


def variables_of(text: str) -> list[str]:
    """Every variable name the text refers to (with or without a default), each once."""
    names: list[str] = []
    _collect(text, names, required_only=False)
    return list(dict.fromkeys(names))


def required_variables(text: str) -> list[str]:
    """The variables the text needs a value for: those referred to without a default or
    alternative (`$NAME`, `${NAME}`, `${NAME?msg}`, `${NAME:?msg}`), each once, in order.
    A variable used only inside a default or an alternative is not listed: whether it is
    needed depends on the outer one (`variables_of` lists every name)."""
    names: list[str] = []
    _collect(text, names, required_only=True)
    return list(dict.fromkeys(names))


def _collect(text: str, names: list[str], *, required_only: bool) -> None:
    i = 0
    while True:
        dollar = text.find("$", i)
        if dollar < 0:
            return
        if text.startswith("$$", dollar):
            i = dollar + 2
            continue
        ref = _parse_reference(text, dollar)
        if isinstance(ref, str):
            i = dollar + 1
            continue
        if not required_only or ref.operator in ("", "?", ":?"):
            names.append(ref.name)
        if not required_only and ref.argument:
            _collect(ref.argument, names, required_only=False)
        i = ref.end
