"""The example repo (the original design notes' tree) and the docs' examples lint clean."""

from __future__ import annotations

import re

from manifest_fixtures import DOCS, EXAMPLES

from sami_manifests import read_tree, scan


def test_example_tree_lints_clean_with_only_the_intended_warnings() -> None:
    files = read_tree(EXAMPLES)
    result = scan(files)
    assert result.ok
    assert sorted((p.code, p.file, p.line) for p in result.problems) == [
        ("docker-socket", "services/portainer/compose/prod/portainer-agent-stack.yml", 7),
        ("environment-alias", "services/camerdevs/compose/prod/", 0),
        ("environment-alias", "services/portainer/compose/prod/", 0),
        ("environment-alias", "services/prometheus/compose/prod/", 0),
    ]
    assert sorted(m.folder for m in result.manifests) == [
        "services/camerdevs/compose/prod",
        "services/camerdevs/compose/pull_request",
        "services/camerdevs/compose/stage",
        "services/caparledev-bot/compose/stage",
        "services/portainer/compose/prod",
        "services/prometheus/compose/prod",
    ]


def test_example_tree_has_the_original_layout() -> None:
    files = read_tree(EXAMPLES)
    # conf/ is part of the repo but Sami leaves it alone.
    assert (EXAMPLES / "conf/nginx/sites-enabled/camerdevs.com").is_file()
    assert not any(path.startswith("conf/") for path in files)
    assert "README.md" in files
    for folder in (
        "services/camerdevs/compose/prod",
        "services/camerdevs/compose/stage",
        "services/caparledev-bot/compose/stage",
        "services/portainer/compose/prod",
        "services/prometheus/compose/prod",
    ):
        assert f"{folder}/sami.yaml" in files


def docs_examples() -> dict[str, bytes]:
    """Every ```yaml block of docs/manifests.md whose first line is `# services/...`."""
    text = DOCS.read_text()
    files: dict[str, bytes] = {}
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL):
        first = block.splitlines()[0]
        if first.startswith("# services/"):
            files[first[2:].strip()] = block.encode()
    return files


def test_docs_examples_lint_clean() -> None:
    files = docs_examples()
    assert {path.rsplit("/", 1)[-1] for path in files} >= {"sami.yaml", "web-stack.yml"}
    assert {path.split("/")[2] for path in files} == {"swarm", "compose", "static_file", "cron"}
    result = scan(files)
    assert [p.format() for p in result.problems] == []
    assert len(result.manifests) == 5
    # The original manifest (no stack_files) applies the one stack file next to it.
    (camerdevs,) = [m for m in result.manifests if m.service == "camerdevs"]
    assert camerdevs.stack_files == ("camerdevs-stack.yml",)
