"""The GitHub Actions expression language (`${{ }}`), just enough of it to lint and run this
repo's action and example workflows (tests/ecosystem/gha.py runs them): parsing, the context
paths an expression reads, evaluation with GitHub's loose equality and truthiness, `if:`
conditions and string interpolation.

It follows https://docs.github.com/actions/reference/workflows-and-actions/expressions.
What it does not implement raises ExpressionError, so an example that needs more fails the
tests instead of being half-checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


class ExpressionError(ValueError):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))
    | (?P<str>'(?:[^']|'')*')
    | (?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.X,
)

# Nodes: ("lit", v) ("ctx", name) ("prop", node, key-node) ("call", name, [args])
# ("not", node) ("bin", op, a, b)
Node = tuple[Any, ...]
FUNCTIONS = {
    "contains",
    "startsWith",
    "endsWith",
    "format",
    "join",
    "toJSON",
    "success",
    "always",
    "failure",
    "cancelled",
}
CONTEXTS = {
    "github",
    "env",
    "vars",
    "job",
    "jobs",
    "steps",
    "runner",
    "secrets",
    "strategy",
    "matrix",
    "needs",
    "inputs",
}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"cannot read {text[pos:]!r} in {text!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            node = ("bin", "||", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            node = ("bin", "&&", node, self.cmp())
        return node

    def cmp(self) -> Node:
        node = self.unary()
        while (
            (tok := self.peek()) and tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">=")
        ):
            self.take()
            node = ("bin", tok[1], node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek() == ("op", "!"):
            self.take()
            return ("not", self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            number = float(int(value, 16)) if "x" in value.lower() else float(value)
            return ("lit", number)
        if kind == "str":
            return ("lit", value[1:-1].replace("''", "'"))
        if kind == "op" and value == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind == "name":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "null":
                return ("lit", None)
            if self.peek() == ("op", "("):
                if value not in FUNCTIONS:
                    raise ExpressionError(f"unsupported function {value}() in {self.text!r}")
                self.take("(")
                args: list[Node] = []
                while self.peek() != ("op", ")"):
                    args.append(self.or_())
                    if self.peek() == ("op", ","):
                        self.take()
                self.take(")")
                return ("call", value, args)
            if value not in CONTEXTS:
                raise ExpressionError(f"unknown context {value!r} in {self.text!r}")
            return ("ctx", value)
        raise ExpressionError(f"unexpected {value!r} in {self.text!r}")

    def postfix(self, node: Node) -> Node:
        while (tok := self.peek()) and tok[1] in (".", "["):
            self.take()
            if tok[1] == ".":
                kind, name = self.take()
                if kind != "name" and name != "*":
                    raise ExpressionError(f"expected a property name in {self.text!r}")
                node = ("prop", node, ("lit", name))
            else:
                key = self.or_()
                self.take("]")
                node = ("prop", node, key)
        return node


def parse(expression: str) -> Node:
    return _Parser(expression).parse()


def references(node: Node) -> list[list[str]]:
    """Context paths an expression reads, e.g. [["steps", "build", "outputs", "digest"]]
    (a computed key ends the path)."""
    found: list[list[str]] = []

    def path(n: Node) -> list[str] | None:
        if n[0] == "ctx":
            return [n[1]]
        if n[0] == "prop":
            head = path(n[1])
            if head is not None and n[2][0] == "lit":
                return [*head, str(n[2][1])]
            return head
        return None

    def walk(n: Node) -> None:
        if n[0] in ("ctx", "prop"):
            p = path(n)
            if p is not None:
                found.append(p)
            if n[0] == "prop" and n[2][0] != "lit":
                walk(n[2])
            return
        if n[0] == "call":
            for a in n[2]:
                walk(a)
        elif n[0] == "not":
            walk(n[1])
        elif n[0] == "bin":
            walk(n[2])
            walk(n[3])

    walk(node)
    return found


def embedded(text: str) -> list[str]:
    """The expressions inside `${{ }}` of a string."""
    return [m.group(1).strip() for m in _EXPR.finditer(text)]


def _number(v: Any) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        text = v.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if type(a) is type(b) and not isinstance(a, int | float | bool):
        return bool(a is b or a == b)
    return _number(a) == _number(b)


def truthy(v: Any) -> bool:
    if v is None or v is False or v == "":
        return False
    if isinstance(v, int | float) and not isinstance(v, bool):
        return not (v == 0 or math.isnan(v))
    return True


def to_string(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, dict | list):
        import json

        return json.dumps(v, indent=2)
    return str(v)


@dataclass
class Status:
    """What the status functions see: whether an earlier step (or needed job) failed."""

    failed: bool = False


def evaluate(node: Node, ctx: Mapping[str, Any], status: Status | None = None) -> Any:
    status = status or Status()

    def ev(n: Node) -> Any:
        kind = n[0]
        if kind == "lit":
            return n[1]
        if kind == "ctx":
            return ctx.get(n[1])
        if kind == "prop":
            base, key = ev(n[1]), ev(n[2])
            if isinstance(base, dict):
                if isinstance(key, str):
                    for k, v in base.items():
                        if str(k).casefold() == key.casefold():
                            return v
                return None
            if isinstance(base, list) and isinstance(key, int | float):
                i = int(key)
                return base[i] if 0 <= i < len(base) else None
            return None
        if kind == "not":
            return not truthy(ev(n[1]))
        if kind == "bin":
            op = n[1]
            if op == "&&":
                left = ev(n[2])
                return ev(n[3]) if truthy(left) else left
            if op == "||":
                left = ev(n[2])
                return left if truthy(left) else ev(n[3])
            a, b = ev(n[2]), ev(n[3])
            if op == "==":
                return _equal(a, b)
            if op == "!=":
                return not _equal(a, b)
            x, y = _number(a), _number(b)
            return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
        if kind == "call":
            name, args = n[1], [ev(a) for a in n[2]]
            if name == "success":
                return not status.failed
            if name == "failure":
                return status.failed
            if name == "always":
                return True
            if name == "cancelled":
                return False
            if name == "contains":
                hay, needle = args
                if isinstance(hay, list):
                    return any(_equal(h, needle) for h in hay)
                return to_string(needle).casefold() in to_string(hay).casefold()
            if name == "startsWith":
                return to_string(args[0]).casefold().startswith(to_string(args[1]).casefold())
            if name == "endsWith":
                return to_string(args[0]).casefold().endswith(to_string(args[1]).casefold())
            if name == "format":
                out = to_string(args[0])
                for i, a in enumerate(args[1:]):
                    out = out.replace("{" + str(i) + "}", to_string(a))
                return out.replace("{{", "{").replace("}}", "}")
            if name == "join":
                sep = to_string(args[1]) if len(args) > 1 else ","
                return sep.join(to_string(a) for a in args[0]) if isinstance(args[0], list) else ""
            if name == "toJSON":
                return to_string(args[0])
        raise ExpressionError(f"cannot evaluate {n!r}")

    return ev(node)


def interpolate(value: Any, ctx: Mapping[str, Any], status: Status | None = None) -> str:
    """A workflow value with its `${{ }}` expressions replaced by their string values."""
    text = to_string(value)
    return _EXPR.sub(lambda m: to_string(evaluate(parse(m.group(1)), ctx, status)), text)


def condition(value: Any, ctx: Mapping[str, Any], status: Status) -> bool:
    """An `if:`; without a status function in it, `success() && (...)` is implied."""
    if value is None:
        return not status.failed
    if isinstance(value, bool):
        return value and not status.failed
    text = str(value).strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.S)
    if m:
        text = m.group(1)
    node = parse(text)
    calls = {c for c in re.findall(r"(\w+)\s*\(", text)} & {
        "success",
        "always",
        "failure",
        "cancelled",
    }
    result = truthy(evaluate(node, ctx, status))
    return result if calls else result and not status.failed
