"""The bridge writes TwiML itself (`render`), without twilio's ElementTree round trip: the same document,
character for character, for every tree twilio's builders can make."""
from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings as hypothesis_settings, strategies as st
from twilio.twiml import GenericNode, TwiML
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from twilio_bridge.web.responses import render

TRICKY = ("", " ", "a & b < c > d", 'say "hi"', "l\u00ednea\r\nnext\ttab", "\ud800 alone", "\u2028", "]]>",
          "<Dial>+15550000000</Dial>", "ñandú 🐦", "&amp;")
text = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))  # lone surrogates included: ElementTree escapes them
names = st.sampled_from(("Say", "Gather", "Dial", "Message", "Body", "Media", "Pause", "Number", "Parameter"))
attributes = st.dictionaries(
    st.sampled_from(("voice", "language", "action", "timeout", "input", "hints", "speech_timeout", "loop", "x")),
    st.one_of(text, st.booleans(), st.integers(-5, 100), st.floats(allow_nan=False, allow_infinity=False), st.none()),
    max_size=4)


def node(name: str, value: Any, attrs: dict[str, Any], verbs: list[Any]) -> TwiML:
    element = GenericNode(name, value, **attrs)
    for verb in verbs:
        element.append(verb)
    return element


trees = st.recursive(
    st.builds(node, names, st.one_of(st.none(), text, st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
              attributes, st.just([])),
    lambda children: st.builds(node, names, st.one_of(st.none(), text), attributes,
                               st.lists(st.one_of(children, text), max_size=4)),
    max_leaves=12,
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(trees)
@example(node("Say", "", {}, []))
@example(node("Gather", None, {"input": "dtmf speech", "action_on_empty_result": True}, ["before", node("Say", "x", {}, []), "after", "last"]))
def test_any_tree_renders_as_twilio_writes_it(tree: TwiML) -> None:
    expected = tree.to_xml()  # twilio's own: TwiML.xml() through ElementTree
    assert render(tree) == expected


def test_the_bridges_documents_render_as_twilio_writes_them() -> None:
    response = VoiceResponse()
    gather = response.gather(input="dtmf speech", action="/speech", method="POST", action_on_empty_result=True,
                             language="es-MX", speech_timeout="auto", timeout=5, hints="uno, dos")
    gather.say("¿Qué desea hacer? Diga \"bloquear\" & <espere>.", voice="Polly.Mia", language="es-MX")
    response.dial("+525511112222", action="/dial-result", method="POST", timeout=25)
    response.hangup()
    messages = MessagingResponse()
    messages.message("Hola").media("https://example.com/a.png?x=1&y=2")
    for document in (response, messages, VoiceResponse()):
        assert render(document) == document.to_xml()
