"""Input validation at the edge. Each check raises InvalidArgument naming the field.

Names are deliberately narrow (lower-case ASCII): they become stack names, labels and
folder names, where homoglyphs, zero-width characters or `../` would be dangerous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlparse

from sami_common import limits
from sami_common.imageref import ImageRef, InvalidImageRef, parse_image_ref
from sami_control.core.errors import InvalidArgument
from sami_manifests import ENVIRONMENTS

# DNS labels: names end up in stack names (`<environment>_<service>`), where `_` is the
# separator, and in hostnames.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_AGENT_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")
_ARTIFACT_NAME = re.compile(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_LABEL_KEY = re.compile(r"[a-z0-9](?:[a-z0-9._/-]{0,62}[a-z0-9])?")
MAX_REF = 512
MAX_TEXT = 1000


def name(field: str, value: str, what: str = "name") -> str:
    if not value:
        raise InvalidArgument(field, f"{what} is required")
    if len(value) > 63:
        raise InvalidArgument(field, f"{what} is longer than 63 characters")
    if not _NAME.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{what} {value!r} must be lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    return value


def agent_id(field: str, value: str) -> str:
    if not _AGENT_ID.fullmatch(value):
        raise InvalidArgument(
            field, "agent id must be 1-128 letters, digits, '.', '_' or '-' (e.g. a hostname)"
        )
    return value


def environment(field: str, value: str) -> str:
    if value == "prod":
        raise InvalidArgument(field, "use 'production' ('prod' is only a folder alias)")
    if value not in ENVIRONMENTS:
        raise InvalidArgument(
            field, f"environment {value!r} is not one of {', '.join(ENVIRONMENTS)}"
        )
    return value


def pull_request(field: str, env: str, value: int) -> int:
    if env == "pull_request":
        if value <= 0:
            raise InvalidArgument(field, "a pull_request deployment needs its PR number (> 0)")
        if value > 10**9:
            raise InvalidArgument(field, "PR number is too large")
    elif value != 0:
        raise InvalidArgument(field, "a PR number is only allowed with environment pull_request")
    return value


def artifact_name(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "artifact name is required")
    if len(value) > 200:
        raise InvalidArgument(field, "artifact name is longer than 200 characters")
    if not _ARTIFACT_NAME.fullmatch(value):
        raise InvalidArgument(
            field,
            f"artifact name {value!r} must be lower-case letters and digits separated by "
            "'.', '_', '-' or '/'",
        )
    return value


def digest(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "digest is required (sha256:<64 hex>)")
    if not _DIGEST.fullmatch(value):
        if value.lower() != value and _DIGEST.fullmatch(value.lower()):
            raise InvalidArgument(field, "digest must be lower-case hex")
        algo = value.split(":", 1)[0] if ":" in value else ""
        if algo and algo != "sha256":
            raise InvalidArgument(field, f"digest algorithm {algo!r} is not supported (sha256)")
        raise InvalidArgument(field, "digest must be sha256:<64 lower-case hex characters>")
    return value


def image_ref(field: str, value: str) -> ImageRef:
    """An image reference pinned by digest, parsed by Docker's grammar (a tag may come
    before the digest, as `docker build` prints it: `repo:tag@sha256:…`)."""
    if not value:
        raise InvalidArgument(field, "ref is required (registry/repo@sha256:<64 hex>)")
    if len(value) > MAX_REF:
        raise InvalidArgument(field, f"ref is longer than {MAX_REF} characters")
    try:
        ref = parse_image_ref(value)
    except InvalidImageRef as exc:
        raise InvalidArgument(field, f"not a valid image reference: {exc}") from None
    if not ref.digest:
        raise InvalidArgument(
            field, f"ref {value!r} is not pinned by digest: use repo[:tag]@sha256:<64 hex>"
        )
    digest(field, ref.digest)
    return ref


def url(field: str, value: str) -> str:
    text(field, value, limit=MAX_REF)
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidArgument(field, f"{value!r} is not an http(s) URL")
    if "@" in parsed.netloc:
        # Never echo them: the refusal itself is logged and audited.
        raise InvalidArgument(
            field,
            f"{without_credentials(value)} holds credentials (user:password@): a URL stored "
            "by Sami is shown to every reader and kept in the audit log and backups. Serve "
            "the file without them, e.g. from a short-lived signed URL or a server only the "
            "agents reach",
        )
    return value


def without_credentials(value: str) -> str:
    """`value` with the user:password@ of a URL replaced by `…@`, for messages and the audit
    log (anything else is returned as is)."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return value
    return f"{scheme}://…@{authority.rpartition('@')[2]}{slash}{path}"


def text(field: str, value: str, limit: int = MAX_TEXT) -> str:
    """Free text: bounded, and no control or invisible formatting characters (which can
    hide what a log line or a CLI listing really says): bidirectional controls are format
    characters (Cf); line and paragraph separators (Zl, Zp) break a log line as a newline
    would."""
    if len(value) > limit:
        raise InvalidArgument(field, f"longer than {limit} characters")
    # The one rule, shared with the agent, which cleans its reports to pass it.
    ch = limits.first_refused(value)
    if ch is not None:
        raise InvalidArgument(field, f"contains the control or invisible character U+{ord(ch):04X}")
    return value


def tags(field: str, values: Iterable[str]) -> list[str]:
    out = list(values)
    if len(out) > 50:
        raise InvalidArgument(field, "more than 50 tags")
    for i, t in enumerate(out):
        if not _TAG.fullmatch(t):
            raise InvalidArgument(f"{field}[{i}]", f"tag {t!r} is not a valid tag")
    return sorted(set(out))


def labels(field: str, values: Mapping[str, str]) -> dict[str, str]:
    if len(values) > 64:
        raise InvalidArgument(field, "more than 64 labels")
    for k, v in values.items():
        if not _LABEL_KEY.fullmatch(k):
            raise InvalidArgument(f"{field}[{k!r}]", "label key must be lower-case [a-z0-9._/-]")
        text(f"{field}[{k!r}]", v, limit=256)
    return dict(values)


def commit(field: str, value: str) -> str:
    if value and not _COMMIT.fullmatch(value):
        raise InvalidArgument(field, "commit must be a full lower-case hex sha (40 characters)")
    return value


def is_request_id(value: str) -> bool:
    return bool(_REQUEST_ID.fullmatch(value))


def request_id(field: str, value: str) -> str:
    if value and not _REQUEST_ID.fullmatch(value):
        raise InvalidArgument(
            field, "request_id must be 1-128 characters of letters, digits and ._:/-"
        )
    return value
