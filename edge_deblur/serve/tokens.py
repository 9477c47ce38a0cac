"""Bearer tokens: created once, stored only as salted hashes, revoked by name.

A token is 32 random bytes from the OS (``secrets``), shown to its owner once. The file keeps
``sha256(salt || token)`` with a per-token 16-byte salt. A slow password hash (scrypt, argon2)
exists to make guessing a *low-entropy* secret expensive; guessing a 256-bit random token is out of
reach at any hash speed, so a fast hash loses nothing and keeps the check on every request in
microseconds. Comparison is constant-time (``hmac.compare_digest``).

The file is JSON, written atomically with mode 0600; a running server re-reads it when it changes,
so ``edge-deblur token revoke`` takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeDeblurError
from ..images import AtomicFile
from .protocol import ProtocolError

TOKEN_BYTES = 32
_PREFIX = "edb_"  # says what the string is when it turns up in a log or a shell history


@dataclass(frozen=True)
class TokenRecord:
    name: str
    salt: str  # hex
    digest: str  # hex sha256(salt || token)
    created: float
    revoked: float | None = None

    def matches(self, token: str) -> bool:
        digest = hashlib.sha256(bytes.fromhex(self.salt) + token.encode()).hexdigest()
        return hmac.compare_digest(digest, self.digest)


def read_tokens(path: str | os.PathLike) -> list[TokenRecord]:
    path = Path(path)
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        return [TokenRecord(**r) for r in doc["tokens"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgeDeblurError(f"{path}: not a token file: {e}") from e


def _write_tokens(path: Path, records: list[TokenRecord]) -> None:
    doc = {"version": 1, "hash": "sha256(salt||token)", "tokens": [r.__dict__ for r in records]}
    with AtomicFile(path) as temp:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)


def add_token(path: str | os.PathLike, name: str) -> str:
    """Create a token for ``name``, store its hash in ``path``, return the token (shown once)."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise EdgeDeblurError(f"token name {name!r}: use letters, digits, '-', '_' or '.'")
    records = read_tokens(path)
    if any(r.name == name and r.revoked is None for r in records):
        raise EdgeDeblurError(f"{path}: a token named {name!r} exists; revoke it first")
    token = _PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    salt = secrets.token_bytes(16)
    records.append(TokenRecord(name, salt.hex(), hashlib.sha256(salt + token.encode()).hexdigest(), time.time()))
    _write_tokens(Path(path), records)
    return token


def revoke_token(path: str | os.PathLike, name: str) -> int:
    """Revoke every live token named ``name``; how many. Revoked hashes stay so the server can say
    403 (revoked) rather than 401 (unknown)."""
    records = read_tokens(path)
    now, count = time.time(), 0
    for i, r in enumerate(records):
        if r.name == name and r.revoked is None:
            records[i] = TokenRecord(r.name, r.salt, r.digest, r.created, now)
            count += 1
    if not count:
        raise EdgeDeblurError(f"{path}: no live token named {name!r}")
    _write_tokens(Path(path), records)
    return count


class TokenAuth:
    """Checks ``Authorization: Bearer TOKEN`` against a token file, re-read when it changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise EdgeDeblurError(f"{self.path}: token file not found (make one with: edge-deblur token add NAME --tokens {self.path})")
        self._lock = threading.Lock()
        self._stamp = None
        self._records: list[TokenRecord] = []
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None  # a file gone away keeps the tokens last read, rather than opening the server
        if stamp is not None and stamp != self._stamp:
            with self._lock:
                self._records = read_tokens(self.path)
                self._stamp = stamp

    def check(self, authorization: str | None) -> str:
        """The token's name; ProtocolError 401 without a valid bearer token, 403 for a revoked one."""
        if not authorization:
            raise ProtocolError("missing 'Authorization: Bearer TOKEN'", status=401)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProtocolError("the Authorization header must be 'Bearer TOKEN'", status=401)
        self._reload()
        token = token.strip()
        for r in self._records:
            if r.matches(token):
                if r.revoked is not None:
                    raise ProtocolError(f"token '{r.name}' has been revoked", status=403)
                return r.name
        raise ProtocolError("unknown token", status=401)
