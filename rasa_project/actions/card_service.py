"""The card service the assistant blocks cards through.

`CARD_SERVICE_URL` set: the bank's service over HTTP (contract in README.md).
Unset: an embedded SQLite store seeded with demo cards, so the assistant works out of the box.
Both block idempotently: blocking a blocked card answers the reference it was blocked under.
"""

import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Protocol

import requests

DEFAULT_DB_PATH = Path(__file__).resolve().parent.parent / "cards.db"
DEFAULT_TIMEOUT_SECONDS = 4.0
DEMO_CARDS = (("1234", "Ana López"), ("5678", "Luis Pérez"), ("4321", "María García"))


@dataclass(frozen=True)
class BlockRequest:
    last_four: str
    caller: Optional[str] = None
    channel: Optional[str] = None
    conversation_id: Optional[str] = None


@dataclass(frozen=True)
class BlockResult:
    last_four: str
    reference: str
    already_blocked: bool


class CardServiceError(Exception):
    """The card service could not answer (down, slow, or an answer we cannot read)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class CardNotFound(Exception):
    """No card of this customer ends in these digits."""

    def __init__(self, last_four: str) -> None:
        super().__init__("no card ends in the given digits")
        self.last_four = last_four


class CardService(Protocol):
    def block(self, request: BlockRequest) -> BlockResult: ...


class HttpCardService:
    """`POST {base_url}/cards/{last_four}/block` with a JSON body; one session, a timeout on every call.

    Blocking is not retried here: the caller is waiting on the phone, and a hand-off beats a long silence.
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 session: Optional[requests.Session] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def block(self, request: BlockRequest) -> BlockResult:
        answer = self._post(request, "block")
        if "reference" not in answer:
            raise CardServiceError("card service answered something unreadable", status=200)
        return BlockResult(
            last_four=request.last_four,
            reference=str(answer["reference"]),
            already_blocked=bool(answer.get("already_blocked", False)),
        )

    def _post(self, request: BlockRequest, what: str) -> Dict[str, Any]:
        """`POST …/cards/{last_four}/{what}` (block, unblock, replacement): the JSON object it answered
        ({} for any other JSON). CardNotFound on 404; CardServiceError when down, refusing or unreadable."""
        url = f"{self.base_url}/cards/{request.last_four}/{what}"
        body = {"caller": request.caller, "channel": request.channel, "conversation_id": request.conversation_id}
        try:
            reply = self.session.post(url, json=body, timeout=self.timeout)
        except requests.RequestException as error:
            raise CardServiceError(f"card service unreachable: {type(error).__name__}") from error
        if reply.status_code == 404:
            raise CardNotFound(request.last_four)
        if reply.status_code != 200:
            raise CardServiceError(f"card service refused the {what}", status=reply.status_code)
        try:
            answer = reply.json()
        except ValueError as error:
            raise CardServiceError("card service answered something unreadable", status=200) from error
        return answer if isinstance(answer, dict) else {}


class SqliteCardService:
    """Demo cards in one SQLite file; safe for the action server's threads and for several processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 5000")
        return connection

    def _ensure_schema(self) -> None:
        with self._lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._connect()
            try:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS cards ("
                    " last_four TEXT PRIMARY KEY, holder TEXT NOT NULL,"
                    " status TEXT NOT NULL DEFAULT 'active', reference TEXT)"
                )
                connection.executemany(
                    "INSERT OR IGNORE INTO cards (last_four, holder) VALUES (?, ?)", DEMO_CARDS
                )
            finally:
                connection.close()
            self._ready = True

    def block(self, request: BlockRequest) -> BlockResult:
        try:
            self._ensure_schema()
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")
                row = connection.execute(
                    "SELECT status, reference FROM cards WHERE last_four = ?", (request.last_four,)
                ).fetchone()
                if row is None:
                    connection.execute("ROLLBACK")
                    raise CardNotFound(request.last_four)
                status, reference = row
                if status == "blocked":
                    connection.execute("COMMIT")
                    return BlockResult(request.last_four, reference, already_blocked=True)
                reference = f"{secrets.randbelow(10**8):08d}"
                connection.execute(
                    "UPDATE cards SET status = 'blocked', reference = ? WHERE last_four = ?",
                    (reference, request.last_four),
                )
                connection.execute("COMMIT")
                return BlockResult(request.last_four, reference, already_blocked=False)
            finally:
                connection.close()
        except sqlite3.Error as error:
            raise CardServiceError(f"card store failed: {type(error).__name__}") from error


def card_service_from_env(environ: Mapping[str, str] = os.environ) -> CardService:
    """The HTTP service when `CARD_SERVICE_URL` is set, otherwise the embedded demo store."""
    url = environ.get("CARD_SERVICE_URL", "").strip()
    if url:
        timeout = float(environ.get("CARD_SERVICE_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
        return HttpCardService(url, timeout=timeout)
    return SqliteCardService(Path(environ.get("CARD_SERVICE_DB", "") or DEFAULT_DB_PATH))
