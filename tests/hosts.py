"""Separate hosts on one machine: network namespaces (`ip netns`) on one Linux bridge, as if on one LAN.

Each host has its own address and its own loopback, so two bridges really are two hosts to nginx and
to each other. This machine joins the LAN at its hub address (.1), where the shared servers (Redis, the
Rasa stand-in, the fake Twilio API) listen for the hosts. Addresses come from 198.18.0.0/15, the range set
aside for benchmarking (RFC 2544), a /24 per test process (two runs at once do not collide), and exist
only inside this machine while the hosts do.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import AUTH_TOKEN, HUMAN, WHATSAPP_FROM
from tests.ops_tools import DOMAIN, Nginx, SiteVariables, render_site, resolve_to_localhost, self_signed
from tests.servers import Gunicorn, free_port, redis_server
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser

PREFIX = 24


@dataclass(frozen=True)
class Host:
    netns: str
    address: str
    hub: str  # this machine's address on the hosts' LAN


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def can_make_hosts() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CI runs as root)"
    probe = f"tb-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@contextmanager
def lan(count: int) -> Iterator[list[Host]]:
    """`count` hosts at 198.18.N.2, .3, …, reachable from here through 198.18.N.1; all removed afterwards.
    Skips the test, saying why, where namespaces cannot be made."""
    reason = can_make_hosts()
    if reason:
        pytest.skip(reason)
    tag = f"tb{os.getpid() % 100_000}"  # interface names stay within Linux's 15 characters
    hub = f"{tag}hub"
    subnet = f"198.18.{os.getpid() % 256}"
    hosts = [Host(f"{tag}-host{n}", f"{subnet}.{n + 2}", f"{subnet}.1") for n in range(count)]
    try:
        ip("link", "add", hub, "type", "bridge")
        ip("addr", "add", f"{subnet}.1/{PREFIX}", "dev", hub)
        ip("link", "set", hub, "up")
        for n, host in enumerate(hosts):
            outside, inside = f"{tag}v{n}", f"{tag}h{n}"
            ip("netns", "add", host.netns)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", host.netns)
            ip("link", "set", outside, "master", hub)
            ip("link", "set", outside, "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/{PREFIX}", "dev", inside)
            ip("-n", host.netns, "link", "set", inside, "up")
            ip("-n", host.netns, "link", "set", "lo", "up")
        yield hosts
    finally:
        for host in hosts:  # a namespace takes its end of the veth pair with it, and the pair goes whole
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", hub], capture_output=True)


@dataclass
class BridgeHost:
    """One host's bridge: gunicorn inside the host's namespace, listening on the host's own address."""
    host: Host
    gunicorn: Gunicorn

    def served(self) -> list[dict[str, Any]]:
        """The bridge's one summary line per webhook, from this host's log."""
        lines = []
        for text in self.gunicorn.log_path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") == "webhook":
                lines.append(line)
        return lines


@dataclass
class Cluster:
    """Hosts running the bridge behind the shipped nginx site, one Redis, the stand-in and the fake Twilio API."""
    bridges: list[BridgeHost]
    public: str  # https://ivr.test:PORT, where Twilio would call
    ca: Path
    standin: RasaStandIn
    fake_api: FakeTwilioAPI
    redis_dir: Path
    redis_port: int
    redis: ExitStack  # the running redis-server, which a test may stop and start again

    @property
    def redis_url(self) -> str:
        """As this machine reaches it."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        """redis-server on the hub and loopback, durable: started again, it has what it had when stopped."""
        hub = self.bridges[0].host.hub
        self.redis.enter_context(redis_server(self.redis_dir, self.redis_port, bind=("127.0.0.1", hub), durable=True))

    def stop_redis(self) -> None:
        self.redis.close()

    def phone(self, source: str | None = None) -> TwilioPhone:
        """A phone whose requests go through nginx; from `source` (a 127.x address) if given, as Twilio's come
        from many addresses (nginx limits requests per address)."""
        return TwilioPhone(self.public, AUTH_TOKEN, verify=str(self.ca), session=from_address(source))

    def whatsapp_user(self, number: str, source: str | None = None) -> WhatsAppUser:
        user = WhatsAppUser(self.public, AUTH_TOKEN, number=number, session=from_address(source))
        user.twilio.verify = str(self.ca)
        return user

    def host_of(self, **match: Any) -> list[tuple[str, int, dict[str, Any]]]:
        """(timestamp, host index, line) of every webhook line with these fields, in time order."""
        found = [(line["timestamp"], index, line) for index, bridge in enumerate(self.bridges)
                 for line in bridge.served() if all(line.get(k) == v for k, v in match.items())]
        return sorted(found, key=lambda entry: entry[0])


def from_address(source: str | None) -> requests.Session:
    session = requests.Session()
    if source:
        adapter = SourceAddress(source)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


class SourceAddress(HTTPAdapter):
    """Connections from one local address (any of 127.0.0.0/8 is this machine's)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


BRIDGE_PORT = 5001  # the same on every host, as operators run it: the hosts' addresses differ


@contextmanager
def cluster(root: Path, count: int = 2, settings: Mapping[str, str] | None = None,
            gunicorn: Mapping[str, str] | None = None, pin: bool = False) -> Iterator[Cluster]:
    """`count` bridge hosts, each gunicorn under the shipped gunicorn.conf.py in a namespace of its own, sharing
    one Redis (durable, as an operator runs it for the queue) behind the shipped nginx site for ivr.test.
    `settings` go into each host's twilio.env, `gunicorn` into its environment; `pin` keeps host n on CPU n
    (as if each host were a machine of one core)."""
    with lan(count) as hosts, ExitStack() as stack:
        redis_dir = root / "redis"
        redis_dir.mkdir(parents=True)
        redis_port = free_port()
        redis = stack.enter_context(ExitStack())
        hub = hosts[0].hub
        redis.enter_context(redis_server(redis_dir, redis_port, bind=("127.0.0.1", hub), durable=True))
        standin = stack.enter_context(RasaStandIn().start(hub))
        fake_api = stack.enter_context(FakeTwilioAPI(auth_token=AUTH_TOKEN).start(hub))
        https_port = free_port()
        public = f"https://{DOMAIN}:{https_port}"
        values = {
            "RASA_WEBHOOK_URL": standin.webhook_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": public,
            "FALLBACK_PHONE_NUMBER": HUMAN, "STATE_URL": f"redis://{hub}:{redis_port}/0",
            "TWILIO_ACCOUNT_SID": fake_api.account_sid, "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM,
            "TWILIO_API_BASE_URL": fake_api.base_url, **(settings or {})}
        bridges = []
        for n, host in enumerate(hosts):
            workdir = root / host.netns
            workdir.mkdir()
            (workdir / "twilio.env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))
            server = Gunicorn({"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "32", **(gunicorn or {})}, workdir,
                              BRIDGE_PORT, host=host.address, netns=host.netns,
                              cpus={n % (os.cpu_count() or 1)} if pin else None)
            bridges.append(BridgeHost(host, stack.enter_context(server)))
        letsencrypt = root / "letsencrypt"
        self_signed(letsencrypt / "live" / DOMAIN, DOMAIN)
        (root / "acme").mkdir()
        upstream = " ".join(f"{bridge.host.address}:{BRIDGE_PORT}" for bridge in bridges)
        variables = SiteVariables(upstream, free_port(), https_port, letsencrypt, root / "acme")
        nginx = Nginx(root / "nginx")
        (nginx.sites / "twilio-bridge.conf").write_text(render_site(DOMAIN, variables.environment()))
        stack.enter_context(nginx.running(https_port))
        stack.enter_context(resolve_to_localhost())
        yield Cluster(bridges, public, letsencrypt / "live" / DOMAIN / "fullchain.pem", standin, fake_api,
                      redis_dir, redis_port, redis)
