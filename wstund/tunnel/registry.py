"""Registered tunnel clients in SQLite under the state directory; secrets kept only as hashes.

Statistics (last_seen, bytes, request counts) change on every request, so they live in memory
and reach the database in batches (``flush``); registrations are written at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

CLIENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DB_NAME = "tunnel.sqlite3"

# Schema migrations, applied in order; PRAGMA user_version counts the ones done.
MIGRATIONS = (
    """
    CREATE TABLE clients (
        id          TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        created_at  REAL NOT NULL,
        last_seen   REAL,
        node        TEXT,
        bytes_in    INTEGER NOT NULL DEFAULT 0,
        bytes_out   INTEGER NOT NULL DEFAULT 0,
        requests    INTEGER NOT NULL DEFAULT 0
    )
    """,
    # MoosicBox-compatible clients (wstund.moosicbox): every token kept as its SHA-256 hex.
    """
    CREATE TABLE moosicbox_tokens (
        token_hash TEXT PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('access', 'signature', 'magic')),
        client_id  TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires    REAL
    );
    CREATE INDEX moosicbox_tokens_client ON moosicbox_tokens (client_id, kind)
    """,
)


class ClientExists(Exception):
    """A client with this id is already registered."""


class InvalidClientId(ValueError):
    """The id does not match ``[a-z0-9][a-z0-9-]{0,62}``."""


def valid_client_id(client_id: str) -> bool:
    """Whether ``client_id`` is a well-formed client id (also usable as a DNS label)."""
    return CLIENT_ID_RE.fullmatch(client_id) is not None


def hash_secret(secret: str) -> bytes:
    """The SHA-256 digest stored in place of a secret."""
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass
class ClientRecord:
    """One registered client with its statistics (in memory; flushed to SQLite)."""

    id: str
    secret_hash: bytes
    created_at: float
    last_seen: float | None = None
    node: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    dirty: bool = field(default=False, compare=False)


class Registry:
    """The tunnel clients of one daemon, cached in memory, persisted in ``tunnel.sqlite3``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._closed = False
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        migrate(self._db)
        self._clients: dict[str, ClientRecord] = {}
        self.moosicbox = MoosicBoxTokens(self._db)
        rows = self._db.execute(
            "SELECT id, secret_hash, created_at, last_seen, node, bytes_in, bytes_out, requests"
            " FROM clients"
        )
        for row in rows:
            record = ClientRecord(*row)
            record.node = None  # nothing is connected to a daemon that just started
            self._clients[record.id] = record

    def close(self) -> None:
        """Write pending statistics and close the database (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._db.close()

    def get(self, client_id: str) -> ClientRecord | None:
        """The client with this id, or None."""
        return self._clients.get(client_id)

    def all(self) -> list[ClientRecord]:
        """Every client, by id."""
        return [self._clients[key] for key in sorted(self._clients)]

    def add(self, client_id: str) -> str:
        """Register a client; return its secret (shown once, stored only as a hash)."""
        if not valid_client_id(client_id):
            raise InvalidClientId(client_id)
        if client_id in self._clients:
            raise ClientExists(client_id)
        secret = new_secret()
        record = ClientRecord(client_id, hash_secret(secret), time.time())
        self._db.execute(
            "INSERT INTO clients (id, secret_hash, created_at) VALUES (?, ?, ?)",
            (record.id, record.secret_hash, record.created_at),
        )
        self._clients[client_id] = record
        return secret

    def remove(self, client_id: str) -> bool:
        """Forget a client; False if it was unknown."""
        if self._clients.pop(client_id, None) is None:
            return False
        self._db.execute("DELETE FROM clients WHERE id = ?", (client_id,))
        return True

    def rotate(self, client_id: str) -> str:
        """Give a client a new secret (the old one stops working); KeyError if unknown."""
        record = self._clients[client_id]
        secret = new_secret()
        record.secret_hash = hash_secret(secret)
        self._db.execute(
            "UPDATE clients SET secret_hash = ? WHERE id = ?", (record.secret_hash, client_id)
        )
        return secret

    def put(self, client_id: str, secret_hash: bytes, created_at: float) -> None:
        """Register or update a client from another node's registration (its secret's hash)."""
        record = self._clients.get(client_id)
        if record is not None and record.secret_hash == secret_hash:
            return
        self._db.execute(
            "INSERT INTO clients (id, secret_hash, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET secret_hash = excluded.secret_hash",
            (client_id, secret_hash, created_at),
        )
        if record is None:
            self._clients[client_id] = ClientRecord(client_id, secret_hash, created_at)
        else:
            record.secret_hash = secret_hash

    def verify(self, client_id: str, secret: str) -> bool:
        """Whether ``secret`` is the client's secret (constant-time on the digests)."""
        record = self._clients.get(client_id)
        expected = record.secret_hash if record is not None else hash_secret("\0unknown")
        return hmac.compare_digest(hash_secret(secret), expected) and record is not None

    def flush(self) -> None:
        """Write the statistics that changed since the last flush, in one transaction."""
        dirty = [record for record in self._clients.values() if record.dirty]
        if not dirty or self._closed:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE clients SET last_seen = ?, node = ?, bytes_in = ?, bytes_out = ?,"
                " requests = ? WHERE id = ?",
                [(r.last_seen, r.node, r.bytes_in, r.bytes_out, r.requests, r.id) for r in dirty],
            )
        for record in dirty:
            record.dirty = False


MOOSICBOX_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SIGNATURE_LIFETIME = 14 * 24 * 3600.0  # seconds, as MoosicBox's tunnel server
TokenKind = Literal["access", "signature", "magic"]


def valid_moosicbox_id(client_id: str) -> bool:
    """Whether ``client_id`` can name a MoosicBox client (MoosicBox servers use UUIDs)."""
    return MOOSICBOX_ID_RE.fullmatch(client_id) is not None


def token_hash(token: str) -> str:
    """The lowercase hex SHA-256 a MoosicBox token is stored as."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRow(NamedTuple):
    """One stored MoosicBox token: its hash, kind, client, creation and expiry times."""

    token_hash: str
    kind: str
    client_id: str
    created_at: float
    expires: float | None


class MoosicBoxTokens:
    """MoosicBox clients' access, signature and magic tokens, stored only as hashes.

    A client exists while it has an access token. Access and magic tokens never expire;
    signature tokens expire after 14 days; every call mints a new token, old ones stay valid
    (as MoosicBox's tunnel server) until the client is removed or rotated.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def mint(self, kind: TokenKind, client_id: str, token: str | None = None, keep: int = 0) -> str:
        """Store a new token of ``kind`` for ``client_id`` and return it (a fresh UUID v4);
        with ``keep``, only the newest ``keep`` tokens of that kind stay (expired ones go)."""
        token = token or str(uuid.uuid4())
        now = time.time()
        expires = now + SIGNATURE_LIFETIME if kind == "signature" else None
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO moosicbox_tokens"
                " (token_hash, kind, client_id, created_at, expires) VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), kind, client_id, now, expires),
            )
            if keep:
                self._db.execute(
                    "DELETE FROM moosicbox_tokens WHERE client_id = ? AND kind = ? AND"
                    " (expires < ? OR token_hash NOT IN (SELECT token_hash FROM moosicbox_tokens"
                    " WHERE client_id = ? AND kind = ? ORDER BY created_at DESC LIMIT ?))",
                    (client_id, kind, now, client_id, kind, keep),
                )
        return token

    def put(self, row: TokenRow) -> None:
        """Keep a copy of a token another node issued (the cluster's registry is the original)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO moosicbox_tokens"
                " (token_hash, kind, client_id, created_at, expires) VALUES (?, ?, ?, ?, ?)",
                tuple(row),
            )

    def forget(self, hashed: str) -> None:
        """Drop the copy of a token the cluster no longer knows (revoked on another node)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM moosicbox_tokens WHERE token_hash = ?", (hashed,))

    def rows(self) -> list[TokenRow]:
        """Every stored token (hashes only), as the cluster's registry holds them."""
        rows = self._db.execute(
            "SELECT token_hash, kind, client_id, created_at, expires FROM moosicbox_tokens"
        )
        return [TokenRow(*row) for row in rows]

    def replace_all(self, rows: list[TokenRow]) -> None:
        """Make the copy exactly ``rows`` (the cluster's word, after linking up)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM moosicbox_tokens")
            self._db.executemany(
                "INSERT OR REPLACE INTO moosicbox_tokens"
                " (token_hash, kind, client_id, created_at, expires) VALUES (?, ?, ?, ?, ?)",
                [tuple(row) for row in rows],
            )

    def client_of(self, kind: TokenKind, token: str | None) -> str | None:
        """The client a valid token of ``kind`` belongs to, or None."""
        if not token:
            return None
        row = self._db.execute(
            "SELECT client_id FROM moosicbox_tokens WHERE token_hash = ? AND kind = ?"
            " AND (expires IS NULL OR expires >= ?)",
            (token_hash(token), kind, time.time()),
        ).fetchone()
        return str(row[0]) if row else None

    def check(self, kind: TokenKind, client_id: str | None, token: str | None) -> bool:
        """Whether ``token`` is a valid token of ``kind`` for ``client_id``."""
        return client_id is not None and self.client_of(kind, token) == client_id

    def exists(self, client_id: str) -> bool:
        """Whether ``client_id`` is registered (has an access token)."""
        row = self._db.execute(
            "SELECT 1 FROM moosicbox_tokens WHERE client_id = ? AND kind = 'access' LIMIT 1",
            (client_id,),
        ).fetchone()
        return row is not None

    def clients(self) -> list[dict[str, object]]:
        """Every registered client: id, first registration, live token counts."""
        rows = self._db.execute(
            "SELECT client_id, MIN(created_at),"
            " SUM(kind = 'access'), SUM(kind = 'signature' AND expires >= ?), SUM(kind = 'magic')"
            " FROM moosicbox_tokens GROUP BY client_id HAVING SUM(kind = 'access') > 0"
            " ORDER BY client_id",
            (time.time(),),
        )
        return [
            {
                "id": row[0],
                "created_at": row[1],
                "access_tokens": row[2],
                "signature_tokens": row[3],
                "magic_tokens": row[4],
            }
            for row in rows
        ]

    def remove(self, client_id: str) -> bool:
        """Forget every token of ``client_id``; False if it was not registered."""
        known = self.exists(client_id)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM moosicbox_tokens WHERE client_id = ?", (client_id,))
        return known

    def rotate(self, client_id: str) -> str:
        """Replace every token of ``client_id`` with one new access token; KeyError if unknown."""
        if not self.exists(client_id):
            raise KeyError(client_id)
        self.remove(client_id)
        return self.mint("access", client_id)


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to date (idempotent)."""
    done = int(db.execute("PRAGMA user_version").fetchone()[0])
    for version, statement in enumerate(MIGRATIONS[done:], start=done + 1):
        with db:
            db.execute("BEGIN")
            for part in statement.split(";"):
                db.execute(part)
            db.execute(f"PRAGMA user_version = {version}")
