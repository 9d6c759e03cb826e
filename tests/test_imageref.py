"""sami_common.imageref: Docker's reference grammar, and the one normalisation every entry
point (client, webhook, control plane) applies to artifact references."""

from __future__ import annotations

import pytest

from sami_common.imageref import (
    ImageRef,
    InvalidImageRef,
    normalize_artifact_ref,
    parse_image_ref,
)

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", ImageRef("", "nginx", "", "")),
        ("nginx:1.27", ImageRef("", "nginx", "1.27", "")),
        (f"nginx@{D}", ImageRef("", "nginx", "", D)),
        (
            f"ghcr.io/osscameroon/camerdevs:main@{D}",
            ImageRef("ghcr.io", "osscameroon/camerdevs", "main", D),
        ),
        (f"127.0.0.1:5000/web@{D}", ImageRef("127.0.0.1:5000", "web", "", D)),
        (f"localhost:5000/a/b:v1.2.3@{D}", ImageRef("localhost:5000", "a/b", "v1.2.3", D)),
        ("localhost/web", ImageRef("localhost", "web", "", "")),
        (f"[::1]:5000/web:t@{D}", ImageRef("[::1]:5000", "web", "t", D)),
        ("Registry/web", ImageRef("Registry", "web", "", "")),  # upper case: a host
        ("my-org/web_app__x.y--z", ImageRef("", "my-org/web_app__x.y--z", "", "")),
        ("web:Tag_1.-x", ImageRef("", "web", "Tag_1.-x", "")),
    ],
)
def test_references_docker_accepts(text: str, expected: ImageRef) -> None:
    ref = parse_image_ref(text)
    assert ref == expected
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        (" web", "spaces"),
        ("Web", "lower-case"),
        ("web:", "tag ''"),
        ("web:.x", "tag '.x'"),
        ("web:" + "t" * 129, "tag"),
        ("web@", "digest ''"),
        ("web@sha256:abc", "digest"),
        (f"web@{D}@{D}", "digest"),
        ("a_/web", "repository"),
        ("web/", "repository"),
        ("-host.io/web", "registry"),
        ("a" * 256, "longer than 255"),
    ],
)
def test_references_docker_refuses(text: str, complaint: str) -> None:
    with pytest.raises(InvalidImageRef) as caught:
        parse_image_ref(text)
    assert complaint in str(caught.value)


def test_canonical_repository_is_what_docker_pulls() -> None:
    assert parse_image_ref("nginx").canonical_repository == "docker.io/library/nginx"
    assert parse_image_ref("me/app").canonical_repository == "docker.io/me/app"
    assert parse_image_ref("index.docker.io/me/app").canonical_repository == "docker.io/me/app"
    assert parse_image_ref("ghcr.io/me/app").canonical_repository == "ghcr.io/me/app"


def test_same_image_ignores_the_tag_and_the_familiar_form() -> None:
    a = parse_image_ref(f"nginx:1.27@{D}")
    assert a.same_image(parse_image_ref(f"docker.io/library/nginx@{D}"))
    assert not a.same_image(parse_image_ref(f"ghcr.io/library/nginx@{D}"))
    assert not a.same_image(parse_image_ref("nginx:1.27"))  # no digest: no identity


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        (f"ghcr.io/x/web:1.2@{D}", f"ghcr.io/x/web@{D}"),
        (f"ghcr.io/x/web@{D}", f"ghcr.io/x/web@{D}"),
        (f"127.0.0.1:5000/web:latest@{D}", f"127.0.0.1:5000/web@{D}"),
        (f" web@{D}\n", f"web@{D}"),
        # Not references pinned by digest: left for the server to resolve or refuse.
        ("art_0123", "art_0123"),
        ("artifacts/art_0123", "artifacts/art_0123"),
        ("ghcr.io/x/web:1.2", "ghcr.io/x/web:1.2"),
        ("https://example.com/site.tar.gz", "https://example.com/site.tar.gz"),
        ("Web@sha256:xyz", "Web@sha256:xyz"),
    ],
)
def test_normalize_artifact_ref(given: str, normalised: str) -> None:
    assert normalize_artifact_ref(given) == normalised
