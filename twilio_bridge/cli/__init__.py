"""The entry point's subcommands: run the server (no subcommand), `call`, `chat`, `check`."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..testing.outbox import OutboxError, open_outbox
from ..testing.phone import TwilioPhone
from ..testing.whatsapp_user import WhatsAppUser
from .call import Ask, CallSimulator, RelayCallSimulator, Speaker, script_lines, terminal_lines
from .chat import REPLY_WAIT_SECONDS, ChatSimulator
from .check import run_check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twilio_voice_server.py",
        description="Without a subcommand: run the bridge's development server on $PORT.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{call,chat,check}")

    call = commands.add_parser("call", help="place a phone call to the bridge from this terminal",
                               description="Play Twilio's part in a call. Type what the caller says; "
                                           "#1234 presses keys; an empty line is silence; Ctrl-D hangs up.")
    call.add_argument("url", nargs="?", help="the bridge (default: http://127.0.0.1:$PORT)")
    call.add_argument("--public-url", help="the origin to sign for (default: PUBLIC_BASE_URL, else URL)")
    call.add_argument("--script", type=Path, metavar="FILE",
                      help="one caller turn per line, same syntax; '-' reads standard input")
    call.add_argument("--speak", action="store_true", help="read what the caller hears aloud (espeak-ng)")
    call.add_argument("--from", dest="from_", default="+525512345678", metavar="NUMBER", help="the caller")
    call.add_argument("--to", default="+525500000000", metavar="NUMBER", help="the number called")
    call.add_argument("--relay", action="store_true",
                      help="relay mode: the call over ConversationRelay's WebSocket, replies printed as they "
                           "stream (the default when VOICE_MODE=relay)")

    chat = commands.add_parser("chat", help="write WhatsApp messages to the bridge from this terminal",
                               description="Play Twilio's part in a WhatsApp chat. Each line is a message; "
                                           "Ctrl-D ends the chat.")
    chat.add_argument("url", nargs="?", help="the bridge (default: http://127.0.0.1:$PORT)")
    chat.add_argument("--public-url", help="the origin to sign for (default: PUBLIC_BASE_URL, else URL)")
    chat.add_argument("--script", type=Path, metavar="FILE", help="one message per line; '-' reads standard input")
    chat.add_argument("--from", dest="from_", default="+5215512345678", metavar="NUMBER", help="the user")
    chat.add_argument("--to", default="+14155238886", metavar="NUMBER", help="the bridge's WhatsApp number")
    chat.add_argument("--name", default="Ana", help="the user's WhatsApp profile name")
    chat.add_argument("--fake-api", metavar="PORT|URL",
                      help="REST mode: run a fake Twilio Messages API on PORT here (give the bridge "
                           "TWILIO_API_BASE_URL=http://127.0.0.1:PORT), or watch one running at URL, and "
                           "print the replies the bridge sends through it")
    chat.add_argument("--voice-note", type=Path, metavar="FILE",
                      help="REST mode, with --fake-api: first send FILE (OGG/Opus, MP3, AMR...) as a voice note")
    chat.add_argument("--wait", type=float, default=REPLY_WAIT_SECONDS, metavar="SECONDS",
                      help="how long to wait for a reply through --fake-api (default: %(default)g)")

    check = commands.add_parser("check", help="check the configuration, Rasa and the webhook URLs",
                                description="Check the configuration, reach Rasa, prove the signature "
                                            "settings and print the webhook URLs for the Twilio console.")
    check.add_argument("--bridge", metavar="URL", help="a running bridge to test (default: http://127.0.0.1:$PORT)")
    check.add_argument("--apply", action="store_true",
                       help="set the voice webhooks on --number through Twilio's REST API")
    check.add_argument("--number", metavar="+E164", help="the Twilio number to change with --apply")
    return parser


def main(argv: list[str], load_settings: Callable[[], Settings], serve: Callable[[Settings], int]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check" and args.apply != bool(args.number):
        parser.error("check: --apply and --number go together")
    if args.command == "chat" and args.voice_note is not None:
        if not args.fake_api:
            parser.error("chat: --voice-note needs --fake-api (the fake keeps the note's media, as Twilio does)")
        if not args.voice_note.is_file():
            parser.error(f"chat: --voice-note: no such file: {args.voice_note}")
    settings = load_settings()
    local = f"http://127.0.0.1:{settings.port}"
    if args.command == "call":
        return place_call(args, settings, args.url or local)
    if args.command == "chat":
        return start_chat(args, settings, args.url or local)
    if args.command == "check":
        return run_check(settings, args.bridge or local, sys.stdout, args.number if args.apply else None)
    return serve(settings)


def place_call(args: argparse.Namespace, settings: Settings, url: str) -> int:
    public_url = args.public_url or settings.public_base_url or url
    ask = turns(args.script, f"Calling {url} (signed for {public_url}). Type what the caller says; "
                             "#1234 presses keys; an empty line is silence; Ctrl-D hangs up.")
    if ask is None:
        return 2
    speak = Speaker(settings.voice_language, sys.stdout) if args.speak else None
    phone = TwilioPhone(url, settings.twilio_auth_token, public_url)
    simulator = RelayCallSimulator if args.relay or settings.voice_mode == "relay" else CallSimulator
    return simulator(phone, ask, sys.stdout, sys.stderr, speak).run(args.from_, args.to)


def start_chat(args: argparse.Namespace, settings: Settings, url: str) -> int:
    public_url = args.public_url or settings.public_base_url or url
    user = WhatsAppUser(url, settings.twilio_auth_token, args.from_, args.to, args.name,
                        public_base_url=public_url)
    ask = turns(args.script, f"Writing to {url} on WhatsApp as {args.name} ({args.from_}), signed for "
                             f"{public_url}. Each line is a message; Ctrl-D ends the chat.")
    if ask is None:
        return 2
    try:
        sent = open_outbox(args.fake_api, user.address, settings.twilio_account_sid,
                                  settings.twilio_auth_token) if args.fake_api else None
    except OutboxError as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 2
    if sent is not None and sent.api is not None and settings.twilio_api_base_url != sent.base_url:
        print(f"Fake Twilio Messages API on {sent.base_url}: start the bridge with TWILIO_API_BASE_URL="
              f"{sent.base_url} TWILIO_ACCOUNT_SID={sent.api.account_sid} "
              f"TWILIO_WHATSAPP_FROM={settings.twilio_whatsapp_from or user.bridge_address} and this "
              f"TWILIO_AUTH_TOKEN.")
    simulator = ChatSimulator(user, ask, sys.stdout, sys.stderr, sent, args.wait, args.script is not None)
    return simulator.run(args.voice_note)


def turns(script: Path | None, greeting: str) -> Ask | None:
    """The user's lines: typed at the terminal, or a script's (a file, or '-' for standard input)."""
    if script is None:
        print(greeting)
        return terminal_lines()
    if str(script) == "-":
        return script_lines(sys.stdin.readlines(), sys.stdout)
    try:
        return script_lines(script.read_text(encoding="utf-8").splitlines(), sys.stdout)
    except OSError as exc:
        print(f"cannot read the script {script}: {exc.strerror}", file=sys.stderr)
        return None
