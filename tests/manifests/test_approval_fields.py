"""`approval`, `approvers` and `approval_expires` in sami.yaml (issue 21 item 2): optional,
off by default (the original sami.yaml keeps meaning what it did), linted with clear errors."""

from __future__ import annotations

import pytest
from manifest_fixtures import WEB, base_files

from sami_manifests import Severity, lint, resolve


def with_lines(*lines: str) -> dict[str, bytes]:
    files = base_files()
    files[f"{WEB}/sami.yaml"] += "".join(f"{line}\n" for line in lines).encode()
    return files


def errors(files: dict[str, bytes]) -> list[str]:
    return [p.message for p in lint(files) if p.severity is Severity.ERROR]


def test_without_the_fields_nothing_waits_for_approval() -> None:
    m = resolve(base_files(), "web", None, "stage")
    assert (m.approval_required, m.approvers) == (False, ())


def test_approval_required_with_approvers_and_expiry() -> None:
    m = resolve(
        with_lines("approval: required", "approvers: [alice, admin]", "approval_expires: 2h"),
        "web",
        None,
        "stage",
    )
    assert (m.approval_required, m.approvers, m.approval_expires) == (
        True,
        ("alice", "admin"),
        7200,
    )
    default = resolve(with_lines("approval: required"), "web", None, "stage")
    assert (default.approvers, default.approval_expires) == ((), 24 * 3600)
    assert not resolve(with_lines("approval: none"), "web", None, "stage").approval_required


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["approval: yes please"], "approval 'yes please' is not an approval rule"),
        (["approval: true"], "approval must be a non-empty string, got a boolean"),
        (["approvers: [alice]"], "approvers without approval: required means nothing"),
        (["approval_expires: 1h"], "approval_expires without approval: required means nothing"),
        (["approval: required", "approvers: alice"], "approvers must be a non-empty list"),
        (["approval: required", "approvers: []"], "approvers must be a non-empty list"),
        (["approval: required", "approvers: [3]"], "approvers entries are token names or roles"),
        (["approval: required", "approval_expires: soon"], "approval_expires: 'soon' is not"),
        (["approval: required", "approval_expires: 2s"], "approval_expires 2s is outside 5s.."),
        (["approval: required", "approval_expires: 31d"], "approval_expires 4w3d is outside"),
    ],
)
def test_bad_approval_settings_are_errors_naming_the_value(lines: list[str], message: str) -> None:
    found = errors(with_lines(*lines))
    assert len(found) == 1 and found[0].startswith(message), found
