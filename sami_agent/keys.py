"""The agent's age key: the private half of what opens its cluster's secrets (docs/secrets.md).

The key file is an age identity file, as `age-keygen` writes it (and `age -d -i FILE` reads
it): comment lines, then one `AGE-SECRET-KEY-1…` line. The agent sends the public half (its
recipient, `age1…`) in Hello; clients encrypt secrets to the recipients of the cluster, and
the agent decrypts the ciphertexts of its assignments in memory with the identity.

Several agents of one cluster may share one key (copy the file to each host) or each have
its own (each registers its recipient; a secret is encrypted to all of them).

The file is created with mode 0600 in a folder created 0700, and a file that group or others
may read is refused: whoever reads it reads every secret of the cluster.
"""

from __future__ import annotations

import datetime
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyrage

__all__ = [
    "AgentKey",
    "KeyFileError",
    "default_key_file",
    "generate_key_file",
    "load_key_file",
    "load_or_create_key_file",
]

KEY_FILE_NAME = "age-key.txt"


class KeyFileError(Exception):
    """The key file cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class AgentKey:
    """The identities of a key file (the first one's recipient is this agent's)."""

    path: str
    # Never in a repr (logs): str() of an identity is the private key.
    identities: tuple[pyrage.x25519.Identity, ...] = field(repr=False)

    @property
    def recipient(self) -> str:
        return str(self.identities[0].to_public())

    def decrypt(self, ciphertext: bytes) -> bytes:
        """The plaintext, in memory; pyrage.DecryptError when no identity opens it."""
        return bytes(pyrage.decrypt(ciphertext, list(self.identities)))


def default_key_file(environ: Mapping[str, str] | None = None) -> str:
    """Where the agent keeps its key without --key-file or SAMI_KEY_FILE: in its state
    folder, `/var/lib/sami-agent/` for root, else `$XDG_STATE_HOME/sami-agent/` (by
    default `~/.local/state/sami-agent/`)."""
    env = os.environ if environ is None else environ
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        folder = Path("/var/lib/sami-agent")
    else:
        state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
        folder = Path(state) / "sami-agent"
    return str(folder / KEY_FILE_NAME)


def generate_key_file(path: str, *, force: bool = False) -> AgentKey:
    """Write a new identity to `path` (0600; its folder created 0700 when missing).

    Refuses to replace an existing file unless `force`: the secrets encrypted to the old key
    would no longer open on this host. The file is written beside and renamed into place,
    so a reader never sees half a key."""
    target = Path(path)
    if target.exists() and not force:
        raise KeyFileError(
            f"the key file {path} already exists; pass --force to replace it (secrets"
            " encrypted to its recipient will no longer open on this host)"
        )
    if target.is_dir():
        raise KeyFileError(f"the key file {path} is a folder")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create the folder of the key file {path}: {exc.strerror}"
        ) from None
    text, _ = new_key_text()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".age-key-", dir=target.parent)  # mode 0600
    except OSError as exc:
        raise KeyFileError(f"cannot write the key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise KeyFileError(f"cannot write the key file {path}: {exc.strerror}") from None
    return AgentKey(str(target), _identities(str(target), text.encode()))


def new_key_text() -> tuple[str, str]:
    """A new identity as an age identity file's text (as `age-keygen` writes it), and its
    recipient."""
    identity = pyrage.x25519.Identity.generate()
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    recipient = str(identity.to_public())
    return f"# created: {created}\n# public key: {recipient}\n{identity}\n", recipient


def load_key_file(path: str) -> AgentKey:
    """The identities of `path`; KeyFileError (naming the file) when it is missing, readable
    by group or others, or holds no age X25519 identity."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"the key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"the key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"the key file {path} may be read by other users (mode"
            f" {stat.S_IMODE(info.st_mode):04o}); it opens every secret of the cluster:"
            f" run `chmod 600 {path}` (mounted as a Swarm secret: give it `mode: 0400` and"
            " the agent's uid)"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    return AgentKey(path, _identities(path, data))


def _identities(path: str, data: bytes) -> tuple[pyrage.x25519.Identity, ...]:
    not_identity = (
        f"the key file {path} is not an age identity file (expected `AGE-SECRET-KEY-1…`"
        " lines, as `sami-agent keygen` or `age-keygen` write them)"
    )
    if len(data) > 64 * 1024:
        raise KeyFileError(not_identity)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(not_identity) from None
    identities: list[pyrage.x25519.Identity] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            # The line is not quoted back: it may be a key with a typo.
            raise KeyFileError(f"{not_identity}: line {number} is not one") from None
    if not identities:
        raise KeyFileError(not_identity)
    return tuple(identities)


def load_or_create_key_file(path: str) -> tuple[AgentKey, bool]:
    """The key of `path`, created first when the file does not exist; True when created."""
    if not os.path.lexists(path):
        return generate_key_file(path), True
    return load_key_file(path), False
