"""Text hygiene: what reaches Rasa, a speaker and the logs."""
from __future__ import annotations

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
