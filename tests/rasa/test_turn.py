"""Reading Rasa's reply items into one typed turn."""
from __future__ import annotations

from twilio_bridge.rasa.turn import Button, read_turn


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


def test_a_handoff_number_is_e164_to_its_last_character() -> None:
    """'$' also matches before a final newline: a number with one would reach <Dial> as it is."""
    assert read_turn([{"custom": {"handoff": {"number": "+525533334444"}}}]).handoff_number == "+525533334444"
    assert read_turn([{"custom": {"handoff": {"number": "+525533334444\n"}}}]).handoff_number is None
