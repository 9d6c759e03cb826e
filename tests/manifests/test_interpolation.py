"""Compose interpolation from a given mapping (sami_manifests/interpolation.py)."""

from __future__ import annotations

import pytest

from sami_manifests.interpolation import (
    InterpolationError,
    interpolate,
    required_variables,
    tree_has_references,
    variables_of,
)

VALUES = {"TAG": "1.2", "EMPTY": "", "USER": "ana"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image: app:$TAG", "image: app:1.2"),
        ("image: app:${TAG}-x", "image: app:1.2-x"),
        ("$TAG$USER", "1.2ana"),
        ("${TAG:-latest}", "1.2"),
        ("${EMPTY:-latest}", "latest"),
        ("${UNSET:-latest}", "latest"),
        ("${EMPTY-latest}", ""),
        ("${UNSET-latest}", "latest"),
        ("${TAG:?set TAG}", "1.2"),
        ("${EMPTY?set it}", ""),
        ("${TAG:+pinned}", "pinned"),
        ("${EMPTY:+pinned}", ""),
        ("${EMPTY+pinned}", "pinned"),
        ("${UNSET+pinned}", ""),
        ("${UNSET:-${USER}-default}", "ana-default"),
        ("${UNSET:-{a}}", "{a}"),
        ("${UNSET:-a $$b}", "a $b"),
        ("cost: $$5 and $${TAG}", "cost: $5 and ${TAG}"),
        ("no references at all", "no references at all"),
    ],
)
def test_interpolate_fills_compose_syntax(text: str, expected: str) -> None:
    assert interpolate(text, VALUES) == expected


def test_every_undefined_variable_is_named_with_the_file() -> None:
    with pytest.raises(InterpolationError) as caught:
        interpolate("a: $ONE\nb: ${TWO}\nc: ${ONE}\nd: ${THREE:?the db host}", {}, source="s.yml")
    err = caught.value
    assert err.undefined == ["ONE", "TWO", "THREE"]
    assert str(err) == "s.yml: undefined variables: ONE, TWO, THREE (the db host)"


def test_empty_value_fails_the_colon_question_mark_form() -> None:
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?must not be empty}", VALUES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("price $5", "lone \\$"),
        ("${}", "variable name must follow"),
        ("${TAG", "invalid reference"),
        ("${TAG:-x", "unclosed reference"),
        ("${TAG%%x}", "invalid reference"),
    ],
)
def test_malformed_references_are_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate(text, VALUES, source="stack.yml")


def test_escape_dollars_keeps_the_text_free_of_references_for_docker() -> None:
    values = {"PASSWORD": "pa$word", "TAG": "1.2"}
    out = interpolate("$$HOME ${PASSWORD} ${UNSET:-d$$x} $TAG", values, escape_dollars=True)
    assert out == "$$HOME pa$$word d$$x 1.2"
    # A second round (docker's) gives the literal text and needs no variable.
    assert variables_of(out) == []
    assert interpolate(out, {}) == "$HOME pa$word d$x 1.2"


def test_the_environment_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_TAG", "from-the-agent-environment")
    with pytest.raises(InterpolationError, match="IMAGE_TAG"):
        interpolate("image: app:${IMAGE_TAG}", {})
    assert interpolate("${IMAGE_TAG:-default}", {}) == "default"


def test_required_and_all_variables() -> None:
    text = "$A ${B} ${C:-x} ${D?m} ${E:+${F}} $$G ${H:-${I}}"
    assert required_variables(text) == ["A", "B", "D"]
    assert variables_of(text) == ["A", "B", "C", "D", "E", "F", "H", "I"]


def test_tree_references_are_in_string_values_not_keys_nor_escapes() -> None:
    assert tree_has_references({"services": {"web": {"image": "app:${TAG}"}}})
    assert tree_has_references({"a": ["x", "$USER"]})
    assert not tree_has_references({"services": {"${TAG}": {"deploy": {"replicas": 2}}}})
    assert not tree_has_references({"a": "cost $$5"})
