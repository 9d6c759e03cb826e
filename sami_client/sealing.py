"""Where a secret's value is read and sealed on the client (`sami secret set|rekey`): from
stdin, a file, or a prompt (never from an argument, which `ps` and shell histories show),
encrypted with age (pyrage) to the recipients sami-control names. The value never leaves
this process in plain text."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pyrage

from sami_client.errors import UsageError

# Swarm's limit on a secret's data (sami-control refuses larger ones too).
MAX_SECRET_BYTES = 500 * 1024


def read_value(
    from_file: str | None, stdin: BinaryIO | None = None, tty: bool | None = None
) -> bytes:
    """The value to set: the file's bytes, else stdin's (as they are, a final newline
    included: `printf %s "$VALUE" | sami secret set …`), else, on a terminal, typed twice
    without echo."""
    if from_file:
        try:
            value = Path(from_file).read_bytes()
        except OSError as err:
            raise UsageError(f"--from-file: cannot read {from_file}: {err.strerror}") from None
        where = from_file
    else:
        is_tty = sys.stdin.isatty() if tty is None else tty
        if is_tty:
            return _prompt()
        value = (stdin or sys.stdin.buffer).read()
        where = "stdin"
    return _checked(value, where)


def _prompt() -> bytes:
    first = getpass.getpass("value (not shown): ")
    again = getpass.getpass("the same value again: ")
    if first != again:
        raise UsageError("the two values typed differ; nothing was set")
    return _checked(first.encode(), "the prompt")


def _checked(value: bytes, where: str) -> bytes:
    if not value:
        raise UsageError(f"the value from {where} is empty; nothing was set")
    if len(value) > MAX_SECRET_BYTES:
        raise UsageError(
            f"the value from {where} is {len(value)} bytes, more than Swarm's limit for a "
            f"secret ({MAX_SECRET_BYTES})"
        )
    return value


def seal(value: bytes, recipients: Sequence[str]) -> bytes:
    """`value` encrypted to every recipient (an age file, as `age -r … -r …` makes)."""
    try:
        keys = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
    except pyrage.RecipientError as err:
        raise UsageError(f"sami-control named a recipient that is not an age key: {err}") from None
    return bytes(pyrage.encrypt(value, keys))


def load_identities(path: str) -> list[object]:
    """The age X25519 identities (AGE-SECRET-KEY-1…) of an identity file, as `age-keygen`
    writes it (comments and blank lines skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--identity: cannot read {path}: {err}") from None
    identities = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise UsageError(
                f"--identity: {path} holds a line that is not an age X25519 identity "
                "(AGE-SECRET-KEY-1…)"
            ) from None
    if not identities:
        raise UsageError(f"--identity: {path} holds no age identity (AGE-SECRET-KEY-1…)")
    return identities


def open_sealed(ciphertext: bytes, identities: Sequence[object]) -> bytes | None:
    """The value inside, or None when none of the identities opens it."""
    try:
        return bytes(pyrage.decrypt(ciphertext, list(identities)))
    except pyrage.DecryptError:
        return None
