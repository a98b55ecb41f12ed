"""Fetching a voice note's audio from Twilio's API: whatever its headers say, the bytes or an Unheard."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from twilio_bridge.whatsapp.voice_notes import MediaFetcher, Unheard

AUDIO = b"OggS" + bytes(200)


@pytest.fixture
def media_api(request: pytest.FixtureRequest) -> Iterator[str]:
    """Twilio's media endpoint as one raw HTTP/1.0 answer with the Content-Length header given (as the
    test's parameter), written byte for byte; its origin."""
    listener = socket.create_server(("127.0.0.1", 0))
    head = f"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\nContent-Length: {request.param}\r\n\r\n"

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(head.encode("latin-1") + AUDIO)

    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        server.join(timeout=5)


@pytest.mark.parametrize("media_api", ["²", "¹²", "-1", ""], indirect=True)
def test_a_content_length_that_is_no_number_is_read_to_the_limit_not_a_crash(media_api: str) -> None:
    fetcher = MediaFetcher(media_api, "AC" + "0" * 32, "token", limit=10_000)
    assert fetcher.fetch(media_api + "/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1") == AUDIO


@pytest.mark.parametrize("media_api", ["99999", "9" * 5000], indirect=True)  # past what int() reads
def test_a_content_length_past_the_limit_is_refused_before_reading(media_api: str) -> None:
    fetcher = MediaFetcher(media_api, "AC" + "0" * 32, "token", limit=10_000)
    with pytest.raises(Unheard, match="too_big"):
        fetcher.fetch(media_api + "/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1")
