"""Filling a stack file's variables so that `docker stack deploy` reads what it would have
read had it filled them itself, from the deployment's values instead of its environment.

The file is rewritten through its YAML *node* tree (`yaml.compose` / `yaml.serialize`):
every scalar that holds no variable is written back with its original text, so the docker
CLI's Go YAML parser resolves it exactly as it would have in the original file (PyYAML and
Go disagree on some plain scalars, e.g. `22:22`, a base-60 number to PyYAML). A scalar that
refers to a variable is filled (sami_manifests.interpolation, every literal `$` written
`$$` so that the CLI's own round of interpolation turns it back into `$` and finds no
variable left) and written

- plain, at the paths where the CLI casts an interpolated value (`deploy.replicas`,
  `ports[].published`, `read_only`, … docker/cli's `interpolateTypeCastMapping`), after
  the same cast (a value that does not cast is refused here, as the CLI would refuse it);
- double-quoted everywhere else: the CLI keeps an interpolated value as a string.

Mapping keys are never filled (compose does not interpolate them), and a value can never add
YAML structure: it replaces one scalar's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from sami_manifests.interpolation import InterpolationError, Problem, interpolate

__all__ = ["CastError", "fill_stack_file"]

_ANY = "*"  # any mapping key
_ITEM = "[]"  # any list item
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_STR = "tag:yaml.org,2002:str"


class CastError(ValueError):
    """An interpolated value does not cast to what its path needs (as the CLI says)."""


def _to_int(value: str) -> str:
    try:
        return str(int(value, 10))
    except ValueError:
        raise CastError(f"{value!r} is not a whole number") from None


def _to_float(value: str) -> str:
    try:
        return repr(float(value))
    except ValueError:
        raise CastError(f"{value!r} is not a number") from None


def _to_bool(value: str) -> str:
    # docker/cli's toBoolean.
    lowered = value.lower()
    if lowered in ("y", "yes", "true", "on"):
        return "true"
    if lowered in ("n", "no", "false", "off"):
        return "false"
    raise CastError(f"{value!r} is not a boolean (true/false, yes/no, on/off)")


_Cast = tuple[Callable[[str], str], str]
_INT_CAST: _Cast = (_to_int, _INT)
_FLOAT_CAST: _Cast = (_to_float, _FLOAT)
_BOOL_CAST: _Cast = (_to_bool, _BOOL)


def _service(*parts: str) -> tuple[str, ...]:
    return ("services", _ANY, *parts)


# docker/cli cli/compose/loader/interpolate.go, interpolateTypeCastMapping (20.10 to 28).
CASTS: dict[tuple[str, ...], _Cast] = {
    _service("configs", _ITEM, "mode"): _INT_CAST,
    _service("secrets", _ITEM, "mode"): _INT_CAST,
    _service("healthcheck", "retries"): _INT_CAST,
    _service("healthcheck", "disable"): _BOOL_CAST,
    _service("deploy", "replicas"): _INT_CAST,
    _service("deploy", "update_config", "parallelism"): _INT_CAST,
    _service("deploy", "update_config", "max_failure_ratio"): _FLOAT_CAST,
    _service("deploy", "rollback_config", "parallelism"): _INT_CAST,
    _service("deploy", "rollback_config", "max_failure_ratio"): _FLOAT_CAST,
    _service("deploy", "restart_policy", "max_attempts"): _INT_CAST,
    _service("deploy", "placement", "max_replicas_per_node"): _INT_CAST,
    _service("ports", _ITEM, "target"): _INT_CAST,
    _service("ports", _ITEM, "published"): _INT_CAST,
    _service("ulimits", _ANY): _INT_CAST,
    _service("ulimits", _ANY, "hard"): _INT_CAST,
    _service("ulimits", _ANY, "soft"): _INT_CAST,
    _service("privileged"): _BOOL_CAST,
    _service("read_only"): _BOOL_CAST,
    _service("stdin_open"): _BOOL_CAST,
    _service("tty"): _BOOL_CAST,
    _service("volumes", _ITEM, "read_only"): _BOOL_CAST,
    _service("volumes", _ITEM, "volume", "nocopy"): _BOOL_CAST,
    ("networks", _ANY, "external"): _BOOL_CAST,
    ("networks", _ANY, "internal"): _BOOL_CAST,
    ("networks", _ANY, "attachable"): _BOOL_CAST,
    ("volumes", _ANY, "external"): _BOOL_CAST,
    ("secrets", _ANY, "external"): _BOOL_CAST,
    ("configs", _ANY, "external"): _BOOL_CAST,
}


def _cast_for(path: tuple[str, ...]) -> _Cast | None:
    for pattern, cast in CASTS.items():
        if len(pattern) == len(path) and all(
            p == q or (p == _ANY and q != _ITEM) or (p == _ITEM and q == _ITEM)
            for p, q in zip(pattern, path, strict=True)
        ):
            return cast
    return None


def fill_stack_file(source: str, data: bytes, variables: Mapping[str, str]) -> bytes:
    """The stack file `data` with its variables filled for docker (see the module's
    docstring). Raises sami_manifests.interpolation.InterpolationError (every undefined
    variable of the file at once) or CastError."""
    node = yaml.compose(data, Loader=yaml.SafeLoader)
    if node is None:
        return data
    undefined: list[Problem] = []
    problems: list[str] = []
    _fill(node, (), variables, source, (undefined, problems), set())
    if undefined:
        raise InterpolationError(source, undefined)
    if problems:
        raise CastError(f"{source}: {'; '.join(problems)}")
    text = yaml.serialize(node, Dumper=yaml.SafeDumper, allow_unicode=True)
    return str(text).encode()


def _fill(
    node: yaml.Node,
    path: tuple[str, ...],
    variables: Mapping[str, str],
    source: str,
    problems: tuple[list[Problem], list[str]],
    seen: set[int],
) -> None:
    """Fill every string scalar under `node`; what cannot be filled goes to `problems`
    (undefined variables, values that do not cast)."""
    if id(node) in seen:  # an alias of a node already filled
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            _fill(value, (*path, str(name)), variables, source, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _fill(item, (*path, _ITEM), variables, source, problems, seen)
    elif isinstance(node, yaml.ScalarNode) and node.tag == _STR and "$" in node.value:
        _fill_scalar(node, path, variables, source, problems)


def _fill_scalar(
    node: yaml.ScalarNode,
    path: tuple[str, ...],
    variables: Mapping[str, str],
    source: str,
    problems: tuple[list[Problem], list[str]],
) -> None:
    undefined, cast_problems = problems
    try:
        escaped = interpolate(node.value, variables, source=source, escape_dollars=True)
    except InterpolationError as exc:
        undefined.extend(exc.problems)
        return
    cast = _cast_for(path)
    if cast is None or escaped == node.value:
        # The CLI casts only what its own interpolation changed.
        node.value, node.style = escaped, '"'
        return
    converter, tag = cast
    plain = escaped.replace("$$", "$")
    try:
        node.value = converter(plain)
    except CastError as exc:
        cast_problems.append(f"{'.'.join(path)}: {exc}")
        return
    node.tag, node.style = tag, None


def filled_document(data: bytes) -> Any:
    """What the docker CLI reads back from a filled file, as Python values (`$$` is `$`)."""
    return _unescape(yaml.safe_load(data))


def _unescape(node: Any) -> Any:
    if isinstance(node, str):
        return node.replace("$$", "$")
    if isinstance(node, dict):
        return {k: _unescape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unescape(v) for v in node]
    return node
