"""The agent fills a stack file's variables through its YAML tree
(sami_agent/executors/swarm_variables.py): string values only, never keys, and every
undefined variable of the file named at once."""

from __future__ import annotations

import pytest

from sami_agent.executors.swarm_variables import fill_stack_file, filled_document
from sami_manifests.interpolation import InterpolationError

VALUES = {"TAG": "1.2", "USER": "ana"}


def test_string_values_are_filled_not_keys() -> None:
    data = b"""\
services:
  ${TAG}:
    image: app:${TAG}
    deploy: {replicas: 2}
    command: [$USER]
"""
    out = filled_document(fill_stack_file("stack.yml", data, VALUES))
    assert out == {
        "services": {"${TAG}": {"image": "app:1.2", "deploy": {"replicas": 2}, "command": ["ana"]}}
    }


def test_every_undefined_variable_of_the_file_is_named_at_once() -> None:
    with pytest.raises(InterpolationError) as caught:
        fill_stack_file("stack.yml", b'a: $X\nb: ["${Y}", "$X"]\n', {})
    assert caught.value.undefined == ["X", "Y"]
    assert "stack.yml" in str(caught.value)
