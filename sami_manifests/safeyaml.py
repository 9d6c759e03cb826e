"""Bounded, tag-less YAML loading that remembers where every value came from.

The document is composed into nodes by PyYAML's pure-Python composer (no object
construction, so no tag can run code), with limits checked while composing (nesting depth,
alias count) and before converting (the size of the document once every alias is expanded,
so a "billion laughs" file is refused in microseconds instead of being expanded). Only the
standard YAML 1.1 tags plain files use are accepted. Values come back as plain Python
values, mappings as `YMap` and sequences as `YList`, which carry the line of each entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml import events
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode as _YMappingNode
from yaml.nodes import ScalarNode as _YScalarNode
from yaml.nodes import SequenceNode as _YSequenceNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from .problems import Limits, Problem, error

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_SEQ_TAG = f"{_TAG}seq"
_MAP_TAG = f"{_TAG}map"
_MERGE_TAG = f"{_TAG}merge"


class YMap(dict[Any, Any]):
    """A mapping that knows the line (1-based) of itself, of each key and of each value."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.key_line(key))


class YList(list[Any]):
    """A sequence that knows the line (1-based) of itself and of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []

    def item_line(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


@dataclass
class _LimitExceeded(Exception):
    code: str
    message: str
    hint: str
    line: int


class Node:
    """A composed YAML node: tag resolved, nothing constructed, aliases shared."""

    __slots__ = ("line", "tag", "value")

    def __init__(self, tag: str, value: Any, line: int) -> None:
        self.tag = tag
        self.value = value
        self.line = line


class ScalarNode(Node):
    __slots__ = ()
    value: str


class SequenceNode(Node):
    __slots__ = ()
    value: list[Node]


class MappingNode(Node):
    __slots__ = ()
    value: list[tuple[Node, Node]]


def _line(node: Node) -> int:
    return node.line


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present


def _event_line(event: events.Event) -> int:
    return int(event.start_mark.line) + 1 if event.start_mark is not None else 0


def _compose(text: str, limits: Limits) -> Node | None:
    """Events to nodes, iteratively, checking nesting depth and alias count as it goes.

    PyYAML's own composer is recursive and has no limits; the event parser (libyaml's when
    available, else PyYAML's) only tokenises, so nothing is constructed or expanded here.
    """
    resolver = Resolver()
    anchors: dict[str, Node] = {}
    stack: list[list[Any]] = []  # [container node, pending mapping key or None]
    root: Node | None = None
    aliases = 0
    documents = 0

    def attach(node: Node) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        frame = stack[-1]
        parent = frame[0]
        if isinstance(parent, SequenceNode):
            parent.value.append(node)
        elif frame[1] is None:
            frame[1] = node
        else:
            parent.value.append((frame[1], node))
            frame[1] = None

    def anchor(event: Any, node: Node) -> None:
        if event.anchor is not None:
            anchors[event.anchor] = node

    def check_depth(event: events.Event) -> None:
        if len(stack) >= limits.max_yaml_depth:
            raise _LimitExceeded(
                "yaml-depth",
                f"YAML nested deeper than {limits.max_yaml_depth} levels",
                "flatten the document; manifests and stack files need only a few levels",
                _event_line(event),
            )

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, events.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _LimitExceeded(
                    "yaml-documents",
                    "the file holds more than one YAML document (---)",
                    "keep a single document per file",
                    _event_line(event),
                )
        elif isinstance(event, events.AliasEvent):
            aliases += 1
            if aliases > limits.max_yaml_aliases:
                raise _LimitExceeded(
                    "yaml-aliases",
                    f"more than {limits.max_yaml_aliases} YAML aliases (*name)",
                    "write the values out, or use fewer anchors and aliases",
                    _event_line(event),
                )
            target = anchors.get(str(event.anchor))
            if target is None:
                raise _LimitExceeded(
                    "yaml-syntax",
                    f"invalid YAML: alias *{event.anchor} names no anchor defined before it",
                    f"define &{event.anchor} before using *{event.anchor}",
                    _event_line(event),
                )
            attach(target)
        elif isinstance(event, events.ScalarEvent):
            check_depth(event)
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolver.resolve(_YScalarNode, event.value, event.implicit)
            scalar = ScalarNode(tag, event.value, _event_line(event))
            anchor(event, scalar)
            attach(scalar)
        elif isinstance(event, events.SequenceStartEvent | events.MappingStartEvent):
            check_depth(event)
            tag = event.tag
            is_seq = isinstance(event, events.SequenceStartEvent)
            if tag is None or tag == "!":
                kind = _YSequenceNode if is_seq else _YMappingNode
                tag = resolver.resolve(kind, None, event.implicit)
            node = (SequenceNode if is_seq else MappingNode)(tag, [], _event_line(event))
            anchor(event, node)
            attach(node)
            stack.append([node, None])
        elif isinstance(event, events.SequenceEndEvent | events.MappingEndEvent):
            stack.pop()
    return root


def _measure(root: Node, limits: Limits) -> None:
    """Check the alias-expanded size and depth without expanding; refuse recursive aliases."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    on_path: set[int] = set()

    def too_big(node: Node) -> _LimitExceeded:
        return _LimitExceeded(
            "yaml-size",
            f"YAML document expands to more than {limits.max_yaml_nodes} values "
            "once its aliases are expanded (a 'billion laughs' file?)",
            "write the document without aliases that multiply each other",
            _line(node),
        )

    def visit(node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in on_path:
            raise _LimitExceeded(
                "yaml-recursive",
                "recursive YAML alias: a node contains an alias to itself",
                "remove the alias that points to its own ancestor",
                _line(node),
            )
        known = sizes.get(key)
        if known is None:
            if depth > limits.max_yaml_depth:
                raise _LimitExceeded(
                    "yaml-depth",
                    f"YAML nested deeper than {limits.max_yaml_depth} levels once aliases "
                    "are expanded",
                    "flatten the document or use fewer nested aliases",
                    _line(node),
                )
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = list(node.value)
            elif isinstance(node, MappingNode):
                for k, v in node.value:
                    children.extend((k, v))
            on_path.add(key)
            total, height = 1, 1
            for child in children:
                size, child_height = visit(child, depth + 1)
                total += size
                height = max(height, child_height + 1)
                if total > limits.max_yaml_nodes:
                    raise too_big(node)
            on_path.discard(key)
            known = (total, height)
            sizes[key] = known
        if depth + known[1] - 1 > limits.max_yaml_depth:
            raise _LimitExceeded(
                "yaml-depth",
                f"YAML nested deeper than {limits.max_yaml_depth} levels once aliases are expanded",
                "flatten the document or use fewer nested aliases",
                _line(node),
            )
        return known

    total, _ = visit(root, 1)
    if total > limits.max_yaml_nodes:
        raise too_big(root)


class _Converter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self._scalars = SafeConstructor()

    def convert(self, node: Node) -> Any:
        tag = node.tag
        if isinstance(node, ScalarNode):
            if tag not in _SCALAR_TAGS:
                return self._bad_tag(node)
            try:
                plain = _YScalarNode(tag, node.value)
                return self._scalars.yaml_constructors[tag](self._scalars, plain)
            except (ConstructorError, ValueError) as exc:
                self.problems.append(
                    error(
                        self.path,
                        _line(node),
                        "yaml-value",
                        f"cannot read value {node.value!r}: {exc}",
                        "quote the value to make it a string",
                    )
                )
                return node.value
        if isinstance(node, SequenceNode):
            if tag != _SEQ_TAG:
                return self._bad_tag(node)
            seq = YList(_line(node))
            for item in node.value:
                seq.append(self.convert(item))
                seq.item_lines.append(_line(item))
            return seq
        if isinstance(node, MappingNode):
            if tag != _MAP_TAG:
                return self._bad_tag(node)
            return self._mapping(node)
        return None  # pragma: no cover - the composer makes no other node kind

    def _bad_tag(self, node: Node) -> None:
        tag = str(node.tag)
        shown = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
        self.problems.append(
            error(
                self.path,
                _line(node),
                "yaml-tag",
                f"YAML tag {shown} is not allowed",
                "remove the tag: only plain strings, numbers, booleans, null, lists and "
                "mappings are read",
            )
        )
        return None

    def _mapping(self, node: MappingNode) -> YMap:
        out = YMap(_line(node))
        merged: list[YMap] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node))
                continue
            if not isinstance(key_node, ScalarNode):
                self.problems.append(
                    error(
                        self.path,
                        _line(key_node),
                        "yaml-key",
                        "a mapping key must be a plain value, not a list or mapping",
                        "use a string key",
                    )
                )
                continue
            key = self.convert(key_node)
            if key in out.key_lines:
                self.problems.append(
                    error(
                        self.path,
                        _line(key_node),
                        "duplicate-key",
                        f"duplicate key {key!r} (first at line {out.key_lines[key]})",
                        "keep a single entry for this key",
                    )
                )
                continue
            out[key] = self.convert(value_node)
            out.key_lines[key] = _line(key_node)
            out.value_lines[key] = _line(value_node)
        # `<<: *base` merge keys: explicit keys win, earlier merged mappings win over later.
        for source in merged:
            for key, value in source.items():
                if key not in out.key_lines:
                    out[key] = value
                    out.key_lines[key] = source.key_line(key)
                    out.value_lines[key] = source.value_line(key)
        return out

    def _merge_sources(self, node: Node) -> list[YMap]:
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        sources: list[YMap] = []
        for item in nodes:
            value = self.convert(item) if isinstance(item, MappingNode) else None
            if isinstance(value, YMap):
                sources.append(value)
            else:
                self.problems.append(
                    error(
                        self.path,
                        _line(item),
                        "yaml-merge",
                        "a merge key (<<) must name a mapping or a list of mappings",
                        "point << at an anchored mapping, e.g. `<<: *defaults`",
                    )
                )
        return sources


def _decode(path: str, data: bytes) -> tuple[str | None, Problem | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, error(
            path,
            line,
            "encoding",
            f"not valid UTF-8 (byte {exc.start})",
            "save the file as UTF-8",
        )


def load_yaml(path: str, data: bytes, limits: Limits) -> tuple[Any, list[Problem]]:
    """Parse one YAML document. Returns (value, problems); value is None when the file could
    not be read at all. `path` is only used to label problems."""
    if len(data) > limits.max_yaml_bytes:
        return None, [
            error(
                path,
                0,
                "file-too-large",
                f"file is {len(data)} bytes, more than the {limits.max_yaml_bytes} allowed "
                "for a YAML file",
                "split it or remove what is not needed",
            )
        ]
    text, problem = _decode(path, data)
    if text is None:
        return None, [problem] if problem else []
    try:
        node = _compose(text, limits)
        if node is None:
            return None, [
                error(path, 0, "empty-file", "the file is empty", "write the YAML content")
            ]
        _measure(node, limits)
    except _LimitExceeded as exc:
        return None, [error(path, exc.line, exc.code, exc.message, exc.hint)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 0
        what = exc.problem or "syntax error"
        if exc.context:
            where = exc.context_mark
            at = f" (line {int(where.line) + 1})" if where is not None else ""
            what = f"{exc.context}{at}: {what}"
        if "nesting depth" in what:  # libyaml's own limit, hit while scanning ahead
            return None, [
                error(
                    path,
                    line,
                    "yaml-depth",
                    f"YAML nested deeper than {limits.max_yaml_depth} levels",
                    "flatten the document; manifests and stack files need only a few levels",
                )
            ]
        return None, [
            error(
                path,
                line,
                "yaml-syntax",
                f"invalid YAML: {what}",
                "fix the YAML syntax at this line",
            )
        ]
    except ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        return None, [
            error(
                path,
                line,
                "yaml-syntax",
                f"invalid YAML: character {exc.character!r} is not allowed",
                "remove the control character",
            )
        ]
    except yaml.YAMLError as exc:  # libyaml reports some errors without a mark
        return None, [error(path, 0, "yaml-syntax", f"invalid YAML: {exc}", "fix the YAML syntax")]
    converter = _Converter(path)
    value = converter.convert(node)
    return value, converter.problems
