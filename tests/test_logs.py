from __future__ import annotations

import logging

from tests.conftest import AUTH_TOKEN
from twilio_bridge.testing.phone import TwilioPhone


def test_one_line_per_webhook_with_call_turn_latency_and_outcome(phone: TwilioPhone, log_lines) -> None:
    call = phone.call(from_="+525512345678")
    call.say("perdí mi tarjeta 4111 1111 1111 1111")
    call.say("agente")
    webhooks = [line for line in log_lines() if line["event"] == "webhook" and line.get("call_sid") == call.sid]
    assert [(w["route"], w["turn"], w["outcome"]) for w in webhooks] == [
        ("/webhook/twilio/voice", 0, "gather"), ("/webhook/twilio/speech", 1, "gather"),
        ("/webhook/twilio/speech", 2, "handoff"),
    ]
    assert all(w["status"] == 200 and isinstance(w["rasa_ms"], int) for w in webhooks)


def test_logs_hold_no_token_and_no_long_digit_strings(phone: TwilioPhone, log_lines, standin) -> None:
    standin.mode = "error500"
    call = phone.call(from_="+525512345678")
    text = "\n".join(map(str, log_lines()))
    assert AUTH_TOKEN not in text
    assert "5512345678" not in text
    assert call.state == "dialing"
    assert any(line["event"] == "rasa.failed" and line["kind"] == "status" for line in log_lines())


def test_a_forged_request_is_logged_as_rejected(bridge_url: str, log_lines) -> None:
    import requests

    requests.post(bridge_url + "/webhook/twilio/voice", data={"CallSid": "CA1"}, timeout=5)
    events = {line["event"]: line for line in log_lines()}
    assert events["signature.rejected"]["signed"] is False
    assert events["webhook"]["status"] == 403 and events["webhook"]["outcome"] == "forbidden"


def test_identifiers_and_timestamps_are_not_masked(log_lines) -> None:
    from twilio_bridge.logs import log

    log.info("probe", call_sid="CA1234567890abcdef", detail="card 4111111111111111 in CA7654321x", timestamp_ok=1)
    line = next(line for line in log_lines() if line["event"] == "probe")
    assert line["call_sid"] == "CA1234567890abcdef"
    assert line["detail"] == "card ************1111 in CA7654321x"
    assert line["timestamp"][:4].isdigit() and "*" not in line["timestamp"]


def test_long_digit_strings_are_masked_inside_lists_mappings_and_objects(log_lines) -> None:
    from twilio_bridge.logs import log

    log.warning("probe", texts=["tarjeta 4111 1111 1111 1111", 7], form={"Body": "4111111111111111", "n": None},
                error=ValueError("card 4111111111111111 refused"), turn=3)
    line = next(line for line in log_lines() if line["event"] == "probe")
    assert line["texts"] == ["tarjeta ************1111", 7]
    assert line["form"] == {"Body": "************1111", "n": None}
    assert line["error"] == "ValueError('card ************1111 refused')" and line["turn"] == 3


def test_gunicorn_builds_no_access_line_that_its_logconfig_drops() -> None:
    """gunicorn builds every request's access atoms once any logconfig is set; the shipped one drops them."""
    from gunicorn.config import Config

    from twilio_bridge.logs import GunicornLogger, gunicorn_logconfig

    class Counting(GunicornLogger):
        built = 0

        def atoms(self, *args: object) -> dict:
            Counting.built += 1
            return {}

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    config = Config()
    config.set("logconfig_dict", gunicorn_logconfig("INFO"))
    try:
        logger = Counting(config)  # applies the logconfig, as gunicorn does
        logger.access(None, None, {}, None)
        assert Counting.built == 0
        logger.access_log.setLevel("INFO")  # an operator's logconfig that keeps access lines still gets them
        logger.access(None, None, {}, None)
        assert Counting.built == 1
    finally:
        root.handlers[:], root.level = saved
        for name in ("gunicorn.error", "gunicorn.access"):
            logging.getLogger(name).handlers.clear()


def test_gunicorn_s_exception_lines_carry_the_traceback_masked(capsys) -> None:
    """A worker that fails to boot or a request gunicorn cannot serve is logged with gunicorn's own exception:
    its traceback in the line, as the app's lines have it, and with long digit strings masked there too."""
    import json
    import logging.config

    from twilio_bridge.logs import gunicorn_logconfig

    logger = logging.getLogger("gunicorn.error")
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    logging.config.dictConfig(gunicorn_logconfig("INFO", json=True))
    try:
        try:
            raise ValueError("no such number 5215512345678")
        except ValueError:
            logger.exception("Exception in worker process")
    finally:
        logging.getLogger().handlers[:], logging.getLogger().level = saved
        logger.handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "Exception in worker process" and "exc_info" not in line
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ValueError: no such number *********5678" in line["exception"]


def test_a_log_that_cannot_be_written_costs_the_line_not_the_call(phone: TwilioPhone) -> None:
    """stderr on a full disk (ENOSPC) or a log pipe gone (EPIPE): the caller still gets the assistant."""
    import errno
    import io

    from twilio_bridge.logs import configure_logging

    class FullDisk(io.TextIOBase):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def isatty(self) -> bool:
            return False

    configure_logging("INFO", json=True, stream=FullDisk())
    try:
        call = phone.call(from_="+525512345678")  # TwilioWouldFail on Flask's HTML 500
        call.say("perdí mi tarjeta")
        assert call.state == "gathering"
    finally:
        configure_logging("INFO", json=True)


def test_a_webhook_binds_nothing_beyond_its_own_request(settings, log_lines) -> None:
    """Each request runs in a context of its own: what one bound is on no other's line, nor in the thread
    that served it (a gthread worker's thread serves request after request)."""
    import structlog

    from twilio_bridge.app import create_app
    from twilio_bridge.web.signature import sign

    client = create_app(settings).test_client()
    structlog.contextvars.clear_contextvars()  # what earlier tests left in this thread

    def post(route: str, **params: str) -> None:
        signature = sign(AUTH_TOKEN, "http://localhost" + route, params)
        assert client.post(route, data=params, headers={"X-Twilio-Signature": signature}).status_code == 200

    post("/webhook/twilio/voice", CallSid="CA" + "1" * 32, From="+525512345678")
    post("/webhook/twilio/speech", CallSid="CA" + "1" * 32)  # nothing said: a reprompt, which binds `silences`
    post("/webhook/twilio/dial-result", DialCallStatus="completed")  # binds no call_sid of its own but the form's
    lines = [line for line in log_lines() if line["event"] == "webhook"]
    assert [line["outcome"] for line in lines] == ["gather", "reprompt", "hangup"]
    assert lines[1]["silences"] == 1 and "silences" not in lines[2] and "turn" not in lines[2]
    assert "rasa_ms" in lines[0] and "rasa_ms" not in lines[1]
    assert structlog.contextvars.get_contextvars() == {}  # this thread's own context: nothing left in it
