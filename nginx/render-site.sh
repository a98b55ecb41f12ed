#!/usr/bin/env sh
# Print the bridge's nginx site for a domain, ready for /etc/nginx/sites-available/.
#
#   nginx/render-site.sh ivr.example.com > /etc/nginx/sites-available/twilio-bridge
#
# Defaults suit one Debian server running the bridge beside nginx; override any in the environment:
#   BRIDGE_UPSTREAM=127.0.0.1:5001  HTTP_LISTEN=80  HTTPS_LISTEN=443
#   LETSENCRYPT_DIR=/etc/letsencrypt  ACME_ROOT=/var/www/letsencrypt
#   OUTBOUND_ALLOW="203.0.113.7 10.0.0.0/8"   (who may use the outbound API through nginx; nobody by default)
# Several bridge hosts (sharing STATE_URL=redis://...): BRIDGE_UPSTREAM="10.0.0.11:5001 10.0.0.12:5001".
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DOMAIN" >&2; exit 2; }
case "$1" in
  *[!A-Za-z0-9.-]*|.*|*.|"") echo "render-site.sh: '$1' is not a domain name" >&2; exit 2 ;;
esac
# In lower case, as certbot stores its certificate (live/ivr.example.com/ for -d IVR.example.com).
DOMAIN=$(printf '%s' "$1" | tr 'A-Z' 'a-z')
export DOMAIN
upstream="${BRIDGE_UPSTREAM:-127.0.0.1:5001}"
BRIDGE_UPSTREAM=""
not_an_address() { echo "render-site.sh: BRIDGE_UPSTREAM: '$1' is not host:port or unix:path" >&2; exit 2; }
for address in $upstream; do
  case "$address" in
    *[!A-Za-z0-9.:_/\[\]-]*) not_an_address "$address" ;;
    unix:/*) ;;
    # A host without its port would be reached on nginx's default, port 80.
    *:*) case "${address##*:}" in ""|*[!0-9]*) not_an_address "$address" ;; esac ;;
    *) not_an_address "$address" ;;
  esac
  # The template has `server ${BRIDGE_UPSTREAM};`: each further host becomes a server line of its own.
  BRIDGE_UPSTREAM="${BRIDGE_UPSTREAM:+$BRIDGE_UPSTREAM;
    server }$address"
done
[ -n "$BRIDGE_UPSTREAM" ] || { echo "render-site.sh: BRIDGE_UPSTREAM is empty" >&2; exit 2; }
export BRIDGE_UPSTREAM
export HTTP_LISTEN="${HTTP_LISTEN:-80}"
export HTTPS_LISTEN="${HTTPS_LISTEN:-443}"
export LETSENCRYPT_DIR="${LETSENCRYPT_DIR:-/etc/letsencrypt}"
export ACME_ROOT="${ACME_ROOT:-/var/www/letsencrypt}"
# OUTBOUND_ALLOW: addresses or CIDRs (space- or comma-separated) that may use /api/outbound/; none by default.
OUTBOUND_ALLOW_RULES=
for address in $(printf '%s' "${OUTBOUND_ALLOW:-}" | tr ',' ' '); do
  case "$address" in
    *[!0-9A-Fa-f:./]*) echo "render-site.sh: OUTBOUND_ALLOW: '$address' is not an IP address or CIDR" >&2; exit 2 ;;
  esac
  OUTBOUND_ALLOW_RULES="${OUTBOUND_ALLOW_RULES:+$OUTBOUND_ALLOW_RULES }allow $address;"
done
export OUTBOUND_ALLOW_RULES
# Only these names: nginx's own $variables must stay as they are.
exec envsubst '${DOMAIN} ${BRIDGE_UPSTREAM} ${HTTP_LISTEN} ${HTTPS_LISTEN} ${LETSENCRYPT_DIR} ${ACME_ROOT} ${OUTBOUND_ALLOW_RULES}' \
  < "$(dirname "$0")/twilio-bridge.conf.template"
