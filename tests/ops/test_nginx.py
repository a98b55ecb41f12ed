"""The shipped nginx site, rendered for ivr.test, in front of the bridge under real gunicorn.

nginx terminates TLS on 127.0.0.1 with a certificate made here; requests go to
https://ivr.test:PORT (resolved to 127.0.0.1 inside this process only), so SNI, Host and the
certificate check are what Twilio's would be.
"""
from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import AUTH_TOKEN, HUMAN
from tests.ops_tools import DOMAIN, Nginx, SiteVariables, render_site, resolve_to_localhost, self_signed
from tests.servers import free_port, free_ports, gunicorn_bridge
from twilio_bridge import routes
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.relay import RelayCall, RelayRefused, open_relay_socket
from twilio_bridge.testing.standin import GREETING, HANDOFF, RasaStandIn

VOICE = "/webhook/twilio/voice"
OUTBOUND_TOKEN = "outbound-token-0123456789abcdef"


def site_variables(root: Path, upstream: str, http_port: int = 0, https_port: int = 0) -> SiteVariables:
    """Certificate directories laid out as certbot's, with a self-signed certificate for ivr.test."""
    letsencrypt = root / "letsencrypt"
    self_signed(letsencrypt / "live" / DOMAIN, DOMAIN)
    acme_root = root / "acme"
    (acme_root / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    chosen = free_ports(2)
    return SiteVariables(upstream, http_port or chosen[0], https_port or chosen[1], letsencrypt, acme_root)


def test_rendered_site_passes_nginx_t_inside_debians_nginx_conf(tmp_path: Path) -> None:
    """The site as an operator installs it: production ports, inside Debian's own nginx.conf."""
    variables = site_variables(tmp_path, "127.0.0.1:5001")
    site = render_site(DOMAIN, {"LETSENCRYPT_DIR": str(variables.letsencrypt_dir), "ACME_ROOT": str(variables.acme_root)})
    assert "${" not in site
    assert re.search(r"^\s*listen 80;$", site, re.M) and re.search(r"^\s*listen 443 ssl;$", site, re.M)
    assert "$request_uri" in site and "$binary_remote_addr" in site, "nginx's own variables must survive rendering"
    nginx = Nginx(tmp_path / "nginx")
    (nginx.sites / "twilio-bridge.conf").write_text(site)
    debian = Path("/etc/nginx/nginx.conf")
    if debian.is_file() and "include /etc/nginx/sites-enabled/*;" in debian.read_text():
        conf = debian.read_text().replace("include /etc/nginx/sites-enabled/*;", f"include {nginx.sites}/*.conf;")
        nginx.conf.write_text(re.sub(r"^pid .*;$", f"pid {nginx.directory}/nginx.pid;", conf, flags=re.M))
    result = nginx.test()
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_rendering_refuses_a_name_that_is_not_a_domain() -> None:
    with pytest.raises(Exception) as refused:
        render_site("ivr.test; include /etc/passwd")
    assert "not a domain name" in refused.value.stderr  # type: ignore[attr-defined]


def test_rendering_refuses_an_outbound_allow_that_is_not_addresses() -> None:
    with pytest.raises(Exception) as refused:
        render_site(DOMAIN, {"OUTBOUND_ALLOW": "10.0.0.1; allow all"})
    assert "OUTBOUND_ALLOW" in refused.value.stderr  # type: ignore[attr-defined]


@dataclass
class Stack:
    mode: str
    public: str  # https://ivr.test:PORT, the origin Twilio would call
    http: str  # http://ivr.test:PORT, nginx's port-80 server
    bridge: str  # gunicorn itself, behind nginx
    ca: Path
    acme_root: Path

    def phone(self, token: str = AUTH_TOKEN, base_url: str | None = None) -> TwilioPhone:
        return TwilioPhone(base_url or self.public, token, public_base_url=self.public, verify=str(self.ca))


@pytest.fixture(scope="module", params=["PUBLIC_BASE_URL", "TRUSTED_PROXIES=1"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          standin_server: RasaStandIn) -> Iterator[Stack]:
    """gunicorn with the bridge, and nginx with the shipped site in front; the bridge trusts one or the other way."""
    root = tmp_path_factory.mktemp("proxy")
    bridge_port = free_port()
    variables = site_variables(root, f"127.0.0.1:{bridge_port}")
    public = f"https://{DOMAIN}:{variables.https_port}"
    trust = {"PUBLIC_BASE_URL": public} if request.param == "PUBLIC_BASE_URL" else {"TRUSTED_PROXIES": "1"}
    settings = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": standin_server.webhook_url,
                "RASA_TIMEOUT": "3", "FALLBACK_PHONE_NUMBER": HUMAN, **trust,
                "OUTBOUND_API_TOKEN": OUTBOUND_TOKEN, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32}
    # One site lets this host use the outbound API, the other (the default) lets nobody.
    outbound = {"OUTBOUND_ALLOW": "192.0.2.1, 127.0.0.1"} if request.param == "PUBLIC_BASE_URL" else {}
    nginx = Nginx(root / "nginx")
    (nginx.sites / "twilio-bridge.conf").write_text(render_site(DOMAIN, {**variables.environment(), **outbound}))
    with gunicorn_bridge(root / "bridge", settings, port=bridge_port) as bridge, \
            nginx.running(variables.http_port, variables.https_port), resolve_to_localhost(DOMAIN):
        yield Stack(request.param, public, f"http://{DOMAIN}:{variables.http_port}", bridge,
                    variables.letsencrypt_dir / "live" / DOMAIN / "fullchain.pem", variables.acme_root)


@pytest.fixture
def standin(standin_server: RasaStandIn) -> RasaStandIn:
    standin_server.mode = "ok"
    standin_server.delay = 0.0
    return standin_server


def test_a_call_signed_for_the_public_https_url_is_answered_through_nginx(stack: Stack, standin: RasaStandIn) -> None:
    call = stack.phone().call()
    assert call.state == "gathering"
    assert call.heard == [GREETING]
    assert call.hangup() == 204


def test_a_forged_signature_is_refused(stack: Stack, standin: RasaStandIn) -> None:
    response = stack.phone(token="not-the-auth-token").post(stack.public + VOICE, {"CallSid": "CA" + "1" * 32})
    assert response.status_code == 403


def test_a_signature_for_another_origin_with_spoofed_forwarded_headers_is_refused(
        stack: Stack, standin: RasaStandIn) -> None:
    """A signature Twilio made for another URL (here: plain http on another host) must not pass here,
    even when the client claims that URL in X-Forwarded-* headers: nginx overwrites them."""
    spoofed = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.test", "X-Forwarded-Port": "80",
               "X-Forwarded-Prefix": "/", "Forwarded": "proto=http;host=evil.test"}
    params = {"CallSid": "CA" + "2" * 32, "From": "+525512345678", "To": "+525500000000"}
    through_nginx = stack.phone().post(f"http://evil.test{VOICE}", params, headers=spoofed)
    assert through_nginx.status_code == 403
    if stack.mode.startswith("TRUSTED_PROXIES"):
        # The same request straight to gunicorn is believed: trusting one proxy is safe only because
        # nginx replaces these headers, which is what the 403 above shows.
        direct = stack.phone(base_url=stack.bridge).post(f"http://evil.test{VOICE}", params, headers=spoofed)
        assert direct.status_code == 200


def test_a_request_for_another_host_name_never_reaches_the_bridge(stack: Stack) -> None:
    response = requests.get(stack.public + "/health", headers={"Host": "evil.test"}, verify=str(stack.ca), timeout=5)
    assert response.status_code == 421


def test_tls_for_another_name_is_refused_in_the_handshake(stack: Stack) -> None:
    port = int(stack.public.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="evil.test")


def test_health_is_exposed_and_nothing_else(stack: Stack, standin: RasaStandIn) -> None:
    session = requests.Session()  # verify per request: REQUESTS_CA_BUNDLE in the environment beats session.verify
    health = session.get(stack.public + "/health", verify=str(stack.ca), timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}  # liveness; the detail is for operators
    for path in ("/", "/admin", "/health/", "/webhook", "/webhook/other", "/.env", "/static/x.js"):
        refused = session.get(stack.public + path, verify=str(stack.ca), timeout=5)
        assert refused.status_code == 404, path
        assert refused.headers["Server"] == "nginx", f"{path} reached the bridge"
    assert session.get(stack.public + VOICE, verify=str(stack.ca), timeout=5).status_code == 403  # POST only
    assert session.post(stack.public + "/health", verify=str(stack.ca), timeout=5).status_code == 403


def test_the_outbound_api_passes_nginx_only_from_the_allowed_addresses(stack: Stack) -> None:
    url = stack.public + "/api/outbound/calls"
    answer = requests.post(url, json={"to": "+5215512345678"}, verify=str(stack.ca), timeout=5,
                           headers={"Authorization": "Bearer not-the-token"})
    if stack.mode == "PUBLIC_BASE_URL":  # rendered with OUTBOUND_ALLOW naming 127.0.0.1: the bridge answers
        assert answer.status_code == 401 and answer.json()["error"].startswith("authorization:")
        get = requests.get(stack.public + "/api/outbound/calls/OC0", verify=str(stack.ca), timeout=5,
                           headers={"Authorization": f"Bearer {OUTBOUND_TOKEN}"})
        assert get.status_code == 404 and get.json()["error"].startswith("call_id:")
        assert requests.delete(url, verify=str(stack.ca), timeout=5).status_code == 403
    else:  # rendered without OUTBOUND_ALLOW: nginx refuses it, whatever the token
        assert answer.status_code == 403 and "authorization" not in answer.text
        with_token = requests.post(url, json={"to": "+5215512345678"}, verify=str(stack.ca), timeout=5,
                                   headers={"Authorization": f"Bearer {OUTBOUND_TOKEN}"})
        assert with_token.status_code == 403


def test_no_version_in_server_header_or_error_pages_and_hsts_everywhere(stack: Stack, standin: RasaStandIn) -> None:
    for response in (requests.get(stack.public + "/health", verify=str(stack.ca), timeout=5),
                     requests.get(stack.public + "/nope", verify=str(stack.ca), timeout=5)):
        assert response.headers["Server"] == "nginx"
        assert not re.search(r"nginx/\d", response.text)
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert int(response.headers["Strict-Transport-Security"].split("=")[1]) >= 31536000


def test_bodies_over_64k_are_refused_before_the_bridge(stack: Stack) -> None:
    response = stack.phone().post(stack.public + VOICE, {"CallSid": "CA" + "3" * 32, "SpeechResult": "a" * 70_000})
    assert response.status_code == 413


def test_port_80_redirects_to_https_but_serves_the_acme_challenge(stack: Stack) -> None:
    redirect = requests.get(stack.http + VOICE + "?x=1", allow_redirects=False, timeout=5)
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == f"https://{DOMAIN}{VOICE}?x=1"
    token = "t0k3n-" + stack.mode.replace("=", "")
    (stack.acme_root / ".well-known" / "acme-challenge" / token).write_text("token.thumbprint")
    challenge = requests.get(f"{stack.http}/.well-known/acme-challenge/{token}", allow_redirects=False, timeout=5)
    assert challenge.status_code == 200 and challenge.text == "token.thumbprint"
    missing = requests.get(f"{stack.http}/.well-known/acme-challenge/missing", allow_redirects=False, timeout=5)
    assert missing.status_code == 404


def nginx_socket(stack: Stack) -> socket.socket:
    """A connection to nginx's TLS port: the WebSocket client resolves no names of its own (ivr.test is 127.0.0.1)."""
    return socket.create_connection(("127.0.0.1", int(stack.public.rsplit(":", 1)[1])), timeout=5)


def test_the_relay_websocket_goes_through_nginx_signed_for_the_public_wss_url(stack: Stack,
                                                                             standin: RasaStandIn) -> None:
    """Relay mode behind the shipped site: the upgrade passes nginx (Upgrade headers), its signature checks
    against wss://ivr.test:PORT, the call runs over it, and the action URL after it is answered too."""
    call = RelayCall(stack.phone())
    public_socket = "wss" + stack.public.removeprefix("https") + routes.RELAY
    assert call.connect(public_socket, stack.public + routes.RELAY_END, sock=nginx_socket(stack)).text == GREETING
    assert call.say("quiero hablar con un asesor").text == HANDOFF
    assert call.ended() == {"reason": "handoff", "why": "assistant", "number": HUMAN, "announced": True}
    assert call.dialed == HUMAN


def test_an_unsigned_relay_upgrade_is_refused_through_nginx(stack: Stack) -> None:
    public_socket = "wss" + stack.public.removeprefix("https") + routes.RELAY
    with pytest.raises(RelayRefused) as refused:
        open_relay_socket(stack.phone(token=""), public_socket, sock=nginx_socket(stack))
    assert refused.value.status == 403


def test_the_relay_location_keeps_a_call_long_socket_open() -> None:
    site = render_site(DOMAIN)
    relay = site[site.index("location = /webhook/twilio/relay"):site.index("location ^~ /webhook/twilio/")]
    assert "proxy_set_header Upgrade $http_upgrade;" in relay and 'proxy_set_header Connection "upgrade";' in relay
    assert "proxy_read_timeout 3600s;" in relay and "proxy_set_header X-Forwarded-Proto https;" in relay


def test_a_flood_is_rate_limited_with_429(stack: Stack) -> None:
    """Last in this module: it empties the limiter's burst for 127.0.0.1."""
    phone = stack.phone(token="flood")
    statuses = [phone.post(stack.public + "/webhook/twilio/status", {"CallSid": "CA" + "4" * 32}).status_code
                for _ in range(200)]
    assert statuses[:50] == [403] * 50, "the burst allowance reaches the bridge, which refuses the forgeries"
    assert statuses.count(429) >= 50
    assert set(statuses) == {403, 429}


def test_rendering_puts_each_bridge_host_in_the_upstream_and_refuses_what_is_not_an_address() -> None:
    site = render_site(DOMAIN, {"BRIDGE_UPSTREAM": "10.0.0.11:5001 10.0.0.12:5001"})
    upstream = re.search(r"upstream twilio_bridge \{(.*?)\}", site, re.S)
    assert upstream and re.findall(r"^\s*server (\S+);$", upstream.group(1), re.M) == ["10.0.0.11:5001", "10.0.0.12:5001"]
    with pytest.raises(Exception) as refused:
        render_site(DOMAIN, {"BRIDGE_UPSTREAM": "10.0.0.11:5001; include /etc/passwd"})
    assert "is not host:port" in refused.value.stderr  # type: ignore[attr-defined]


def test_a_domain_typed_in_capitals_finds_the_certificate_certbot_stored_in_lower_case(tmp_path: Path) -> None:
    """certbot lower-cases every -d name, so `certbot -d IVR.Test` stores live/ivr.test/."""
    variables = site_variables(tmp_path, "127.0.0.1:5001")
    site = render_site("IVR.Test", {"LETSENCRYPT_DIR": str(variables.letsencrypt_dir),
                                    "ACME_ROOT": str(variables.acme_root)})
    nginx = Nginx(tmp_path / "nginx")
    (nginx.sites / "twilio-bridge.conf").write_text(site)
    result = nginx.test()
    assert result.returncode == 0, result.stderr
    assert f"ssl_certificate {variables.letsencrypt_dir}/live/{DOMAIN}/fullchain.pem;" in site


@pytest.mark.parametrize("upstream", ["10.0.0.11", "10.0.0.11:5001 10.0.0.12", "bridge.internal:", "[::1]"])
def test_rendering_refuses_a_bridge_host_without_its_port(upstream: str) -> None:
    """nginx would send the webhooks to port 80 of that host."""
    with pytest.raises(Exception) as refused:
        render_site(DOMAIN, {"BRIDGE_UPSTREAM": upstream})
    assert "is not host:port" in refused.value.stderr  # type: ignore[attr-defined]
