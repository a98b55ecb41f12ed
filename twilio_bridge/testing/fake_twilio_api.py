"""A local fake of Twilio's REST API over real HTTP (Messages, Calls, Content, typing, media), for tests,
benchmarks and the chat simulator.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with basic auth (account SID : auth token)
answers 201 and a message resource as Twilio does (a body, media, or a template: ContentSid with
ContentVariables), and records the message; `GET` on the same path
lists them, newest first; `GET /_fake/messages?to=whatsapp:+…` lists them oldest first, with their
media URLs and without credentials (for the chat simulator in another process). Failures can be switched on for the next requests: "429" (code 20429),
"500", "drop" (the connection closes without an answer), "63016" (400, outside the 24-hour window).
When a message names a StatusCallback, the fake posts signed callbacks to it: `sent`, then
`final_status` (`delivered`, or e.g. `undelivered` with `final_error_code`).

`POST /2010-04-01/Accounts/{AccountSid}/Calls.json` records the call (To, From, Url, StatusCallback,
its events, MachineDetection) and answers 201 with a `CA…` sid, or the same failures as messages and
"21215" (the account may not call that number). Nothing rings: a test plays the customer
(`TwilioPhone.answer`), or ends the call unanswered with `end_call(sid, "no-answer")`, which posts the
signed status callbacks Twilio would.

Also, with the same basic auth: `POST /v1/Content` creates a Content API template (JSON; recorded in
`contents`, and a message sent with its ContentSid records the template's types); `POST
/v2/Indicators/Typing.json` records a typing indicator (`typing`). `break_api("content"|"typing", "500"|"drop")`
makes either fail until `break_api(..., None)`. Media: `add_media(bytes, content type)` gives a URL under
the account's Messages, as Twilio's MediaUrl0; fetching it needs the credentials and answers a redirect
to the fake's media storage, which serves it without them (every fetch is recorded in `media_fetches`).

    python -m twilio_bridge.testing.fake_twilio_api --port 5099    # then TWILIO_API_BASE_URL=http://127.0.0.1:5099
"""
from __future__ import annotations

import argparse
import base64
import json
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import requests
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..limits import MESSAGE_CHARACTERS
from ..web.signature import sign
from .local_server import LocalServer, until_signalled

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ACCOUNT_SID = "AC" + "0" * 32
FAILURES = ("429", "500", "drop", "63016", "21215")
API_FAILURES = ("500", "drop")
BROKEN_APIS = ("content", "typing")
ERRORS = {
    "401": (401, 20003, "Authenticate"),
    "429": (429, 20429, "Too Many Requests"),
    "500": (500, 20500, "Internal Server Error"),
    "63016": (400, 63016, "Failed to send freeform message because you are outside the allowed window. "
                          "If you are using WhatsApp, please use a Message Template."),
    "21602": (400, 21602, "Message body is required."),
    "21617": (400, 21617, "The concatenated message body exceeds the 1600 character limit."),
    "21656": (400, 21656, "The ContentVariables Parameter is invalid."),
    "21215": (400, 21215, "Account not authorized to call this number."),
    "21655": (400, 21655, "The ContentSid is Invalid."),
    "404": (404, 20404, "The requested resource was not found"),
}


class FakeTwilioAPI(LocalServer):
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = "fake-auth-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, Any]] = []  # accepted, in order
        self.calls: list[dict[str, Any]] = []  # placed, in order
        self.attempts: list[dict[str, Any]] = []  # every authenticated POST, accepted or not
        self.callbacks: list[dict[str, Any]] = []  # status callbacks posted, with the bridge's HTTP status
        self.contents: list[dict[str, Any]] = []  # Content API templates created, in order
        self.deleted_contents: set[str] = set()  # sids of templates deleted since (`delete_content`)
        self.typing: list[dict[str, Any]] = []  # typing indicators posted, in order
        self.media_fetches: list[dict[str, Any]] = []  # every media download, with whether it was authorised
        self._media: dict[str, tuple[bytes, str]] = {}  # media sid: (bytes, content type)
        self._broken: dict[str, str | None] = dict.fromkeys(BROKEN_APIS)
        self.final_status = "delivered"
        self.final_error_code: str | None = None
        self._failures: deque[str] = deque()
        self._failing: str | None = None
        self._lock = threading.Condition()
        self._urls = Map([Rule("/2010-04-01/Accounts/<account>/Messages.json", endpoint="messages"),
                          Rule("/2010-04-01/Accounts/<account>/Calls.json", endpoint="calls"),
                          Rule("/2010-04-01/Accounts/<account>/Messages/<message>/Media/<media>",
                               endpoint="media", methods=["GET"]),
                          Rule("/_fake/media-storage/<media>", endpoint="storage", methods=["GET"]),
                          Rule("/_fake/media", endpoint="upload", methods=["POST"]),
                          Rule("/v1/Content", endpoint="content", methods=["POST"]),
                          Rule("/v2/Indicators/Typing.json", endpoint="typing", methods=["POST"]),
                          Rule("/_fake/control", endpoint="control"),
                          Rule("/_fake/messages", endpoint="recorded", methods=["GET"])])

    def fail(self, kind: str, times: int | None = 1) -> None:
        """Answer the next `times` requests with a failure (None: every request until `heal()`)."""
        if kind not in FAILURES:
            raise ValueError(f"failure must be one of {', '.join(FAILURES)}, not {kind!r}")
        with self._lock:
            if times is None:
                self._failing = kind
            else:
                self._failures.extend([kind] * times)

    def heal(self) -> None:
        with self._lock:
            self._failures.clear()
            self._failing = None
            self._broken = dict.fromkeys(BROKEN_APIS)

    def break_api(self, api: str, kind: str | None) -> None:
        """Make every request to the Content API ("content") or the typing indicator ("typing") fail with
        `kind` ("500", or "drop": the connection closes unanswered) until called again with None."""
        if api not in BROKEN_APIS or kind not in (*API_FAILURES, None):
            raise ValueError(f"break_api takes one of {', '.join(BROKEN_APIS)} and one of {', '.join(API_FAILURES)}")
        with self._lock:
            self._broken[api] = kind

    def delete_content(self, content_sid: str) -> None:
        """A template deleted in Twilio's console: a message naming it fails with 21655 from now on."""
        with self._lock:
            self.contents[:] = [c for c in self.contents if c["sid"] != content_sid]
            self.deleted_contents.add(content_sid)

    def add_media(self, data: bytes, content_type: str) -> str:
        """An attachment as Twilio keeps one: the MediaUrl a webhook would carry."""
        media_sid = "ME" + secrets.token_hex(16)
        with self._lock:
            self._media[media_sid] = (data, content_type)
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages/MM{secrets.token_hex(16)}/Media/{media_sid}"

    def clear(self) -> None:
        self.heal()
        with self._lock:
            self.messages.clear()
            self.calls.clear()
            self.attempts.clear()
            self.callbacks.clear()
            self.contents.clear()
            self.deleted_contents.clear()
            self.typing.clear()
            self.media_fetches.clear()
            self._media.clear()

    def sent_to(self, to: str) -> list[dict[str, Any]]:
        with self._lock:
            return self._addressed(to)

    def wait_for(self, count: int, to: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The messages (to `to`) once there are at least `count`, or whatever arrived when time ran out."""
        with self._lock:
            self._lock.wait_for(lambda: len(self._addressed(to)) >= count, timeout)
            return self._addressed(to)

    def wait_until(self, condition: Callable[[FakeTwilioAPI], object], timeout: float = 10.0) -> bool:
        """Wait until `condition(self)` holds (checked whenever the fake records something); whether it did."""
        with self._lock:
            return bool(self._lock.wait_for(lambda: condition(self), timeout))

    def _addressed(self, to: str | None) -> list[dict[str, Any]]:
        """The accepted messages to `to` (every one for None), oldest first; the caller holds the lock."""
        return [message for message in self.messages if to is None or message["to"] == to]

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        request = Request(environ)
        adapter = self._urls.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except Exception:
            return Response("Not found", status=404)(environ, start_response)
        if endpoint == "control":
            response = self._control(request)
        elif endpoint == "storage":
            response = self._stored_media(request, args["media"])
        elif endpoint == "upload":
            url = self.add_media(request.get_data(), request.mimetype or "application/octet-stream")
            response = _json({"url": url}, status=201)
        elif endpoint == "recorded":
            with self._lock:
                recorded = self._addressed(request.args.get("to"))
            response = _json({"messages": recorded})
        elif not self._authorised(request, args.get("account", self.account_sid)):
            response = _error("401")
            if endpoint == "media":
                self._record_fetch(request, "api", authorised=False)
        elif endpoint == "calls":
            response = self._place_call(request)
        elif endpoint == "media":
            self._record_fetch(request, "api", authorised=True)
            response = (Response(status=307, headers={"Location": f"/_fake/media-storage/{args['media']}"})
                        if args["media"] in self._media else _error("404"))
        elif endpoint in BROKEN_APIS and self._broken[endpoint]:
            if self._broken[endpoint] == "drop":
                request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            response = _error("500")
        elif endpoint == "content":
            response = self._create_content(request)
        elif endpoint == "typing":
            response = self._show_typing(request)
        elif request.method == "GET":
            with self._lock:
                listed = list(reversed(self.messages))
            response = _json({"messages": [self._resource(m) for m in listed], "page": 0, "page_size": 50})
        else:
            response = self._create(request)
        return response(environ, start_response)

    def _authorised(self, request: Request, account: str) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return account == self.account_sid and request.headers.get("Authorization") == f"Basic {expected}"

    def _create(self, request: Request) -> Response:
        form = request.form
        attempt = {"to": form.get("To"), "from": form.get("From"), "body": form.get("Body", ""),
                   "media_urls": form.getlist("MediaUrl"), "status_callback": form.get("StatusCallback"),
                   "content_sid": form.get("ContentSid"), "content_variables": None, "at": time.time()}
        failed = self._failure(request, attempt)
        if failed is not None:
            return failed
        if form.get("ContentVariables"):
            try:
                attempt["content_variables"] = json.loads(form["ContentVariables"])
            except ValueError:
                return _error("21656")
            if not isinstance(attempt["content_variables"], dict):
                return _error("21656")
        if attempt["content_sid"]:
            with self._lock:
                template = next((c for c in self.contents if c["sid"] == attempt["content_sid"]), None)
            # A template made through /v1/Content is known here; one approved in the console (HX…) is taken as is.
            if template is not None:
                attempt["content"] = template["types"]
            elif not attempt["content_sid"].startswith("HX") or attempt["content_sid"] in self.deleted_contents:
                return _error("21655")
        elif not attempt["body"] and not attempt["media_urls"]:
            return _error("21602")
        if len(attempt["body"]) > MESSAGE_CHARACTERS:
            return _error("21617")
        message = {**attempt, "sid": "SM" + secrets.token_hex(16)}
        with self._lock:
            self.messages.append(message)
            self._lock.notify_all()
        if message["status_callback"]:
            threading.Thread(target=self._report, args=(message,), daemon=True).start()
        return _json(self._resource(message), status=201)

    def _failure(self, request: Request, attempt: dict[str, Any]) -> Response | None:
        """Record the attempt; the failure switched on for it, if any."""
        with self._lock:
            self.attempts.append(attempt)
            failure = self._failures.popleft() if self._failures else self._failing
        if failure == "drop":
            request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            return Response(status=500)
        return _error(failure) if failure else None

    def _place_call(self, request: Request) -> Response:
        form = request.form
        attempt = {"to": form.get("To"), "from": form.get("From"), "url": form.get("Url"),
                   "method": form.get("Method", "POST"), "status_callback": form.get("StatusCallback"),
                   "status_callback_events": form.getlist("StatusCallbackEvent"),
                   "machine_detection": form.get("MachineDetection"), "at": time.time()}
        failed = self._failure(request, attempt)
        if failed is not None:
            return failed
        call = {**attempt, "sid": "CA" + secrets.token_hex(16)}
        with self._lock:
            self.calls.append(call)
            self._lock.notify_all()
        now = formatdate(call["at"], usegmt=True)
        return _json({"sid": call["sid"], "account_sid": self.account_sid, "api_version": "2010-04-01",
                      "to": call["to"], "from": call["from"], "status": "queued", "direction": "outbound-api",
                      "date_created": now, "date_updated": now, "start_time": None, "end_time": None,
                      "duration": None, "price": None, "answered_by": None, "parent_call_sid": None,
                      "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call['sid']}.json"}, status=201)

    def wait_for_call(self, to: str | None = None, timeout: float = 10.0) -> dict[str, Any] | None:
        """The newest call placed (to `to`), once there is one."""
        def placed() -> list[dict[str, Any]]:
            return [call for call in self.calls if to is None or call["to"] == to]
        with self._lock:
            self._lock.wait_for(lambda: bool(placed()), timeout)
            found = placed()
        return found[-1] if found else None

    def end_call(self, sid: str, status: str, **extra: str) -> list[int]:
        """Twilio's status callbacks for a call that ends as `status` (busy, no-answer, failed, completed…),
        signed as Twilio signs them; the bridge's HTTP status for each."""
        with self._lock:
            call = next(call for call in self.calls if call["sid"] == sid)
        # Twilio posts the progress events the call asked for; the end always (the "completed" event).
        progress = ["initiated", "ringing"] if status != "failed" else ["initiated"]
        statuses = [event for event in progress if event in call["status_callback_events"]] + [status]
        answers = []
        for current in statuses:
            params = {"CallSid": sid, "AccountSid": self.account_sid, "From": call["from"], "To": call["to"],
                      "CallStatus": current, "Direction": "outbound-api", "ApiVersion": "2010-04-01",
                      "CallbackSource": "call-progress-events", **(extra if current == status else {})}
            url = call["status_callback"]
            answer = requests.post(url, data=params, timeout=5,
                                   headers={"X-Twilio-Signature": sign(self.auth_token, url, params)})
            answers.append(answer.status_code)
        return answers
    def _create_content(self, request: Request) -> Response:
        """A template as the Content API creates one; the types the bridge left empty (null) are dropped."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("types"), dict):
            return _json({"code": 20001, "message": "Invalid content: types is required", "status": 400}, 400)
        types = {kind: _without_nulls(value) for kind, value in body["types"].items() if value is not None}
        now = formatdate(time.time(), usegmt=True)
        template = {"sid": "HX" + secrets.token_hex(16), "account_sid": self.account_sid,
                    "friendly_name": body.get("friendly_name"), "language": body.get("language"),
                    "variables": body.get("variables") or {}, "types": types, "date_created": now, "date_updated": now}
        template["url"] = f"{self.base_url}/v1/Content/{template['sid']}"
        with self._lock:
            self.contents.append(template)
            self._lock.notify_all()
        return _json(template, status=201)

    def _show_typing(self, request: Request) -> Response:
        indicator = {"message_id": request.form.get("messageId"), "channel": request.form.get("channel"),
                     "at": time.time()}
        if indicator["channel"] != "whatsapp" or not str(indicator["message_id"] or "").startswith(("SM", "MM")):
            return _json({"code": 20001, "message": "channel must be whatsapp, messageId a message sid",
                          "status": 400}, status=400)
        with self._lock:
            self.typing.append(indicator)
            self._lock.notify_all()
        return _json({"success": True})

    def _record_fetch(self, request: Request, stage: str, authorised: bool) -> None:
        with self._lock:
            self.media_fetches.append({"path": request.path, "stage": stage, "authorised": authorised,
                                       "credentials": "Authorization" in request.headers})
            self._lock.notify_all()

    def _stored_media(self, request: Request, media_sid: str) -> Response:
        """Twilio's media storage: a signed URL in real life, so no credentials, and none wanted."""
        self._record_fetch(request, "storage", authorised=False)
        with self._lock:
            stored = self._media.get(media_sid)
        if stored is None:
            return _error("404")
        data, content_type = stored
        return Response(data, mimetype=content_type)

    def _resource(self, message: dict[str, Any]) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message['sid']}"
        now = formatdate(message["at"], usegmt=True)
        return {"sid": message["sid"], "account_sid": self.account_sid, "api_version": "2010-04-01",
                "to": message["to"], "from": message["from"], "body": message["body"], "status": "queued",
                "direction": "outbound-api", "num_media": str(len(message["media_urls"])), "num_segments": "1",
                "date_created": now, "date_updated": now, "date_sent": None, "error_code": None,
                "error_message": None, "price": None, "price_unit": "USD", "messaging_service_sid": None,
                "uri": uri + ".json", "subresource_uris": {"media": uri + "/Media.json"}}

    def _report(self, message: dict[str, Any]) -> None:
        """Twilio's status callbacks for one message, signed as Twilio signs them."""
        for status in ("sent", self.final_status):
            params = {"MessageSid": message["sid"], "SmsSid": message["sid"], "AccountSid": self.account_sid,
                      "MessageStatus": status, "SmsStatus": status, "From": message["from"], "To": message["to"],
                      "ApiVersion": "2010-04-01"}
            if status in ("failed", "undelivered") and self.final_error_code:
                params["ErrorCode"] = self.final_error_code
            url = message["status_callback"]
            try:
                answer = requests.post(url, data=params, timeout=5,
                                       headers={"X-Twilio-Signature": sign(self.auth_token, url, params)})
                outcome: int | str = answer.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with self._lock:
                self.callbacks.append({"sid": message["sid"], "status": status, "answer": outcome})
                self._lock.notify_all()

    def _control(self, request: Request) -> Response:
        """From another process: {"fail": "429", "times": 2}, {"break": "content", "kind": "500"} (kind null
        mends it), {"heal": true} or {"clear": true}."""
        body = request.get_json(silent=True) or {}
        try:
            if body.get("clear"):
                self.clear()
            if body.get("heal"):
                self.heal()
            if body.get("fail"):
                self.fail(str(body["fail"]), body.get("times", 1))
            if body.get("break"):
                self.break_api(str(body["break"]), body.get("kind"))
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        return _json({"messages": len(self.messages), "attempts": len(self.attempts)})


def _error(kind: str) -> Response:
    status, code, message = ERRORS[kind]
    return _json({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                  "status": status}, status=status)


def template_text(message: dict[str, Any]) -> str:
    """A template message's text as the user reads it: its body with ContentVariables filled in."""
    _, data = next(iter(message["content"].items()))
    text = str(data.get("body", ""))
    for name, value in (message.get("content_variables") or {}).items():
        text = text.replace("{{" + name + "}}", value)
    return text


def template_buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    """A template message's buttons (quick replies or list items) as (id, title), in order."""
    _, data = next(iter(message["content"].items()))
    return ([(action["id"], action["title"]) for action in data.get("actions", [])]
            + [(item["id"], item["item"]) for item in data.get("items", [])])


def as_seen(message: dict[str, Any]) -> str:
    """A recorded message as the user sees it: its body (or media URL), or a template's text and [buttons]."""
    if message.get("content"):
        return template_text(message) + "\n" + " ".join(f"[{title}]" for _, title in template_buttons(message))
    return str(message["body"] or (message["media_urls"] or [""])[0])


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a fake of Twilio's REST API (Messages, Calls) in the foreground.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5099,
                        help="port to listen on, 0 for a free one (default: %(default)s); give the bridge "
                             "TWILIO_API_BASE_URL=http://127.0.0.1:PORT")
    parser.add_argument("--account-sid", default=ACCOUNT_SID,
                        help="the account whose Messages.json and Calls.json it serves: the bridge's TWILIO_ACCOUNT_SID "
                             "(default: %(default)s)")
    parser.add_argument("--auth-token", default="fake-auth-token",
                        help="the password it expects and signs status callbacks with: the bridge's "
                             "TWILIO_AUTH_TOKEN (default: %(default)s)")
    args = parser.parse_args()
    done = until_signalled()
    with FakeTwilioAPI(args.account_sid, args.auth_token).start(args.host, args.port) as api:
        print(f"Fake Twilio Messages and Calls API listening: TWILIO_API_BASE_URL={api.base_url} "
              f"TWILIO_ACCOUNT_SID={api.account_sid}", flush=True)
        shown = rung = 0
        while not done.wait(0.5):
            for message in api.messages[shown:]:
                sent = message["body"] or message["media_urls"] or f"{message['content_sid']} {message['content_variables']}"
                print(f"-> {message['to']}: {sent}", flush=True)
                shown += 1
            for call in api.calls[rung:]:
                print(f"-> call {call['to']} ({call['sid']}): Url={call['url']}", flush=True)
                rung += 1


if __name__ == "__main__":
    main()
