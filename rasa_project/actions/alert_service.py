"""What answering a card alert needs from the card service besides blocking: unblocking a card, and ordering a
new one for a card that stays blocked. Both are idempotent, like blocking.

`CARD_SERVICE_URL` set: over HTTP (contract in README.md, "Card alerts"); unset: the embedded demo store.
"""

import os
import secrets
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from actions.card_service import (
    DEFAULT_DB_PATH,
    DEFAULT_TIMEOUT_SECONDS,
    BlockRequest,
    CardNotFound,
    CardServiceError,
    HttpCardService,
    SqliteCardService,
)


class AlertCardService(Protocol):
    def block(self, request: BlockRequest) -> Any: ...
    def unblock(self, request: BlockRequest) -> None: ...
    def order_replacement(self, request: BlockRequest) -> str:
        """A new card for a blocked one; the order's reference."""


class HttpAlertService(HttpCardService):
    """`POST {base_url}/cards/{last_four}/unblock` and `…/replacement`, with the same body and answers as a block."""

    def unblock(self, request: BlockRequest) -> None:
        self._post(request, "unblock")

    def order_replacement(self, request: BlockRequest) -> str:
        answer = self._post(request, "replacement")
        reference = answer.get("reference")
        if not reference:
            raise CardServiceError("card service answered a replacement without a reference", status=200)
        return str(reference)


class SqliteAlertService(SqliteCardService):
    """The demo store: unblocking makes the card active again; a replacement is ordered once per card."""

    def unblock(self, request: BlockRequest) -> None:
        with self._write() as connection:
            self._existing(connection, request.last_four)
            connection.execute("UPDATE cards SET status = 'active', reference = NULL WHERE last_four = ?",
                               (request.last_four,))

    def order_replacement(self, request: BlockRequest) -> str:
        with self._write() as connection:
            self._existing(connection, request.last_four)
            connection.execute("CREATE TABLE IF NOT EXISTS replacements (last_four TEXT PRIMARY KEY,"
                               " reference TEXT NOT NULL)")
            connection.execute("INSERT OR IGNORE INTO replacements (last_four, reference) VALUES (?, ?)",
                               (request.last_four, f"{secrets.randbelow(10**8):08d}"))
            row = connection.execute("SELECT reference FROM replacements WHERE last_four = ?",
                                     (request.last_four,)).fetchone()
            return str(row[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write: committed, or rolled back by closing (CardNotFound included); a store failure is a service error."""
        try:
            self._ensure_schema()
            connection = self._connect()
        except sqlite3.Error as error:
            raise CardServiceError(f"card store failed: {type(error).__name__}") from error
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise CardServiceError(f"card store failed: {type(error).__name__}") from error
        finally:
            connection.close()

    @staticmethod
    def _existing(connection: sqlite3.Connection, last_four: str) -> None:
        if connection.execute("SELECT 1 FROM cards WHERE last_four = ?", (last_four,)).fetchone() is None:
            raise CardNotFound(last_four)


def alert_service_from_env(environ: Mapping[str, str] = os.environ) -> AlertCardService:
    """The same choice as `card_service_from_env`: HTTP when `CARD_SERVICE_URL` is set, else the demo store."""
    url = environ.get("CARD_SERVICE_URL", "").strip()
    if url:
        return HttpAlertService(url, timeout=float(environ.get("CARD_SERVICE_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)))
    return SqliteAlertService(Path(environ.get("CARD_SERVICE_DB", "") or DEFAULT_DB_PATH))
