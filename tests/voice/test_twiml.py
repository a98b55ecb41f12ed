"""Rendering is pure: the assistant's turn in, a TwiML document out, checked as Twilio would parse it."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from twilio_bridge.phrases import ENGLISH, SPANISH
from twilio_bridge.rasa.turn import AssistantTurn, Button, read_turn
from twilio_bridge.testing.phone import Answer, check_voice_answer
from twilio_bridge.voice import twiml
from twilio_bridge.voice.twiml import Voice, turn_response

VOICE = Voice("es-MX", "Polly.Mia", SPANISH)


def parse(response: object) -> ET.Element:
    body = str(response)
    return check_voice_answer(Answer("test", 200, 0.0, body), "text/xml")


def test_replies_are_spoken_inside_the_gather_with_voice_and_language() -> None:
    root = parse(turn_response(AssistantTurn(texts=("Hola.", "¿Qué necesita?")), VOICE, None))
    gather = root.find("Gather")
    assert gather is not None and gather.get("action") == "/webhook/twilio/speech"
    assert gather.get("actionOnEmptyResult") == "true" and gather.get("input") == "dtmf speech"
    assert [(s.text, s.get("voice"), s.get("language")) for s in gather.iter("Say")] == [
        ("Hola.", "Polly.Mia", "es-MX"), ("¿Qué necesita?", "Polly.Mia", "es-MX")]


def test_buttons_become_a_spoken_menu_and_speech_hints() -> None:
    turn = AssistantTurn(texts=("¿La bloqueo?",), buttons=(Button("Sí", "/affirm"), Button("No", "/deny")))
    gather = parse(turn_response(turn, VOICE, None)).find("Gather")
    assert [s.text for s in gather.iter("Say")][-1] == "Diga o marque 1 para Sí, 2 para No."
    assert gather.get("hints") == "Sí, No"
    english = parse(turn_response(turn, Voice("en-US", "Polly.Joanna", ENGLISH), None)).find("Gather")
    assert [s.text for s in english.iter("Say")][-1] == "Say or press 1 for Sí, 2 for No."


def test_gather_directive_shapes_the_next_gather() -> None:
    turn = read_turn([{"text": "Marque los cuatro dígitos."},
                      {"custom": {"gather": {"input": "dtmf", "num_digits": 4, "finish_on_key": "#", "timeout": 6}}}])
    gather = parse(turn_response(turn, VOICE, None)).find("Gather")
    assert (gather.get("input"), gather.get("numDigits"), gather.get("finishOnKey"), gather.get("timeout")) == (
        "dtmf", "4", "#", "6")
    assert gather.get("speechTimeout") is None


def test_hangup_speaks_what_came_before_then_hangs_up() -> None:
    turn = read_turn([{"text": "Adiós."}, {"custom": {"hangup": True}}, {"text": "never heard"}])
    root = parse(turn_response(turn, VOICE, None))
    assert [child.tag for child in root] == ["Say", "Hangup"] and root.find("Say").text == "Adiós."


def test_handoff_dials_with_an_action_for_busy_or_no_answer() -> None:
    root = parse(turn_response(read_turn([{"custom": {"handoff": True}}]), VOICE, "+525511112222"))
    dial = root.find("Dial")
    assert dial.text == "+525511112222" and dial.get("action") == "/webhook/twilio/dial-result"
    assert root.find("Say").text == SPANISH.transfer


def test_a_handoff_the_assistant_announced_is_not_announced_again() -> None:
    turn = read_turn([{"text": "Le comunico con una persona."}, {"custom": {"handoff": True}}])
    root = parse(turn_response(turn, VOICE, "+525511112222"))
    assert [child.tag for child in root] == ["Say", "Dial"]
    assert root.find("Say").text == "Le comunico con una persona."


def test_handoff_with_nobody_to_call_says_goodbye() -> None:
    root = parse(turn_response(read_turn([{"custom": {"handoff": {"number": "not-a-number"}}}]), VOICE, None))
    assert [child.tag for child in root] == ["Say", "Hangup"] and root.find("Say").text == SPANISH.nobody_available


def test_text_that_would_break_xml_or_speech_is_cleaned() -> None:
    root = parse(turn_response(AssistantTurn(texts=("a < b & c \x00\x1b **ok** 🚀", "🚀🚀")), VOICE, None))
    assert [s.text for s in root.iter("Say")] == ["a < b & c ok"]  # the emoji-only text leaves no empty <Say>


def test_a_long_text_is_split_at_sentences_and_capped_below_64_kb() -> None:
    sentence = "Esta es una frase de prueba con acentos áéíóú & símbolos. "
    response = turn_response(AssistantTurn(texts=(sentence * 3000,)), VOICE, None)
    root = parse(response)
    says = [s.text for s in root.iter("Say")]
    assert all(len(text) <= 3000 for text in says) and says[-1] == SPANISH.cut_short
    assert all(text.endswith("símbolos.") for text in says[:-1])
    assert len(str(response).encode("utf-8")) <= 64_000


def test_a_text_said_again_is_spoken_the_same_and_only_short_texts_are_remembered() -> None:
    twiml._spoken_pieces.cache_clear()
    short, longest = "**Su tarjeta** está bloqueada. 🚀", "a." * (twiml.REMEMBERED_CHARACTERS // 2)
    long = longest + "a"
    texts = (short, longest, long)
    first = [s.text for s in parse(turn_response(AssistantTurn(texts=texts), VOICE, None)).iter("Say")]
    again = [s.text for s in parse(turn_response(AssistantTurn(texts=texts), VOICE, None)).iter("Say")]
    assert first == again and first == ["Su tarjeta está bloqueada.", longest, long]
    cached = twiml._spoken_pieces.cache_info()
    assert (cached.hits, cached.currsize) == (2, 2)  # the short text and the longest kept, each cleaned once


def test_a_menu_s_speech_hints_keep_to_twilio_s_limits_and_the_document_under_64_kb() -> None:
    """Every button title became a hint: long titles made a <Gather> Twilio refuses (more than 64 kB), and
    hints past 500 entries or 100 characters each are invalid (warning 13330)."""
    buttons = tuple(Button(f"Opción {n} " + "muy larga " * 300, f"/choose{n}") for n in range(40))
    root = parse(turn_response(AssistantTurn(texts=("Elija una.",), buttons=buttons), VOICE, None))  # raises past 64 kB
    assert root.find("Gather").get("hints") is None  # no title short enough to be a hint
    many = tuple(Button(f"plan {n}", f"/plan{n}") for n in range(600))
    hints = parse(turn_response(AssistantTurn(texts=("Elija un plan.",), buttons=many), VOICE, None)).find("Gather").get("hints")
    assert hints.split(", ") == [f"plan {n}" for n in range(500)]


def test_the_gather_s_own_attributes_count_against_the_64_kb() -> None:
    """Hints and a speech model from a directive, written as XML entities, grow the <Gather> past the room
    its tags were given: a long answer with them still fits."""
    turn = read_turn([{"text": "Una frase larga. " * 10_000},
                      {"custom": {"gather": {"hints": "&" * 1000, "speech_model": "<" * 1000}}}])
    response = turn_response(turn, VOICE, None)
    parse(response)  # TwilioWouldFail past 64 kB
    assert [s.text for s in parse(response).iter("Say")][-1] == SPANISH.cut_short


def test_a_gather_with_a_speech_model_ends_speech_after_whole_seconds_not_auto() -> None:
    """Twilio does not take speechTimeout="auto" with a speechModel (warnings 13327, 13335): an integer then."""
    turn = read_turn([{"text": "Diga su número de cliente."},
                      {"custom": {"gather": {"input": "speech", "speech_model": "numbers_and_commands"}}}])
    gather = parse(turn_response(turn, VOICE, None)).find("Gather")
    assert gather.get("speechModel") == "numbers_and_commands"
    assert gather.get("speechTimeout").isdecimal() and int(gather.get("speechTimeout")) > 0
    assert parse(turn_response(AssistantTurn(texts=("Hola.",)), VOICE, None)).find("Gather").get("speechTimeout") == "auto"


def test_a_menu_takes_what_it_invites_the_caller_to_do_whatever_input_a_directive_asked_for() -> None:
    """The menu says "Diga o marque 1 para…": a <Gather> for keys alone ignored the caller who said "sí",
    one for speech alone the caller who pressed 1, and the caller heard the question again, then a person."""
    for only in ("dtmf", "speech"):
        turn = read_turn([{"text": "¿La bloqueo?", "buttons": [{"title": "Sí", "payload": "/affirm"},
                                                                 {"title": "No", "payload": "/deny"}]},
                          {"custom": {"gather": {"input": only, "timeout": 7}}}])
        gather = parse(turn_response(turn, VOICE, None)).find("Gather")
        assert gather.get("input") == "dtmf speech" and gather.get("timeout") == "7"
        assert gather.get("speechTimeout") == "auto"
    plain = read_turn([{"text": "Marque su clave."}, {"custom": {"gather": {"input": "dtmf"}}}])
    assert parse(turn_response(plain, VOICE, None)).find("Gather").get("input") == "dtmf"  # no menu: as asked
