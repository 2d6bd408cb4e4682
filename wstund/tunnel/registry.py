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
from dataclasses import dataclass, field
from pathlib import Path

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


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to date (idempotent)."""
    done = int(db.execute("PRAGMA user_version").fetchone()[0])
    for version, statement in enumerate(MIGRATIONS[done:], start=done + 1):
        with db:
            db.execute("BEGIN")
            db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
