"""What the control plane checks of an age file (age-encryption.org/v1) it is asked to store,
without the key to open it: that it is one (not a value uploaded in plain text), who it was
made for (the X25519 recipient stanzas of its header), and how large the value inside is.
The format: https://age-encryption.org/v1. Encrypting and decrypting are pyrage's (the
client's and the agent's), never this module's: it parses the header only."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import pyrage

MAGIC = b"age-encryption.org/v1\n"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
MAC_LINE = b"--- "
STANZA = b"-> "
# The payload: a 16-byte nonce, then chunks of 64 KiB of plaintext, each with a 16-byte tag.
NONCE_BYTES = 16
CHUNK_BYTES = 64 * 1024
TAG_BYTES = 16
MAX_RECIPIENT = 100


class NotAgeFile(ValueError):
    """The bytes are not an age file: the message says what is wrong with them."""


@dataclass(frozen=True)
class AgeHeader:
    x25519_stanzas: int  # one per X25519 recipient the file was encrypted to
    other_types: tuple[str, ...]  # the types of the other stanzas (grease, scrypt, plugins)
    plaintext_bytes: int  # the size of the value inside


def recipients_digest(recipients: Iterable[str]) -> str:
    """Names one set of recipients (GetRecipientsResponse.recipients_digest): the client
    sends it back with the ciphertext, so a set that changed in between is noticed."""
    text = "\n".join(sorted(set(recipients)))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def valid_recipient(value: str) -> str | None:
    """None if `value` is an age X25519 recipient (`age1…`); else what is wrong with it."""
    if not value.startswith("age1") or len(value) > MAX_RECIPIENT:
        return "must be an age X25519 recipient: age1… (the public key `age-keygen -y` prints)"
    try:
        pyrage.x25519.Recipient.from_str(value)
    except pyrage.RecipientError as exc:
        return f"is not a valid age X25519 recipient ({exc})"
    return None


def parse(data: bytes) -> AgeHeader:
    """The header of the age file `data` (binary or ASCII-armored); NotAgeFile if it is not
    one."""
    binary = _dearmor(data) if data.lstrip().startswith(ARMOR_BEGIN) else data
    if not binary.startswith(MAGIC):
        raise NotAgeFile(
            "is not an age file (it does not start with `age-encryption.org/v1` nor the "
            "ASCII armor): encrypt the value to the cluster's recipients, as `sami secret "
            "set` does; never upload it in plain text"
        )
    x25519, others, payload_at = _stanzas(binary)
    return AgeHeader(x25519, tuple(others), _plaintext_size(len(binary) - payload_at))


def _dearmor(data: bytes) -> bytes:
    text = data.strip()
    if not text.endswith(ARMOR_END):
        raise NotAgeFile("is ASCII-armored but does not end with the armor's END line")
    body = text[len(ARMOR_BEGIN) : -len(ARMOR_END)]
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise NotAgeFile(f"has an ASCII armor that is not base64 ({exc})") from None


def _stanzas(binary: bytes) -> tuple[int, list[str], int]:
    """The number of X25519 stanzas, the other stanzas' types, and where the payload
    starts (after the MAC line)."""
    x25519, others = 0, list[str]()
    pos = len(MAGIC)
    while True:
        end = binary.find(b"\n", pos)
        if end < 0:
            raise NotAgeFile("has a header that never ends (no `---` MAC line)")
        line = binary[pos:end]
        pos = end + 1
        if line.startswith(MAC_LINE):
            return x25519, others, pos
        if line.startswith(STANZA):
            kind = line[len(STANZA) :].split(b" ", 1)[0].decode("ascii", "replace")
            if kind == "X25519":
                x25519 += 1
            else:
                others.append(kind)
            continue
        if len(line) > 64:
            raise NotAgeFile("has a malformed header line")


def _plaintext_size(payload: int) -> int:
    body = max(payload - NONCE_BYTES, 0)
    chunks = max(-(-body // (CHUNK_BYTES + TAG_BYTES)), 1)
    return max(body - chunks * TAG_BYTES, 0)
