"""Rendering a turn for WhatsApp: pure functions, no server."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from twilio_bridge.phrases import ENGLISH, SPANISH
from twilio_bridge.rasa.turn import read_turn
from twilio_bridge.text import for_whatsapp, split_message
from twilio_bridge.whatsapp.replies import Outgoing, messaging_twiml, render_turn


def test_markdown_becomes_whatsapp_formatting() -> None:
    assert for_whatsapp("**importante** y *cursiva*, __fuerte__ y ~~tachado~~") == "*importante* y _cursiva_, *fuerte* y ~tachado~"
    assert for_whatsapp("Vea [la guía](https://ex.com/g) o https://ex.com") == "Vea la guía (https://ex.com/g) o https://ex.com"
    assert for_whatsapp("## Su tarjeta\nHola <b>cliente</b>\x00\x07") == "*Su tarjeta*\nHola cliente"
    assert for_whatsapp("2*3*4 y * viñeta") == "2*3*4 y * viñeta"  # not markdown: left alone


def test_long_text_is_split_between_paragraphs_then_sentences() -> None:
    paragraph = "Su tarjeta queda protegida mientras revisamos la cuenta. " * 20  # ~1140 characters
    pieces = split_message(f"{paragraph}\n\n{paragraph}\n\nFin.", 1600)
    assert [p.endswith(".") for p in pieces] == [True, True]
    assert pieces[1].endswith("\n\nFin.")
    huge = split_message("Una frase corta. " * 400, 1600)
    assert all(len(p) <= 1600 for p in huge) and len(huge) == 5
    assert all(p.endswith(".") for p in huge)


def test_buttons_become_a_numbered_list_and_images_media() -> None:
    turn = read_turn([{"text": "¿La bloqueo?", "buttons": [{"title": "Sí", "payload": "/affirm"},
                                                         {"title": "**No**", "payload": "/deny"}]},
                      {"image": "https://example.com/card.png"}])
    assert render_turn(turn, SPANISH, None) == [Outgoing("¿La bloqueo?\n\n1. Sí\n2. *No*"),
                                                Outgoing(media_url="https://example.com/card.png")]


def test_handoff_tells_how_to_reach_a_person_and_hangup_just_sends_the_text() -> None:
    handoff = read_turn([{"text": "Le comunico."}, {"custom": {"handoff": {"number": "+525599998888"}}}])
    assert render_turn(handoff, SPANISH, "+525511112222") == [
        Outgoing("Le comunico.\n\nPara hablar con una persona, llame al +525599998888.")]
    nobody = read_turn([{"custom": {"handoff": True}}])
    assert render_turn(nobody, ENGLISH, None) == [Outgoing("Nobody is available right now. Please try again later.")]
    hangup = read_turn([{"text": "Hasta luego."}, {"custom": {"hangup": True}}])
    assert render_turn(hangup, SPANISH, None) == [Outgoing("Hasta luego.")]


def test_twiml_has_one_message_per_body_and_media_in_its_own() -> None:
    root = ET.fromstring(str(messaging_twiml([Outgoing("Hola & adiós"), Outgoing(media_url="https://example.com/a.png")])))
    assert [m.text for m in root.findall("./Message")] == ["Hola & adiós", None]
    assert [m.text for m in root.findall("./Message/Media")] == ["https://example.com/a.png"]
