"""API keys: `dk_…` bearer tokens, stored only as SHA-256 hex digests.

A keys file holds one lowercase hex SHA-256 digest per line (`#` comments and blank lines allowed), so
a leaked keys file does not leak a usable key. `check` hashes the presented token and compares it with
every stored digest in constant time: the time taken does not depend on which digest (if any) matches
or on how much of it matches.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

KEY_PREFIX = "dk_"
KEYS_FILE_ENV = "DALSTON_KEYS_FILE"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class KeysFileError(ValueError):
    """The keys file is missing or has a line that is not a SHA-256 hex digest."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh key: `dk_` + 32 random bytes, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """The set of accepted key digests."""

    def __init__(self, digests: Iterable[str]) -> None:
        self._digests = tuple(sorted(set(digests)))

    @classmethod
    def from_file(cls, path: str | Path) -> KeyStore:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeysFileError(f"{path}: keys file not found; create one with `dalston keys create --keys-file {path}`") from None
        except OSError as exc:
            raise KeysFileError(f"{path}: cannot read keys file: {exc.strerror}") from None
        digests = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not _DIGEST.match(line):
                shown = line if len(line) <= 20 else line[:20] + "…"
                hint = " (this looks like a key itself: store hash_key(key), e.g. via `dalston keys add`)" if line.startswith(KEY_PREFIX) else ""
                raise KeysFileError(f"{path}:{number}: expected a lowercase hex SHA-256 digest (64 characters), got {shown!r}{hint}")
            digests.append(line)
        return cls(digests)

    @classmethod
    def from_env(cls, path: str | Path | None) -> KeyStore | None:
        """`path`, else $DALSTON_KEYS_FILE, else None (no keys configured)."""
        chosen = path or os.environ.get(KEYS_FILE_ENV)
        return cls.from_file(chosen) if chosen else None

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, token: str) -> bool:
        """True when `token` is a stored key. Compares against every digest, never stopping early."""
        presented = hash_key(token).encode("ascii")
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest.encode("ascii"))
        return found


def append_digest(path: str | Path, key: str, comment: str | None = None) -> None:
    """Store `key`'s digest in the keys file (created with mode 0600 when new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        if comment:
            handle.write(f"# {comment}\n")
        handle.write(hash_key(key) + "\n")
