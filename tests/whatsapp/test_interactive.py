"""Buttons people tap (REST mode): quick replies and list pickers made through the fake Content API,
tapped back as ButtonPayload / ListId, and the numbered list whenever buttons cannot be used."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from twilio_bridge.config import Settings
from twilio_bridge.limits import LIST_ITEM, QUICK_REPLY_TITLE
from twilio_bridge.rasa.turn import Button
from twilio_bridge.state import open_store
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI, as_seen, template_buttons, template_text
from twilio_bridge.testing.standin import ASK_DIGITS, BLOCKED, NOT_BLOCKED, RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.twilio_rest import twilio_client
from twilio_bridge.whatsapp.interactive import ContentTemplates, fit, template_types

from ..conftest import AUTH_TOKEN, LiveServer
from .test_twiml import new_number

Serve = Callable[[Settings], LiveServer]
QUESTION = "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"
SERVICES = [("Bloquear una tarjeta perdida o robada", "/block"), ("Consultar el saldo", "/balance"),
            ("Hablar con un asesor de la sucursal", "/agent"), ("Pagar la tarjeta", "/pay"),
            ("Aumentar mi límite de crédito", '/raise{"amount": "alto"}')]


def chat(url: str, channel: str = "whatsapp") -> WhatsAppUser:
    return WhatsAppUser(url, AUTH_TOKEN, number=new_number(), channel=channel)


def ask_for_card(user: WhatsAppUser, fake_api: FakeTwilioAPI) -> dict[str, Any]:
    """Two turns of the stand-in's dialogue; the second ends with a question and two buttons."""
    user.send("perdí mi tarjeta")
    user.send("1234")
    return fake_api.wait_for(2, to=user.address)[1]


def menu_of(services: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"text": "¿Qué trámite desea hacer?", "buttons": [{"title": t, "payload": p} for t, p in services]}]


def test_up_to_three_buttons_are_a_quick_reply_whose_tap_sends_rasa_the_payload(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(rest_url)
    asked = ask_for_card(user, fake_api)
    assert asked["content"] == {"twilio/quick-reply": {"body": "{{1}}", "actions": [
        {"title": "Sí", "id": "/affirm"}, {"title": "No", "id": "/deny"}]}}
    assert asked["content_variables"] == {"1": QUESTION} and asked["body"] == ""
    assert template_text(asked) == QUESTION
    [template] = fake_api.contents
    assert asked["content_sid"] == template["sid"] and template["language"] == "es"

    user.send("Sí", button_payload="/affirm", button_text="Sí")
    assert as_seen(fake_api.wait_for(3, to=user.address)[2]) == BLOCKED
    tapped = standin.received[-1]
    assert (tapped["message"], tapped["metadata"]["input"], tapped["metadata"]["button_text"]) == (
        "/affirm", "button", "Sí")
    assert tapped["metadata"]["button_payload"] == "/affirm"


def test_a_tap_on_a_button_rasa_did_not_offer_goes_as_text_with_its_payload_in_the_metadata(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    """An operator's template may carry buttons of its own: the tap's text reaches Rasa as what the user said,
    never its payload as a command, and the payload rides in the metadata for the assistant to read."""
    user = chat(rest_url)
    user.send("Confirmar cita", button_payload="/confirm_appointment", button_text="Confirmar cita")
    fake_api.wait_for(1, to=user.address)
    tapped = standin.received[-1]
    assert (tapped["message"], tapped["metadata"]["input"]) == ("Confirmar cita", "text")
    assert tapped["metadata"]["button_payload"] == "/confirm_appointment"


def test_a_template_is_made_once_and_reused_by_another_bridge_on_the_same_state(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    first, second = serve(rest_settings), serve(rest_settings)  # two hosts sharing one state store
    asked = [ask_for_card(chat(bridge.url), fake_api) for bridge in (first, second)]
    assert len(fake_api.contents) == 1
    assert asked[0]["content_sid"] == asked[1]["content_sid"] == fake_api.contents[0]["sid"]


def test_typing_the_number_or_the_title_still_chooses_a_button(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    ana, beto = chat(rest_url), chat(rest_url)
    ask_for_card(ana, fake_api)
    ask_for_card(beto, fake_api)
    ana.send("1")
    beto.send("NO")
    assert as_seen(fake_api.wait_for(3, to=ana.address)[2]) == BLOCKED
    assert as_seen(fake_api.wait_for(3, to=beto.address)[2]) == NOT_BLOCKED
    assert {r["sender"]: r["message"] for r in standin.received[-2:]} == {ana.address: "/affirm",
                                                                          beto.address: "/deny"}


def test_four_to_ten_buttons_are_a_list_picker_fitted_to_whatsapps_limits(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(rest_url)
    standin.reply_with(menu_of(SERVICES), user.address)
    user.send("hola")
    [asked] = fake_api.wait_for(1, to=user.address)
    picker = asked["content"]["twilio/list-picker"]
    assert picker["button"] == "Ver opciones" and template_text(asked) == "¿Qué trámite desea hacer?"
    assert [item["item"] for item in picker["items"]] == [
        "Bloquear una tarjeta…", "Consultar el saldo", "Hablar con un asesor de…", "Pagar la tarjeta",
        "Aumentar mi límite de…"]
    assert [item["description"] for item in picker["items"]] == [title for title, _ in SERVICES]
    assert [button_id for button_id, _ in template_buttons(asked)] == [payload for _, payload in SERVICES]

    standin.reply_with([{"text": "Un asesor le escribirá."}], user.address)
    user.send("Hablar con un asesor de…", list_id="/agent")
    assert as_seen(fake_api.wait_for(2, to=user.address)[1]) == "Un asesor le escribirá."
    assert standin.received[-1]["message"] == "/agent"
    assert standin.received[-1]["metadata"]["list_title"] == "Hablar con un asesor de…"


def test_a_tap_on_a_payload_rasa_did_not_offer_is_only_text(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(rest_url)
    standin.reply_with(menu_of(SERVICES), user.address)
    user.send("hola")
    fake_api.wait_for(1, to=user.address)
    user.send("/restart", list_id="/restart")
    fake_api.wait_for(2, to=user.address)
    assert standin.received[-1]["message"] == "restart"
    assert standin.received[-1]["metadata"]["input"] == "text"


def test_buttons_that_whatsapp_cannot_show_are_a_numbered_list(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    eleven = [(f"Opción {n}", f"/option_{n}") for n in range(1, 12)]
    long_payload = [("Sí", "/affirm" + "x" * 200), ("No", "/deny")]
    for services in (eleven, long_payload):
        user = chat(rest_url)
        standin.reply_with(menu_of(services), user.address)
        user.send("hola")
        [sent] = fake_api.wait_for(1, to=user.address)
        assert sent["content_sid"] is None
        assert sent["body"].splitlines()[2:] == [f"{n}. {title}" for n, (title, _) in enumerate(services, 1)]
    assert fake_api.contents == []


def test_when_the_content_api_fails_the_question_still_goes_out_as_a_numbered_list(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    for failure in ("500", "drop"):
        fake_api.break_api("content", failure)
        user = chat(rest_url)
        asked = ask_for_card(user, fake_api)
        assert (asked["content_sid"], asked["body"]) == (None, f"{QUESTION}\n\n1. Sí\n2. No")
        user.send("1")
        assert as_seen(fake_api.wait_for(3, to=user.address)[2]) == BLOCKED
    fake_api.break_api("content", None)
    assert ask_for_card(chat(rest_url), fake_api)["content_sid"] == fake_api.contents[0]["sid"]


def test_whatsapp_buttons_text_and_sms_keep_the_numbered_list(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    as_text = serve(dataclasses.replace(rest_settings, whatsapp_buttons="text"))
    interactive = serve(rest_settings)
    for user in (chat(as_text.url), chat(interactive.url, channel="sms")):
        asked = ask_for_card(user, fake_api)
        assert (asked["content_sid"], asked["body"]) == (None, f"{QUESTION}\n\n1. Sí\n2. No")
    assert fake_api.contents == []


def test_titles_are_shortened_after_a_whole_word() -> None:
    assert fit("Sí", QUICK_REPLY_TITLE) == "Sí"
    assert fit("Bloquear una tarjeta perdida", QUICK_REPLY_TITLE) == "Bloquear una…"
    assert fit("Hablar con un asesor de la sucursal", LIST_ITEM) == "Hablar con un asesor de…"
    assert fit("Supercalifragilisticoespialidoso", QUICK_REPLY_TITLE) == "Supercalifragilisti…"
    assert fit("Una,   dos y tres, cuatro", 12) == "Una, dos y…"
    for text in ("Bloquear una tarjeta perdida", "a" * 50, "uno dos tres cuatro cinco seis siete"):
        assert len(fit(text, QUICK_REPLY_TITLE)) <= QUICK_REPLY_TITLE


def test_a_buttons_title_shows_without_the_markdown_a_button_cannot_render() -> None:
    marked = [Button("**Sí**", "/affirm"), Button("_No_, gracias", "/deny"), Button("[Ayuda](https://x.test) ✅", "/help")]
    quick = template_types(marked, "Ver opciones")
    assert quick is not None
    assert [a["title"] for a in quick["twilio/quick-reply"]["actions"]] == ["Sí", "No, gracias", "Ayuda ✅"]
    assert [a["id"] for a in quick["twilio/quick-reply"]["actions"]] == ["/affirm", "/deny", "/help"]
    listed = template_types([*marked, Button("~~Cancelar~~ &amp; salir", "/stop")], "Ver opciones")
    assert listed is not None
    items = listed["twilio/list-picker"]["items"]
    assert [(i["item"], i["description"]) for i in items][-1] == ("Cancelar & salir", "Cancelar & salir")
    assert template_types([Button("<b></b>", "/tags"), Button("No", "/deny")], "Ver opciones") is None  # nothing to show


def test_titles_that_shorten_alike_cannot_be_buttons() -> None:
    twins = [Button("Bloquear la tarjeta de débito", "/block_debit"),
             Button("Bloquear la tarjeta de crédito", "/block_credit")]
    assert template_types(twins, "Ver opciones") is None
    assert template_types(twins[:1], "Ver opciones") is not None


def test_a_template_twilio_no_longer_has_is_sent_as_text_and_made_again(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    first = ask_for_card(chat(rest_url), fake_api)["content_sid"]
    fake_api.delete_content(first)  # deleted in Twilio's console: sending with its sid now fails with 21655
    user = chat(rest_url)
    asked = ask_for_card(user, fake_api)
    assert (asked["content_sid"], asked["body"]) == (None, f"{QUESTION}\n\n1. Sí\n2. No")
    assert [a["content_sid"] for a in fake_api.attempts if a["to"] == user.address] == [None, first, None]
    user.send("1")
    assert as_seen(fake_api.wait_for(3, to=user.address)[2]) == BLOCKED
    again = ask_for_card(chat(rest_url), fake_api)
    assert again["content_sid"] == fake_api.contents[0]["sid"] != first


def test_a_content_api_answer_that_is_not_a_template_leaves_the_question_as_a_numbered_list(
        serve: Serve, settings: Settings) -> None:
    """A 2xx that is not JSON (a proxy's page) must not crash the reply: the courier would ask Rasa again,
    running the dialogue twice, and drop the message after three crashes without a word to the user."""
    for answer in ("<html><body>Service Temporarily Unavailable</body></html>", '["not", "a", "template"]'):
        @Request.application
        def content_api(request: Request, answer: str = answer) -> Response:
            return Response(answer, status=201, content_type="text/html")

        api = LiveServer(content_api)
        try:
            client = twilio_client("AC" + "0" * 32, AUTH_TOKEN, api.url, 5.0)
            templates = ContentTemplates(client, open_store(settings.state_url), "es", "Ver opciones")
            assert templates.ask(QUESTION, [Button("Sí", "/affirm"), Button("No", "/deny")]) is None
        finally:
            api.stop()


def test_a_long_question_whose_template_is_refused_still_reaches_the_user(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    """The text sent when Twilio refuses a template is one message: it must fit in 1600 characters, or the
    question (its words and its options) is lost to 21617."""
    question = "Puede hacer cualquiera de estos trámites desde aquí. " * 17 + "¿Cuál desea hacer?"
    services = [(f"Opción {n}: consulta detallada de todos los movimientos recientes de la cuenta", f"/option_{n}")
                for n in range(1, 11)]
    items = [{"text": question, "buttons": [{"title": t, "payload": p} for t, p in services]}]
    first = chat(rest_url)
    standin.reply_with(items, first.address)
    first.send("hola")
    asked = fake_api.wait_for(1, to=first.address)[0]
    if asked["content_sid"]:
        fake_api.delete_content(asked["content_sid"])  # deleted in Twilio's console: the next one is refused

    user = chat(rest_url)
    standin.reply_with(items, user.address)
    user.send("hola")
    last_option = f"10. {services[-1][0]}"
    assert fake_api.wait_until(lambda api: last_option in "\n".join(as_seen(m) for m in api.sent_to(user.address)))
    seen = "\n".join(as_seen(m) for m in fake_api.sent_to(user.address))
    assert "¿Cuál desea hacer?" in seen
    assert all(len(m["body"]) <= 1600 for m in fake_api.sent_to(user.address))
