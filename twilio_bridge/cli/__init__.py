"""The entry point's subcommands: run the server (no subcommand), `demo`, `call`, `chat`, `check`, `notify`, `dial-out`."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .. import __version__, routes
from ..config import Settings
from ..startup import Configuration, local_origin
from ..testing.outbox import OutboxError, open_outbox
from ..testing.phone import TwilioPhone
from ..testing.whatsapp_user import WhatsAppUser
from ..twilio_rest import TWILIO_API_ORIGIN
from .call import Ask, CallSimulator, RelayCallSimulator, Speaker, script_lines, terminal_lines
from .chat import REPLY_WAIT_SECONDS, ChatSimulator
from .check import run_check
from .demo import run_demo
from .outbound import OutboundClient, OutboundError, add_commands, json_object, run_dial_out, run_notify


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twilio_voice_server.py",
        description="Without a subcommand: run the bridge's development server on $PORT.",
    )
    parser.add_argument("--version", action="version", version=f"twilio-bridge {__version__}")
    parser.add_argument("--port", type=int, metavar="PORT", help="the development server's port (default: $PORT, 5001)")
    commands = parser.add_subparsers(dest="command", metavar="{demo,call,chat,check,notify,dial-out}")

    demo = commands.add_parser("demo", help="see it work: a Rasa stand-in, the bridge and a call, in one command",
                               description="Start the Rasa stand-in and the bridge on free ports, with nothing to "
                                           "configure, and call it from this terminal (or chat, with --chat). "
                                           "Everything stops when the call ends.")
    demo.add_argument("--chat", action="store_true", help="write WhatsApp messages instead of calling")
    demo.add_argument("--port", type=int, default=0, help="the bridge's port (default: a free one)")
    demo.add_argument("--rasa-port", type=int, default=0, help="the Rasa stand-in's port (default: a free one)")
    demo.add_argument("--script", type=Path, metavar="FILE",
                      help="play a call or chat script instead of the terminal (as call --script)")

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
    call.add_argument("--outbound-context", type=json_object, metavar="JSON",
                      help="be the customer of an outbound call instead: ask the bridge's outbound API to call "
                           "--from with this context, then answer it (the bridge's TWILIO_API_BASE_URL must be a "
                           "fake Calls API; dial-out calls real phones)")

    chat = commands.add_parser("chat", help="write WhatsApp messages to the bridge from this terminal",
                               description="Play Twilio's part in a WhatsApp chat. Each line is a message; "
                                           ">2 taps a reply's second button; Ctrl-D ends the chat.")
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
    chat.add_argument("--notification", type=json_object, metavar="JSON",
                      help='the business writes first: the outbound API sends this user {"content_sid": "HX…", '
                           '"variables": {…}, "context": {…}} (or {"body": …}) before the chat starts')
    chat.add_argument("--wait", type=float, default=REPLY_WAIT_SECONDS, metavar="SECONDS",
                      help="how long to wait for a reply through --fake-api (default: %(default)g)")

    check = commands.add_parser("check", help="check the configuration, Rasa and the webhook URLs",
                                description="Check the configuration, reach Rasa, prove the signature "
                                            "settings and print the webhook URLs for the Twilio console.")
    check.add_argument("--bridge", metavar="URL", help="a running bridge to test (default: http://127.0.0.1:$PORT)")
    check.add_argument("--apply", action="store_true",
                       help="set the voice webhooks on --number through Twilio's REST API")
    check.add_argument("--number", metavar="+E164", help="the Twilio number to change with --apply")
    add_commands(commands)
    return parser


def main(argv: list[str], configure: Callable[[], Configuration], serve: Callable[[Settings], int]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check" and args.apply != bool(args.number):
        parser.error("check: --apply and --number go together")
    if args.command == "chat" and args.voice_note is not None:
        if not args.fake_api:
            parser.error("chat: --voice-note needs --fake-api (the fake keeps the note's media, as Twilio does)")
        if not args.voice_note.is_file():
            parser.error(f"chat: --voice-note: no such file: {args.voice_note}")
    if args.command == "demo":  # reads no settings: it brings its own
        ask = turns(args.script, "")
        return 2 if ask is None else run_demo(args, ask)
    configuration = configure()
    if args.command == "check":  # reports bad settings among its findings, and tests what it still can
        local = local_origin(configuration.settings.host, configuration.settings.port)
        return run_check(configuration, args.bridge or local, sys.stdout, args.number if args.apply else None)
    settings = configuration.settings_or_exit()
    local = local_origin(settings.host, settings.port)  # where the bridge listens: HOST may not be the loopback
    if args.command == "call":
        return place_call(args, settings, args.url or local)
    if args.command == "chat":
        return start_chat(args, settings, args.url or local)
    if args.command in ("notify", "dial-out"):
        client = OutboundClient(args.bridge or local, settings.outbound_api_token)
        run = run_notify if args.command == "notify" else run_dial_out
        return run(args, client, sys.stdout, sys.stderr)
    return serve(replace(settings, port=args.port) if args.port else settings)


def place_call(args: argparse.Namespace, settings: Settings, url: str) -> int:
    public_url = args.public_url or settings.public_base_url or url
    ask = turns(args.script, f"Calling {url} (signed for {public_url}). Type what the caller says; "
                             "#1234 presses keys; an empty line is silence; Ctrl-D hangs up.")
    if ask is None:
        return 2
    speak = Speaker(settings.voice_language, sys.stdout) if args.speak else None
    phone = TwilioPhone(url, settings.twilio_auth_token, public_url)
    relay = args.relay or settings.voice_mode == "relay"
    simulator = (RelayCallSimulator if relay else CallSimulator)(phone, ask, sys.stdout, sys.stderr, speak)
    if args.outbound_context is None:
        return simulator.run(args.from_, args.to)
    if relay:
        print("call: --outbound-context plays a gather-mode call: leave out --relay (and VOICE_MODE=relay)",
              file=sys.stderr)
        return 2
    if settings.twilio_api_base_url.rstrip("/") == TWILIO_API_ORIGIN:
        print("call: --outbound-context answers a call placed through a fake Calls API, and this bridge's "
              "TWILIO_API_BASE_URL is Twilio's: dial-out calls a real phone instead", file=sys.stderr)
        return 2
    try:
        placed = OutboundClient(url, settings.outbound_api_token).post(
            routes.OUTBOUND_CALLS, {"to": args.from_, "context": args.outbound_context})
    except OutboundError as exc:
        print(f"call: {exc}", file=sys.stderr)
        return 1
    print(f"[the bridge calls {args.from_}: {placed['call_sid']}; answering]")
    status_callback = f"{public_url}{routes.CALL_STATUS}?outbound={placed['id']}"
    return simulator.play(lambda: phone.answer(placed["call_sid"], settings.twilio_voice_from or args.to,
                                               args.from_, status_callback))


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
    if args.notification is not None:
        try:
            queued = OutboundClient(url, settings.outbound_api_token).post(
                routes.OUTBOUND_MESSAGES, {**args.notification, "to": user.address})
            simulator.notified(queued)
        except (OutboundError, OutboxError) as exc:
            print(f"chat: {exc}", file=sys.stderr)
            if sent is not None:
                sent.close()
            return 1
    return simulator.run(args.voice_note)


def turns(script: Path | None, greeting: str) -> Ask | None:
    """The user's lines: typed at the terminal, or a script's (a file, or '-' for standard input)."""
    if script is None:
        if greeting:
            print(greeting)
        return terminal_lines()
    if str(script) == "-":
        return script_lines(sys.stdin.readlines(), sys.stdout)
    try:
        return script_lines(script.read_text(encoding="utf-8").splitlines(), sys.stdout)
    except OSError as exc:
        print(f"cannot read the script {script}: {exc.strerror}", file=sys.stderr)
        return None
