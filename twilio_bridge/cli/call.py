"""`python twilio_voice_server.py call`: a phone call from the terminal, with TwilioPhone playing Twilio.

What you type is the caller: text is speech, `#1234` keypad digits, an empty line silence.
When the bridge dials a person, the next line is how that leg ended (completed, busy, no-answer,
failed; empty means completed). End of input hangs up. The same syntax, one line per turn, is a
`--script`; it stops at the first answer Twilio would reject and says why. A script's dial outcome is
a line of its own, `dial: busy` (none: completed), so it never takes a caller's line; `expect: handoff`,
`expect: hangup`, `expect: gather` or `expect: some words` check the answer before it; a script whose
call ends with lines left fails. The transcript names each outcome: `[dialing …]`, `[bridge hung up]`. `--relay` (the default when
VOICE_MODE=relay) places the call over ConversationRelay's WebSocket instead (RelayCallSimulator).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from typing import TextIO

import requests
from websockets.exceptions import ConnectionClosed

from ..limits import WEBHOOK_TIMEOUT
from ..testing.phone import PhoneCall, TwilioPhone, TwilioWouldFail
from ..testing.relay import RelayCall, RelayRefused

DIAL_OUTCOMES = ("completed", "busy", "no-answer", "failed", "canceled")
OUTCOMES = ("handoff", "hangup", "gather")  # what `expect:` checks, besides words the bridge said
KEYPAD = re.compile(r"^#([0-9*]+)#?$")
DIRECTIVE = re.compile(r"^(dial|expect):\s*(.*)$", re.IGNORECASE)
END_GRACE_SECONDS = 0.3
OK, FAILED = 0, 1

Ask = Callable[[str], "str | None"]


class Speaker:
    """Reads what the caller hears aloud with espeak-ng; one line, once, when it cannot."""

    def __init__(self, language: str, out: TextIO):
        self.out = out
        self.program = shutil.which("espeak-ng")
        self.voices = [language.lower(), language.split("-")[0].lower()]
        if self.program is None:
            print("[--speak: espeak-ng is not installed (apt-get install espeak-ng); printing only]", file=out)

    def __call__(self, text: str) -> None:
        while self.program and self.voices:
            done = subprocess.run([self.program, "-v", self.voices[0], text], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            if done.returncode == 0:
                return
            self.voices.pop(0)
        if self.program:
            print("[--speak: espeak-ng could not speak here; printing only]", file=self.out)
            self.program = None


def terminal_lines() -> Ask:
    """Lines typed at the terminal (with line editing); None at end of input or Ctrl-C."""
    try:
        import readline  # noqa: F401  (importing it is what turns on line editing for input())
    except ImportError:
        pass

    def ask(prompt: str) -> str | None:
        try:
            return input(prompt)
        except (EOFError, KeyboardInterrupt):
            print()
            return None
    return ask


class Script:
    """A script's lines, echoed after the prompt so the output reads as a transcript. `dial:` and `expect:`
    lines are taken only where the call asks for them (`directive`), never as something the caller says."""

    def __init__(self, lines: Iterable[str], out: TextIO):
        self.lines = [line.rstrip("\r\n") for line in lines]
        self.taken = 0
        self.out = out

    def __call__(self, prompt: str) -> str | None:
        if self.taken == len(self.lines):
            return None
        self.taken += 1
        print(prompt + self.lines[self.taken - 1], file=self.out)
        return self.lines[self.taken - 1]

    def directive(self, kind: str) -> str | None:
        """The argument of the next line when it is `kind: …` (then taken), else None (left for the caller)."""
        found = DIRECTIVE.match(self.lines[self.taken].strip()) if self.taken < len(self.lines) else None
        if found is None or found.group(1).lower() != kind:
            return None
        self.taken += 1
        return found.group(2).strip()

    @property
    def left(self) -> list[str]:
        return self.lines[self.taken:]


def script_lines(lines: Iterable[str], out: TextIO) -> Script:
    return Script(lines, out)


class ScriptMismatch(Exception):
    """The call went otherwise than the script says."""


def unanswered(exc: requests.RequestException | KeyboardInterrupt, bridge_url: str, webhook_timeout: float) -> str:
    """Why a webhook got no answer, for a simulator's last line."""
    if isinstance(exc, requests.Timeout):
        return f"the bridge at {bridge_url} did not answer; Twilio waits {webhook_timeout:g} s"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted while waiting for the bridge"
    return f"cannot reach the bridge at {bridge_url}: {type(exc).__name__}"


class CallSimulator:
    def __init__(self, phone: TwilioPhone, ask: Ask, out: TextIO, err: TextIO,
                 speak: Callable[[str], None] | None = None):
        self.phone = phone
        self.ask = ask
        self.script = ask if isinstance(ask, Script) else None
        self.out = out
        self.err = err
        self.speak = speak
        self.last_heard: list[str] = []
        self.caller_hung_up = False

    def run(self, from_: str, to: str) -> int:
        """Place one call and play it to the end; OK, or FAILED with the reason printed."""
        return self.play(lambda: self.phone.call(from_, to))

    def play(self, start: Callable[[], PhoneCall]) -> int:
        """Start one call (placed by the caller, or a call the bridge placed, answered) and play it to the end."""
        try:
            call = start()
            self.hear(call)
            while not call.ended:
                self.check_expectations(call)
                self.turn(call)
                self.hear(call)
            self.check_expectations(call)
        except TwilioWouldFail as exc:
            return self.fail(f"Twilio would fail this call: {exc}{self.hint(str(exc))}")
        except (requests.RequestException, KeyboardInterrupt) as exc:
            return self.fail(unanswered(exc, self.phone.base_url, WEBHOOK_TIMEOUT))
        except ScriptMismatch as exc:
            self.hang_up(call)
            return self.fail(str(exc))
        return self.hang_up(call) or self.script_finished()

    def turn(self, call: PhoneCall) -> None:
        if call.state == "dialing":
            outcome = self.dial_outcome()
            if outcome is None:
                call.state = "ended"
                self.caller_hung_up = True
            else:
                call.dial_result(outcome)
            return
        line = self.ask("caller> ")
        if line is None:
            call.state = "ended"
            self.caller_hung_up = True
        elif not line.strip():
            call.silence()
        elif keypad := KEYPAD.match(line.strip()):
            call.press(keypad.group(1))
        else:
            call.say(line.strip())

    def dial_outcome(self) -> str | None:
        """How the person's leg ended, as Twilio would report it in DialCallStatus."""
        prompt = f"dial outcome ({', '.join(DIAL_OUTCOMES)}) [completed]> "
        if self.script is not None:
            outcome = self.script.directive("dial")
            print(prompt + (outcome if outcome is not None else "(no dial: line) completed"), file=self.out)
            if outcome is not None and outcome not in DIAL_OUTCOMES:
                raise ScriptMismatch(f"script line {self.script.taken}: dial: {outcome!r} is not one of "
                                     f"{', '.join(DIAL_OUTCOMES)}")
            return outcome or "completed"
        while True:
            answer = self.ask(prompt)
            if answer is None:
                return None
            outcome = DIRECTIVE.sub(r"\2", answer.strip()).strip() or "completed"
            if outcome in DIAL_OUTCOMES:
                return outcome
            print(f"[choose one of: {', '.join(DIAL_OUTCOMES)}]", file=self.out)

    def hear(self, call: PhoneCall) -> None:
        """What the last answer made the caller hear, and what came of it; each turn's answer is heard once."""
        for text in call.heard:
            print(f"bridge: {text}", file=self.out)
            if self.speak:
                self.speak(text)
        self.last_heard, call.heard = call.heard, []
        if call.state == "dialing":
            print(f"[dialing {call.dialed}]", file=self.out)
        elif call.ended and not self.caller_hung_up:
            print("[bridge hung up]", file=self.out)

    def check_expectations(self, call: PhoneCall) -> None:
        """The script's `expect:` lines about the answer just heard."""
        if self.script is None:
            return
        while (wanted := self.script.directive("expect")) is not None:
            outcome = "handoff" if call.state == "dialing" else "hangup" if call.ended else "gather"
            met = wanted == outcome if wanted in OUTCOMES else any(
                wanted.casefold() in text.casefold() for text in self.last_heard)
            if not met:
                happened = {"handoff": f"the bridge handed the caller to {call.dialed}", "hangup": "the bridge hung up",
                            "gather": "the bridge waits for the caller"}[outcome]
                said = " / ".join(self.last_heard) or "nothing"
                raise ScriptMismatch(f"script line {self.script.taken}: expected {wanted!r}, but {happened} "
                                     f"after saying: {said}")
            print(f"[expected {wanted}: yes]", file=self.out)

    def script_finished(self) -> int:
        """A script must be played to its end: lines left mean the call ended sooner than it expected."""
        if self.script is None or not self.script.left:
            return OK
        left = self.script.left
        return self.fail(f"the call ended with {len(left)} line(s) of the script left, from line "
                         f"{len(self.script.lines) - len(left) + 1}: {left[0]!r}")

    def hang_up(self, call: PhoneCall | RelayCall) -> int:
        print("[call ended]", file=self.out)
        status = call.hangup()
        if not 200 <= status < 300:
            return self.fail(f"the status callback answered HTTP {status}{self.hint(f'HTTP {status}')}")
        print(f"[status callback: HTTP {status}]", file=self.out)
        return OK

    def fail(self, message: str) -> int:
        self.out.flush()
        print(f"call: {message}", file=self.err)
        return FAILED

    def hint(self, problem: str) -> str:
        if "HTTP 403" in problem:
            return (f" (the bridge rejected the signature made for {self.phone.public_base_url}: "
                    "are its TWILIO_AUTH_TOKEN and PUBLIC_BASE_URL the same as here?)")
        return ""


class RelayCallSimulator(CallSimulator):
    """`call --relay`: the same call over ConversationRelay's WebSocket; the bridge's tokens print as they stream.

    Text is what Twilio transcribed (a `prompt`), `#1234` keypad digits (one `dtmf` each), an empty line
    is the caller staying silent (the bridge's reprompt comes after VOICE_SILENCE_SECONDS), Ctrl-D hangs up.
    When the session ends, the <Connect action> TwiML plays as in a gather-mode call.
    """

    def __init__(self, phone: TwilioPhone, ask: Ask, out: TextIO, err: TextIO,
                 speak: Callable[[str], None] | None = None):
        super().__init__(phone, ask, out, err, speak)
        self.spoken: list[str] = []

    def run(self, from_: str, to: str) -> int:
        call = RelayCall(self.phone, from_, to, on_token=self.stream)
        try:
            call.start()
            # The bridge's last words come right before its `end`: give it a moment before prompting again.
            while not call.session_over.wait(END_GRACE_SECONDS):
                line = self.ask("caller> ")
                if line is None:
                    return self.hang_up(call)
                keypad = KEYPAD.match(line.strip())
                try:
                    if not line.strip():
                        call.reply()
                    elif keypad:
                        call.press(keypad.group(1))
                    else:
                        call.say(line.strip())
                except ConnectionClosed:  # the session ended while the caller was typing
                    break
            call.ended()
            self.hear(call.after)
            while call.after.state == "dialing":
                self.turn(call.after)
                self.hear(call.after)
            return self.hang_up(call.after)
        except RelayRefused as exc:
            return self.fail(f"{exc}{self.hint(f'HTTP {exc.status}')}")
        except TwilioWouldFail as exc:
            return self.fail(f"Twilio would fail this call: {exc}{self.hint(str(exc))}")
        except TimeoutError as exc:
            return self.fail(f"the bridge stopped answering on the WebSocket: {exc}")
        except (requests.RequestException, KeyboardInterrupt) as exc:
            return self.fail(unanswered(exc, self.phone.base_url, WEBHOOK_TIMEOUT))
        finally:
            call.close_socket()

    def stream(self, token: str, last: bool) -> None:
        """Each token the moment it arrives (called from the WebSocket's reader thread)."""
        if not self.spoken:
            print("bridge: ", end="", file=self.out)
        print(token, end="\n" if last else "", file=self.out, flush=True)
        self.spoken.append(token)
        if last:
            if self.speak:
                self.speak("".join(self.spoken))
            self.spoken = []
