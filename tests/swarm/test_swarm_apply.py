"""The apply step's pure parts: validation, digest pinning, the generated override."""

from __future__ import annotations

import pytest
import yaml

from sami_agent.executor import Job
from sami_agent.executors.swarm_apply import (
    LABEL_DEPLOYMENT,
    LABEL_DIGEST,
    JobError,
    _output_messages,
    override_document,
    pinned_image,
    plan,
)

DIGEST = "sha256:" + "ab" * 32
STACK = b"""\
version: "3.8"
services:
  web:
    image: app
  worker:
    image: app
  redis:
    image: redis:7
"""


def make_job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "deployment_id": "dep-1",
        "service": "shop",
        "environment": "stage",
        "pull_request": 0,
        "deployment_type": "swarm",
        "stack_name": "shop",
        "artifact_name": "shop",
        "artifact_ref": "registry.example:5000/team/shop:1.2",
        "artifact_digest": DIGEST,
        "attempt": 1,
        "converge_timeout": 60.0,
        "files": {"stack.yml": STACK},
        "stack_files": ("stack.yml",),
        "image_services": ("web", "worker"),
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ref",
    [
        "registry.example:5000/team/shop",
        "registry.example:5000/team/shop:1.2",
        f"registry.example:5000/team/shop@{DIGEST}",
        f"registry.example:5000/team/shop:1.2@{DIGEST}",
    ],
)
def test_pinned_image_is_repo_at_digest(ref: str) -> None:
    assert pinned_image(ref, DIGEST) == f"registry.example:5000/team/shop@{DIGEST}"


def test_pinned_image_refuses_a_conflicting_or_bad_digest() -> None:
    with pytest.raises(JobError, match="another digest"):
        pinned_image("r/shop@sha256:" + "cd" * 32, DIGEST)
    with pytest.raises(JobError, match="not a sha256 digest"):
        pinned_image("r/shop", "latest")


def test_override_pins_image_services_and_labels_every_service() -> None:
    doc = override_document(plan(make_job()))

    assert doc["version"] == "3.8"
    services = doc["services"]
    assert services["web"]["image"] == f"registry.example:5000/team/shop@{DIGEST}"
    assert services["worker"]["image"] == services["web"]["image"]
    assert "image" not in services["redis"]
    assert services["redis"]["deploy"]["labels"] == {LABEL_DEPLOYMENT: "dep-1"}
    assert services["web"]["deploy"]["labels"] == {LABEL_DEPLOYMENT: "dep-1", LABEL_DIGEST: DIGEST}
    yaml.safe_dump(doc)  # serialisable as written to the override file


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stack_files": ()}, "names no stack files"),
        ({"stack_files": ("other.yml",)}, "not among the job's files"),
        ({"image_services": ("api",)}, "image_services api are not services"),
        ({"image_services": ()}, "say which take the artifact's image"),
        ({"stack_name": "-bad"}, "not a valid Docker stack name"),
        ({"files": {"stack.yml": STACK, "../x": b""}}, "not a relative path"),
        ({"files": {"stack.yml": b"services: [1]"}}, "`services` is not a mapping"),
        ({"files": {"stack.yml": b"{"}}, "not valid YAML"),
    ],
)
def test_plan_refuses_bad_jobs(changes: dict[str, object], message: str) -> None:
    with pytest.raises(JobError, match=message):
        plan(make_job(**changes))


def test_single_service_stack_needs_no_image_services() -> None:
    only = b"services:\n  web:\n    image: app\n"
    chosen = plan(make_job(files={"stack.yml": only}, image_services=()))
    assert chosen.image_services == ("web",)
    assert "version" not in override_document(chosen)


def test_cli_output_becomes_one_message_per_line_or_paragraph() -> None:
    output = (
        "Since --detach=false was not specified, tasks will be created in the background.\n"
        "Creating network shop_default\n"
        "Creating service shop_web\n"
        "image r/app@sha256:00 could not be accessed on a registry to record\n"
        "its digest. Each node will access it independently.\n"
    )
    assert _output_messages(output) == [
        "Creating network shop_default",
        "Creating service shop_web",
        "image r/app@sha256:00 could not be accessed on a registry to record its digest. "
        "Each node will access it independently.",
    ]
