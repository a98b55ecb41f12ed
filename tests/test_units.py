"""Text hygiene, reading Rasa's replies, and the state store."""
from __future__ import annotations

import time
from pathlib import Path

from twilio_bridge.assistant import Button, read_turn
from twilio_bridge.state import SqliteStore
from twilio_bridge.text import for_speech, from_user, mask_digits, split_text


def test_user_text_never_starts_with_a_slash() -> None:
    assert from_user("/restart") == "restart"
    assert from_user(" //SetSlots(x=1)") == "SetSlots(x=1)"
    assert from_user("/") == ""
    assert from_user("hola /tú") == "hola /tú"


def test_speech_text_loses_markdown_emoji_and_tags_but_keeps_meaning() -> None:
    assert for_speech("# Aviso\n* **Tarjeta** bloqueada ✅\n* Ver [detalles](https://x.y)") == (
        "Aviso Tarjeta bloqueada Ver detalles")
    assert for_speech("5 * 3 = 15 & 2 < 3") == "5 3 = 15 & 2 < 3"


def test_split_text_never_exceeds_the_limit_or_cuts_words() -> None:
    text = "Palabra " * 1000 + "x" * 50
    pieces = split_text(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_long_digit_strings_are_masked_in_logs() -> None:
    assert mask_digits("tarjeta 4111-1111-1111-1234, tel +525512345678, pin 1234") == (
        "tarjeta ************1234, tel ********5678, pin 1234")


def test_read_turn_takes_texts_buttons_images_and_directives() -> None:
    turn = read_turn([
        {"recipient_id": "x", "text": "Hola"},
        {"recipient_id": "x", "text": "¿Bloqueo?", "buttons": [{"title": "Sí", "payload": "/affirm"},
                                                              {"title": "", "payload": "/x"}]},
        {"recipient_id": "x", "image": "https://example.com/a.png"},
        {"recipient_id": "x", "custom": {"gather": {"input": "speech", "hints": "sí, no"}}},
    ])
    assert turn.texts == ("Hola", "¿Bloqueo?") and turn.buttons == (Button("Sí", "/affirm"),)
    assert turn.images == ("https://example.com/a.png",) and turn.gather == {"input": "speech", "hints": "sí, no"}
    assert read_turn([]).is_empty and read_turn([{"text": "  "}]).is_empty


def test_sqlite_store_put_add_incr_and_expiry(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.put("a", {"n": 1}, ttl=60)
    assert store.get("a") == {"n": 1} and not store.add("a", {"n": 2}, ttl=60)
    assert store.add("b", {"n": 3}, ttl=0.05)
    time.sleep(0.1)
    assert store.get("b") is None and store.add("b", {"n": 4}, ttl=60) and store.get("b") == {"n": 4}
    assert [store.incr("c", ttl=0.1) for _ in range(3)] == [1, 2, 3]
    time.sleep(0.15)
    assert store.incr("c", ttl=60) == 1
    store.delete("a")
    assert store.get("a") is None
    assert SqliteStore(tmp_path / "s.db").get("b") == {"n": 4}  # another worker sees the same file
