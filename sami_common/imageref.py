"""Image references as Docker writes them, parsed and normalised in one place.

`docker build`, `docker buildx --metadata-file` and `crane digest --full-ref` print
`registry/repo:tag@sha256:…`; people write `repo@sha256:…` or `nginx@sha256:…`. All name
the same image when the repository and the digest agree: with a digest, Docker pulls by
digest and ignores the tag. The client, the webhook and the control plane all go through
`normalize_artifact_ref()`, so each of these finds the artifact registered under any other.

The grammar is Docker's (github.com/distribution/reference, reference.go), written out
here so the client does not depend on the Docker SDK:

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path-component ["/" path-component]*
    domain           := host [":" port-number]
    host             := domain-name | IPv4address | "[" IPv6address "]"
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    path-component   := alpha-numeric [separator alpha-numeric]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" hex
    algorithm        := /[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*/
    hex              := /[0-9a-fA-F]{32,}/

The first component is a domain when it contains "." or ":", is "localhost", or has an
upper-case letter (which a path component cannot); else the image is on Docker Hub
(`nginx` is `docker.io/library/nginx`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
# Docker refuses longer names (reference.NameTotalLengthMax).
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")


class InvalidImageRef(ValueError):
    """The text is not an image reference; the message says which part is wrong."""


@dataclass(frozen=True)
class ImageRef:
    domain: str  # as written; "" when the reference names none (Docker Hub)
    path: str  # e.g. osscameroon/camerdevs
    tag: str  # "" when absent
    digest: str  # "" when absent, else e.g. sha256:<64 hex>

    @property
    def repository(self) -> str:
        """The name as written, without tag or digest: `ghcr.io/x/web`, `nginx`."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def canonical_repository(self) -> str:
        """The fully qualified name Docker means: `nginx` → `docker.io/library/nginx`."""
        domain = self.domain or DEFAULT_DOMAIN
        if domain == LEGACY_DEFAULT_DOMAIN:
            domain = DEFAULT_DOMAIN
        path = self.path
        if domain == DEFAULT_DOMAIN and "/" not in path:
            path = OFFICIAL_REPO_PREFIX + path
        return f"{domain}/{path}"

    def pinned(self) -> str:
        """`repository@digest`: the tag dropped, as Docker does when a digest is given."""
        if not self.digest:
            raise InvalidImageRef(f"{self} is not pinned by digest")
        return f"{self.repository}@{self.digest}"

    def same_image(self, other: ImageRef) -> bool:
        """Whether both name one image: same repository (as Docker reads it), same digest."""
        return (
            bool(self.digest)
            and self.digest == other.digest
            and self.canonical_repository == other.canonical_repository
        )

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_ref(text: str) -> ImageRef:
    """Parse `text` by Docker's grammar; InvalidImageRef names what is wrong."""
    if not text:
        raise InvalidImageRef("empty image reference")
    if text != text.strip():
        raise InvalidImageRef(f"image reference {text!r} has leading or trailing spaces")
    rest, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise InvalidImageRef(
            f"{text!r}: digest {digest!r} is not algorithm:hex (e.g. sha256:<64 hex>)"
        )
    # A ':' after the last '/' starts the tag; one before it belongs to the domain's port.
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidImageRef(
                f"{text!r}: tag {tag!r} is not valid (letters, digits, '_', '.', '-', "
                "at most 128, not starting with '.' or '-')"
            )
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidImageRef(f"{text!r}: the name is longer than {NAME_TOTAL_LENGTH_MAX}")
    domain, path = _split_domain(name)
    if domain and not _DOMAIN.fullmatch(domain):
        raise InvalidImageRef(f"{text!r}: registry {domain!r} is not a host[:port]")
    if not _PATH.fullmatch(path):
        hint = " (repository names are lower-case)" if path.lower() != path else ""
        raise InvalidImageRef(f"{text!r}: repository {path!r} is not valid{hint}")
    return ImageRef(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return "", name


def normalize_artifact_ref(text: str) -> str:
    """How Sami writes an artifact reference: a reference pinned by digest becomes
    `repository@digest` (the tag dropped: the digest decides); anything else (an artifact
    id, `artifacts/ID`, a URL, text that is no reference) is returned as given, for the
    caller to resolve or refuse with its own message."""
    text = text.strip()
    if "@" not in text or "://" in text:
        return text
    try:
        ref = parse_image_ref(text)
    except InvalidImageRef:
        return text
    return ref.pinned()
