"""`promote_after` and `queue` in sami.yaml (issue 21): optional, with defaults that keep
every older manifest meaning what it did, and a clear error for a bad value."""

from __future__ import annotations

import pytest
from manifest_fixtures import WEB, base_files

from sami_manifests import Severity, lint, resolve

PREVIEW = "services/web/swarm/pull_request"


def with_lines(*lines: str, folder: str = WEB) -> dict[str, bytes]:
    files = base_files()
    if folder != WEB:
        for name in ("sami.yaml", "web-stack.yml", "conf/web.conf"):
            files[f"{folder}/{name}"] = files[f"{WEB}/{name}"]
    files[f"{folder}/sami.yaml"] += "".join(f"{line}\n" for line in lines).encode()
    return files


def errors(files: dict[str, bytes]) -> list[str]:
    return [p.message for p in lint(files) if p.severity is Severity.ERROR]


def test_without_the_fields_promotions_are_not_gated_and_new_work_supersedes() -> None:
    m = resolve(base_files(), "web", None, "stage")
    assert (m.promote_after, m.queue) == (0, "supersede")


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2s", 2), ("1h30m", 5400)])
def test_promote_after_reads_the_duration_grammar(text: str, seconds: int) -> None:
    m = resolve(with_lines(f"promote_after: {text}"), "web", None, "stage")
    assert m.promote_after == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "promote_after: 'soon' is not a duration"),
        ("30M", "promote_after: '30M' is not a duration"),
        ("0", "promote_after 0s is outside 1s..12w6d"),
        ("100d", "promote_after 14w2d is outside 1s..12w6d"),
    ],
)
def test_a_bad_promote_after_is_an_error_naming_the_value(value: str, message: str) -> None:
    found = errors(with_lines(f"promote_after: {value}"))
    assert len(found) == 1 and found[0].startswith(message), found


def test_promote_after_is_refused_in_a_preview_manifest() -> None:
    found = errors(with_lines("promote_after: 30m", folder=PREVIEW))
    assert found == ["promote_after in a pull_request manifest: previews are never promoted to"]


def test_queue_takes_supersede_or_fifo() -> None:
    assert resolve(with_lines("queue: fifo"), "web", None, "stage").queue == "fifo"
    assert resolve(with_lines("queue: supersede"), "web", None, "stage").queue == "supersede"
    found = errors(with_lines("queue: lifo"))
    assert found == ["queue 'lifo' is not a queue rule: expected one of supersede, fifo"]


def test_environment_url_is_an_optional_http_url() -> None:
    assert resolve(base_files(), "web", None, "stage").environment_url == ""
    url = "https://pr-{pr}.preview.example.com"
    assert (
        resolve(with_lines(f"environment_url: {url}"), "web", None, "stage").environment_url == url
    )
    found = errors(with_lines("environment_url: ftp://example.com"))
    assert found == ["environment_url 'ftp://example.com' is not an http(s) URL"]
