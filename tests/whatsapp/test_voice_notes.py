"""Voice notes (REST mode, WHATSAPP_TRANSCRIBE=on): a note spoken by espeak-ng, encoded as WhatsApp sends
it (OGG/Opus), kept by the fake Twilio API behind basic auth and a redirect, transcribed for real by the
small Whisper model; and every note that cannot be heard gets the user a request to write instead."""
from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from twilio_bridge.config import Settings
from twilio_bridge.limits import WHATSAPP_MEDIA_BYTES
from twilio_bridge.phrases import SPANISH
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI, as_seen
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.testing.whisper_model import spoken_voice_note
from twilio_bridge.whatsapp import voice_notes
from twilio_bridge.whatsapp.voice_notes import Transcriber, Unheard

from ..conftest import AUTH_TOKEN, LiveServer
from ..metrics_tools import grew, scrape
from ..servers import wait_for
from .test_twiml import new_number

Serve = Callable[[Settings], LiveServer]
OGG = "audio/ogg"
TRANSCRIPTION_WAIT = 120.0  # loading the model and transcribing on a busy 2-core machine: seconds, rarely a minute


@pytest.fixture(scope="module")
def spanish_note() -> bytes:
    return spoken_voice_note("Quiero reservar una mesa para el viernes por la noche")


def send_note(url: str, media_url: str, content_type: str = OGG) -> tuple[WhatsAppUser, Any]:
    user = WhatsAppUser(url, AUTH_TOKEN, number=new_number())
    return user, user.send(media=((media_url, content_type),))


def test_a_voice_note_is_transcribed_and_rasa_gets_the_words(
        serve: Serve, voice_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI,
        spanish_note: bytes) -> None:
    url = serve(voice_settings).url
    before = scrape(url)
    media_url = fake_api.add_media(spanish_note, OGG)
    user = WhatsAppUser(url, AUTH_TOKEN, number=new_number())
    standin.reply_with([{"text": "Con gusto. ¿Para cuántas personas?"}], user.address)
    posted = user.send(media=((media_url, OGG),))
    assert posted.replies == []  # transcribed by a worker, never in the webhook's time
    assert as_seen(fake_api.wait_for(1, to=user.address, timeout=TRANSCRIPTION_WAIT)[0]) == (
        "Con gusto. ¿Para cuántas personas?")

    [heard] = [r for r in standin.received if r["sender"] == user.address]
    words = heard["message"].lower()
    assert "reservar" in words and "mesa" in words and "viernes" in words, heard["message"]
    metadata = heard["metadata"]
    assert (metadata["input"], metadata["language"], metadata["message_sid"]) == ("voice_note", "es", posted.sid)
    assert metadata["media"] == [{"url": media_url, "content_type": OGG}]
    # the account's credentials went to Twilio's API only, never to the media storage it redirected to
    assert [(f["stage"], f["credentials"]) for f in fake_api.media_fetches] == [("api", True), ("storage", False)]
    wait_for(lambda: grew(before, scrape(url), "twilio_bridge_whatsapp_voice_notes_total", result="transcribed") == 1)


def test_a_media_url_on_another_host_is_never_fetched(
        serve: Serve, voice_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI,
        spanish_note: bytes) -> None:
    with FakeTwilioAPI(auth_token=AUTH_TOKEN) as elsewhere:
        url = serve(voice_settings).url
        before = scrape(url)
        user, _ = send_note(url, elsewhere.add_media(spanish_note, OGG))
        assert as_seen(fake_api.wait_for(1, to=user.address)[0]) == SPANISH.voice_note_unheard
        assert elsewhere.media_fetches == [] and fake_api.media_fetches == []
    assert [r for r in standin.received if r["sender"] == user.address] == []
    wait_for(lambda: grew(before, scrape(url), "twilio_bridge_whatsapp_voice_notes_total", result="foreign_host") == 1)


@pytest.mark.parametrize("url", ["https://api.twilio.com:99999/2010-04-01/Media/ME1", "https://[api.twilio.com/x",
                                 "https://api.twilio.com:port/x"])
def test_a_media_url_without_an_origin_is_a_foreign_host_not_a_crash(url: str) -> None:
    fetcher = voice_notes.MediaFetcher("https://api.twilio.com", "AC" + "0" * 32, AUTH_TOKEN)
    with pytest.raises(Unheard) as refused:
        fetcher.fetch(url)
    assert refused.value.reason == "foreign_host"


@pytest.mark.parametrize("audio, reason", [
    (b"\0" * (WHATSAPP_MEDIA_BYTES + 1), "too_big"),
    (b"OggS" + b"not really a voice note" * 10, "undecodable"),
])
def test_a_voice_note_that_cannot_be_heard_gets_a_request_to_write(
        serve: Serve, voice_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI,
        audio: bytes, reason: str) -> None:
    url = serve(voice_settings).url
    before = scrape(url)
    user, _ = send_note(url, fake_api.add_media(audio, OGG))
    assert as_seen(fake_api.wait_for(1, to=user.address)[0]) == SPANISH.voice_note_unheard
    assert [r for r in standin.received if r["sender"] == user.address] == []
    wait_for(lambda: grew(before, scrape(url), "twilio_bridge_whatsapp_voice_notes_total", result=reason) == 1)


def test_media_twilio_no_longer_has_gets_a_request_to_write(
        serve: Serve, voice_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    gone = f"{fake_api.base_url}/2010-04-01/Accounts/{fake_api.account_sid}/Messages/MM1/Media/ME1"
    user, _ = send_note(serve(voice_settings).url, gone)
    assert as_seen(fake_api.wait_for(1, to=user.address)[0]) == SPANISH.voice_note_unheard
    assert [(f["stage"], f["credentials"]) for f in fake_api.media_fetches] == [("api", True)]


def test_with_transcription_off_a_voice_note_reaches_rasa_as_media(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI,
        spanish_note: bytes) -> None:
    media_url = fake_api.add_media(spanish_note, OGG)
    user, _ = send_note(serve(dataclasses.replace(rest_settings, whatsapp_transcribe=False)).url, media_url)
    fake_api.wait_for(1, to=user.address)
    [received] = [r for r in standin.received if r["sender"] == user.address]
    assert (received["message"], received["metadata"]["input"]) == ("", "media")
    assert fake_api.media_fetches == []


def test_voice_note_and_button_settings_are_read_and_bad_ones_named(tmp_path: Any, whisper_model: Any) -> None:
    from twilio_bridge.config import ConfigError, load_settings

    base = {"TWILIO_AUTH_TOKEN": "t"}
    defaults = load_settings(base)
    assert (defaults.whatsapp_buttons, defaults.whatsapp_transcribe, defaults.whatsapp_transcribe_model,
            defaults.transcribe_language) == ("interactive", False, "base", "es")
    chosen = load_settings({**base, "WHATSAPP_BUTTONS": "TEXT", "WHATSAPP_TRANSCRIBE": "on", "VOICE_LANGUAGE": "en-US",
                            "WHATSAPP_TRANSCRIBE_MODEL": str(whisper_model)})
    assert (chosen.whatsapp_buttons, chosen.whatsapp_transcribe, chosen.transcribe_language) == ("text", True, "en")
    assert load_settings({**base, "WHATSAPP_TRANSCRIBE_LANGUAGE": "auto"}).transcribe_language is None
    assert load_settings({**base, "WHATSAPP_TRANSCRIBE_LANGUAGE": "pt-BR"}).transcribe_language == "pt"
    with pytest.raises(ConfigError) as error:
        load_settings({**base, "WHATSAPP_BUTTONS": "tappable", "WHATSAPP_TRANSCRIBE": "maybe",
                       "WHATSAPP_TRANSCRIBE_MODEL": str(tmp_path), "WHATSAPP_TRANSCRIBE_LANGUAGE": "spanish!"})
    assert [line.split("=")[0] for line in error.value.problems] == [
        "WHATSAPP_BUTTONS", "WHATSAPP_TRANSCRIBE", "WHATSAPP_TRANSCRIBE_MODEL", "WHATSAPP_TRANSCRIBE_LANGUAGE"]
    assert "model.bin" in error.value.problems[2]


def test_a_voice_note_retried_while_rasa_is_down_is_transcribed_once(
        serve: Serve, voice_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    url = serve(dataclasses.replace(voice_settings, whatsapp_retry_window=60)).url
    before = scrape(url)
    standin.mode = "error500"
    user = WhatsAppUser(url, AUTH_TOKEN, number=new_number())
    user.send(media=((fake_api.add_media(spoken_voice_note("Quiero bloquear mi tarjeta"), OGG), OGG),))
    wait_for(lambda: len([r for r in standin.received if r["sender"] == user.address]) >= 2, TRANSCRIPTION_WAIT)
    standin.mode = "ok"
    fake_api.wait_for(1, to=user.address, timeout=TRANSCRIPTION_WAIT)
    asked = [r["message"] for r in standin.received if r["sender"] == user.address]
    assert len(asked) >= 3 and len(set(asked)) == 1 and "bloquear" in asked[0].lower()
    assert [f["stage"] for f in fake_api.media_fetches] == ["api", "storage"]
    assert grew(before, scrape(url), "twilio_bridge_whatsapp_voice_notes_total", result="transcribed") == 1


def test_a_note_longer_than_its_container_says_is_refused_without_decoding_it_all(
        spanish_note: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chained Ogg streams each start their clock again: many copies of a short note, one after the other, say
    they last one copy. Decoded whole, 16 MB of such Opus are hours of samples in the transcriber's memory;
    the decoding stops once past MAX_SECONDS instead."""
    monkeypatch.setattr(voice_notes, "MAX_SECONDS", 20.0)
    chained = spanish_note * 120  # some 400 s of audio that says it lasts 3
    pytest.importorskip("numpy")  # imported before the memory is traced: its import is no decoding
    tracemalloc.start()
    try:
        with pytest.raises(Unheard) as refused:
            Transcriber("never-loaded", "es").transcribe(chained)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.reason == "too_long"
    assert peak < 3 * 20 * voice_notes.SAMPLE_RATE * 4  # the samples of MAX_SECONDS, not of the whole chain
