"""certbot, for real, against Debian's pebble ACME server, the way the README tells an operator to do it.

pebble resolves ivr.test to 127.0.0.1 through pebble-challtestsrv's DNS and validates the http-01
challenge on nginx's port-80 stand-in (a free high port). First issuance goes through a bare
default server, as on a fresh Debian box; then the shipped site is enabled with certbot's
certificate, and renewal goes through the shipped site (nginx plugin, then webroot) and reloads
nginx with the deploy hook.
"""
from __future__ import annotations

import shlex
import socket
import ssl
import subprocess
from pathlib import Path

import requests

from tests.ops_tools import DOMAIN, Nginx, Pebble, SiteVariables, pebble, render_site, require_command, require_package
from tests.servers import free_ports, port_open, wait_for


def served_certificate(port: int, trust: Path) -> bytes:
    """The certificate nginx presents for ivr.test, after checking its chain against `trust`."""
    context = ssl.create_default_context(cafile=str(trust))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")


def certbot(acme: Pebble, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [require_command("certbot", "certbot"), "--non-interactive", "--server", acme.directory_url,
               "--config-dir", str(root / "letsencrypt"), "--work-dir", str(root / "work"),
               "--logs-dir", str(root / "logs"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=45,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "REQUESTS_CA_BUNDLE": str(acme.ca_bundle)})
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def test_certbot_issues_and_renews_through_the_shipped_site(tmp_path: Path) -> None:
    require_package("python3-certbot-nginx", "/usr/lib/python3/dist-packages/certbot_nginx")
    nginx = Nginx(tmp_path / "nginx")
    upstream, http_port, https_port = free_ports(3)
    variables = SiteVariables(f"127.0.0.1:{upstream}", http_port, https_port,
                              tmp_path / "letsencrypt", tmp_path / "acme")
    (variables.acme_root / ".well-known" / "acme-challenge").mkdir(parents=True)
    # A fresh Debian nginx: only its default site answers on port 80.
    bootstrap = nginx.sites / "default.conf"
    bootstrap.write_text(f"server {{\n    listen 127.0.0.1:{variables.http_port} default_server;\n"
                         f"    server_name _;\n    root {tmp_path / 'html'};\n}}\n")
    reload_nginx = shlex.join(nginx.command("-s", "reload"))
    nginx_plugin = ["--nginx", "--nginx-server-root", str(nginx.directory), "--nginx-ctl", nginx.binary,
                    "--http-01-port", str(variables.http_port)]

    with pebble(tmp_path / "pebble", variables.http_port) as acme, nginx.running(variables.http_port):
        certbot(acme, tmp_path, "certonly", *nginx_plugin, "-d", DOMAIN, "--agree-tos",
                "--register-unsafely-without-email", "--deploy-hook", reload_nginx)
        live = variables.letsencrypt_dir / "live" / DOMAIN
        assert (live / "fullchain.pem").is_file() and (live / "privkey.pem").is_file()

        bootstrap.unlink()
        site = nginx.sites / "twilio-bridge.conf"
        site.write_text(render_site(DOMAIN, variables.environment()))
        assert nginx.test().returncode == 0, nginx.test().stderr
        nginx.reload()
        wait_for(lambda: port_open(variables.https_port))
        pebble_root = tmp_path / "pebble-root.pem"
        pebble_root.write_text(requests.get(f"{acme.management_url}/roots/0", verify=str(acme.ca_bundle), timeout=5).text)
        issued = served_certificate(variables.https_port, pebble_root)
        assert issued == pem_to_der(live / "cert.pem"), "nginx serves certbot's certificate, trusted via pebble's root"

        rendered = site.read_text()
        # Without a terminal certbot sleeps up to 8 minutes before renewing, as the timer's runs do.
        certbot(acme, tmp_path, "renew", "--dry-run", "--no-random-sleep-on-renew")
        certbot(acme, tmp_path, "renew", "--force-renewal", "--no-random-sleep-on-renew")
        assert site.read_text() == rendered, "certbot put the shipped site back as it was after the challenge"
        renewal = (variables.letsencrypt_dir / "renewal" / f"{DOMAIN}.conf").read_text()
        assert "authenticator = nginx" in renewal and "renew_hook = " in renewal
        wait_for(lambda: served_certificate(variables.https_port, pebble_root) != issued)
        renewed = served_certificate(variables.https_port, pebble_root)
        assert renewed == pem_to_der(live / "cert.pem"), "the deploy hook reloaded nginx with the renewed certificate"

        # Where certbot cannot edit nginx's files (Docker Compose), the site's webroot serves the challenge.
        certbot(acme, tmp_path, "certonly", "--webroot", "-w", str(variables.acme_root), "-d", DOMAIN,
                "--cert-name", DOMAIN, "--force-renewal", "--deploy-hook", reload_nginx)
        assert "authenticator = webroot" in (variables.letsencrypt_dir / "renewal" / f"{DOMAIN}.conf").read_text()
        wait_for(lambda: served_certificate(variables.https_port, pebble_root) != renewed)

