import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from actions.card_service import (
    BlockRequest,
    CardNotFound,
    CardServiceError,
    HttpCardService,
    SqliteCardService,
    card_service_from_env,
)


def test_demo_store_blocks_a_seeded_card_with_an_eight_digit_reference(tmp_path: Path) -> None:
    result = SqliteCardService(tmp_path / "cards.db").block(BlockRequest("1234"))
    assert result.last_four == "1234"
    assert len(result.reference) == 8 and result.reference.isdigit()
    assert result.already_blocked is False


def test_blocking_twice_answers_the_same_reference(tmp_path: Path) -> None:
    store = SqliteCardService(tmp_path / "cards.db")
    first = store.block(BlockRequest("5678"))
    again = SqliteCardService(tmp_path / "cards.db").block(BlockRequest("5678"))
    assert again.reference == first.reference
    assert again.already_blocked is True


def test_concurrent_blocks_of_one_card_agree_on_the_reference(tmp_path: Path) -> None:
    store = SqliteCardService(tmp_path / "cards.db")
    references: List[str] = []
    threads = [
        threading.Thread(target=lambda: references.append(store.block(BlockRequest("4321")).reference))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(references) == 8 and len(set(references)) == 1


def test_unknown_card_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(CardNotFound):
        SqliteCardService(tmp_path / "cards.db").block(BlockRequest("0000"))


def test_unusable_store_is_a_service_error(tmp_path: Path) -> None:
    (tmp_path / "cards.db").mkdir()
    with pytest.raises(CardServiceError):
        SqliteCardService(tmp_path / "cards.db").block(BlockRequest("1234"))


class FakeCardService(BaseHTTPRequestHandler):
    """The bank's card service as README.md describes it; behaviour chosen per card."""

    received: List[Tuple[str, Dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, body))
        last_four = self.path.split("/")[2]
        if last_four == "9999":
            time.sleep(1.0)
        if last_four == "0000":
            self._answer(404, {"error": "card not found"})
        elif last_four == "5000":
            self._answer(503, {"error": "maintenance"})
        elif last_four == "7777":
            self._answer(200, {"status": "blocked"})
        else:
            self._answer(200, {"last_four": last_four, "reference": "12345678", "already_blocked": True})

    def _answer(self, status: int, body: Dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def card_service_url() -> Iterator[str]:
    FakeCardService.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCardService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_http_service_posts_the_contract_and_reads_the_reference(card_service_url: str) -> None:
    service = HttpCardService(card_service_url, timeout=2)
    result = service.block(BlockRequest("1234", caller="+525512345678", channel="voice", conversation_id="CA1"))
    assert (result.reference, result.already_blocked) == ("12345678", True)
    assert FakeCardService.received == [
        ("/cards/1234/block", {"caller": "+525512345678", "channel": "voice", "conversation_id": "CA1"})
    ]


@pytest.mark.parametrize("last_four, error", [("0000", CardNotFound), ("5000", CardServiceError),
                                              ("7777", CardServiceError), ("9999", CardServiceError)])
def test_http_service_failures(card_service_url: str, last_four: str, error: type) -> None:
    with pytest.raises(error):
        HttpCardService(card_service_url, timeout=0.5).block(BlockRequest(last_four))


def test_http_service_unreachable_is_a_service_error() -> None:
    with pytest.raises(CardServiceError):
        HttpCardService("http://127.0.0.1:9", timeout=0.5).block(BlockRequest("1234"))


def test_service_is_chosen_from_the_environment(tmp_path: Path) -> None:
    remote = card_service_from_env({"CARD_SERVICE_URL": "http://cards.internal", "CARD_SERVICE_TIMEOUT": "2.5"})
    assert isinstance(remote, HttpCardService) and remote.timeout == 2.5
    local = card_service_from_env({"CARD_SERVICE_DB": str(tmp_path / "x.db")})
    assert isinstance(local, SqliteCardService) and local.path == tmp_path / "x.db"
