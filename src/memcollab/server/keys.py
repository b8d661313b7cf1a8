"""API keys: each bound to one namespace and one scope; only a hash of the secret is stored.

A secret looks like `mck_<key id>_<token>`: the key id (16 hex characters) finds the row,
the token is 32 random bytes from `secrets` (256 bits). Only the SHA-256 digest of the
whole secret is stored and compared with `hmac.compare_digest`. A slow password hash
(bcrypt, scrypt, argon2) protects low-entropy human passwords against guessing after a
leak; these secrets are long random tokens, so a leaked digest cannot be reversed by
guessing and one SHA-256 is enough (the same reasoning as GitHub's token storage).

Scopes are ordered read < write < admin; a key may do what its scope and every lower
scope allow. Which endpoint needs which scope is listed in server/auth.py.

A key is trusted unless created untrusted (`keys create --untrusted`; the mark lives in
table `server_key_trust`, a key without a row there is trusted): what an untrusted key
adds or imports is stored quarantined, never served until released (server/guard.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import typing
from dataclasses import dataclass
from typing import Literal

from memcollab.errors import UserError
from memcollab.server.db import ServerDB

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = typing.get_args(Scope)
SCOPE_RANK: dict[str, int] = {scope: rank for rank, scope in enumerate(SCOPES)}
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A namespace name: 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit."""
_PREFIX = "mck_"
_SECRET = re.compile(r"^mck_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")


class ApiKeyError(UserError):
    """A key that cannot be created, found or used."""


class InvalidKeyError(ApiKeyError):
    """A secret that matches no live key (unknown, malformed or revoked)."""


@dataclass(frozen=True)
class KeyInfo:
    """What a key may do (never its secret)."""

    key_id: str
    namespace: str
    scope: Scope
    label: str = ""
    created_at: float = 0.0
    revoked_at: float | None = None
    trusted: bool = True

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: Scope) -> bool:
        """Whether this key's scope covers `scope` (read < write < admin)."""
        return SCOPE_RANK[self.scope] >= SCOPE_RANK[scope]


def check_namespace(namespace: str) -> str:
    """`namespace` if it is a valid name; else one clear error."""
    if not re.match(NAMESPACE_PATTERN, namespace):
        raise ApiKeyError(
            f"bad namespace {namespace!r}",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return namespace


def check_scope(scope: str) -> Scope:
    """`scope` if it is one of read, write, admin; else one clear error."""
    if scope not in SCOPE_RANK:
        raise ApiKeyError(f"unknown scope {scope!r}", f"use one of: {', '.join(SCOPES)}")
    return typing.cast(Scope, scope)


def _new_secret() -> tuple[str, str]:
    key_id = secrets.token_hex(8)
    return key_id, f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: tuple[object, ...]) -> KeyInfo:
    key_id, namespace, scope, label, created_at, revoked_at, trusted = row
    return KeyInfo(
        key_id=str(key_id),
        namespace=str(namespace),
        scope=check_scope(str(scope)),
        label=str(label),
        created_at=float(typing.cast(float, created_at)),
        revoked_at=None if revoked_at is None else float(typing.cast(float, revoked_at)),
        trusted=trusted is None or bool(trusted),
    )


_COLUMNS = "k.key_id, k.namespace, k.scope, k.label, k.created_at, k.revoked_at, t.trusted"
_FROM = "FROM server_keys k LEFT JOIN server_key_trust t ON t.key_id = k.key_id"


class KeyStore:
    """Create, verify, list and revoke API keys (table `server_keys`)."""

    def __init__(self, db: ServerDB) -> None:
        self.db = db

    def create(
        self, namespace: str, scope: str, label: str = "", *, trusted: bool = True
    ) -> tuple[str, str]:
        """A new key: returns (key id, secret). The secret is not stored; show it once.
        An untrusted key's records are quarantined (see the module docstring)."""
        check_namespace(namespace)
        check_scope(scope)
        key_id, secret = _new_secret()
        now = time.time()
        with self.db.write() as cur:
            cur.execute(
                "INSERT INTO server_keys (key_id, namespace, scope, secret_sha256, label, "
                "created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (key_id, namespace, scope, _digest(secret), label, now),
            )
            cur.execute(
                "INSERT INTO server_key_trust (key_id, trusted, at) VALUES (?, ?, ?)",
                (key_id, int(trusted), now),
            )
        return key_id, secret

    def verify(self, secret: str) -> KeyInfo:
        """The live key this secret belongs to; InvalidKeyError otherwise (one message for
        every reason, so a caller learns nothing about which part was wrong)."""
        match = _SECRET.match(secret.strip())
        rows = (
            self.db.query(
                f"SELECT {_COLUMNS}, k.secret_sha256 {_FROM} WHERE k.key_id = ?",
                (match.group(1),),
            )
            if match
            else []
        )
        # Compare against a dummy digest when there is no row, so the time taken does not
        # depend on whether the key id exists.
        stored = str(rows[0][-1]) if rows else "0" * 64
        if not hmac.compare_digest(_digest(secret.strip()), stored) or not rows:
            raise InvalidKeyError("invalid or revoked API key")
        info = _info(rows[0][:-1])
        if info.revoked:
            raise InvalidKeyError("invalid or revoked API key")
        return info

    def get(self, key_id: str) -> KeyInfo:
        """One key by id (revoked ones included); ApiKeyError when there is none."""
        rows = self.db.query(f"SELECT {_COLUMNS} {_FROM} WHERE k.key_id = ?", (key_id,))
        if not rows:
            raise ApiKeyError(f"no key with id {key_id!r}", "`memcollab keys list` shows the ids")
        return _info(rows[0])

    def revoke(self, key_id: str) -> bool:
        """Revoke a key (at once, for every process); False if it was already revoked."""
        self.get(key_id)
        with self.db.write() as cur:
            cur.execute(
                "UPDATE server_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            return cur.rowcount == 1

    def list(self, namespace: str | None = None) -> list[KeyInfo]:
        """Every key (of one namespace, or all), oldest first; never a secret."""
        where, params = ("WHERE k.namespace = ?", (namespace,)) if namespace else ("", ())
        rows = self.db.query(
            f"SELECT {_COLUMNS} {_FROM} {where} ORDER BY k.created_at, k.key_id", params
        )
        return [_info(row) for row in rows]

    def bootstrap(self, namespace: str = "default") -> tuple[str, str] | None:
        """On a database that never had a key: create one admin key for `namespace` and
        return (key id, secret); otherwise None. Done once per database (a marker row in
        `server_meta`), so two processes starting together create one key, and revoking
        every key later does not bring a bootstrap key back."""
        check_namespace(namespace)
        with self.db.write() as cur:
            cur.execute(
                "INSERT INTO server_meta (key, value) VALUES ('bootstrapped', 1) "
                "ON CONFLICT (key) DO NOTHING"
            )
            if cur.rowcount != 1:
                return None
            row = cur.execute("SELECT COUNT(*) FROM server_keys").fetchone()
            if row is not None and int(row[0]) > 0:
                return None
            key_id, secret = _new_secret()
            cur.execute(
                "INSERT INTO server_keys (key_id, namespace, scope, secret_sha256, label, "
                "created_at, revoked_at) VALUES (?, ?, 'admin', ?, 'bootstrap', ?, NULL)",
                (key_id, namespace, _digest(secret), time.time()),
            )
        return key_id, secret
