# Installs what browserd and its tests need and is missing. Sourced by scripts/run and
# scripts/test; safe to run again (it only installs what is not there).

_apt_updated=0
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ "$_apt_updated" -eq 0 ]; then
    $sudo apt-get update -qq
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. browserd needs Rust 1.94 or newer: install it with rustup (https://rustup.rs)." >&2
    exit 1
  fi
  # The bundled SQLite and zlib are C, built by cc: a C compiler and make (build-essential),
  # pkg-config for the system libraries a crate may look for.
  if ! command -v cc >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
    echo "setup: installing a C compiler and pkg-config (build-essential, pkg-config: crates build C code)"
    apt_install build-essential pkg-config
  fi
}

ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1; then
    return
  fi
  echo "setup: installing Chromium (Debian package chromium)"
  apt_install chromium
}

# seleniumRemoteUrl runs a chromedriver per session: Debian's, the same version as chromium.
ensure_chromedriver() {
  if ! command -v chromedriver >/dev/null 2>&1; then
    echo "setup: installing chromedriver (Debian package chromium-driver)"
    apt_install chromium-driver
  fi
}

# browserSettings.blockAds refuses the hosts EasyList and EasyPrivacy list; Debian ships and
# updates them with uBlock Origin. (The package also asks Debian's chromium wrapper to load
# uBlock itself, a Manifest V2 extension Chromium no longer runs: it stays unloaded.)
ensure_ad_lists() {
  if [ ! -f /usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist/easylist.txt ]; then
    echo "setup: installing webext-ublock-origin-chromium (EasyList, EasyPrivacy for blockAds)"
    apt_install webext-ublock-origin-chromium
  fi
}

# Each browser runs in a bubblewrap sandbox (its own uid and namespaces); setpriv (util-linux)
# drops it to that uid.
ensure_sandbox() {
  if ! command -v bwrap >/dev/null 2>&1 || ! command -v setpriv >/dev/null 2>&1; then
    echo "setup: installing bubblewrap (the browsers' sandbox)"
    apt_install bubblewrap util-linux
  fi
}

# proxySettings.caCertificates: each session's certificates go into an NSS database of its
# own, written with NSS's certutil.
ensure_certutil() {
  if ! command -v certutil >/dev/null 2>&1; then
    echo "setup: installing libnss3-tools (certutil, for sessions' CA certificates)"
    apt_install libnss3-tools
  fi
}

# The cluster tests run several nodes on one PostgreSQL, started per run by pg_virtualenv
# (Debian's postgresql-common) and dropped after.
ensure_postgres() {
  if ! command -v pg_virtualenv >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "setup: installing PostgreSQL (the cluster tests' shared database)"
    apt_install postgresql
  fi
}

# The metrics test scrapes browserd with a real Prometheus and checks it with promtool.
ensure_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "setup: installing Prometheus (the metrics test scrapes browserd with it)"
    apt_install prometheus
  fi
}

ensure_test_tools() {
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "setup: installing python3-venv"
    apt_install python3-venv python3-pip
  fi
  # A test serves a self-signed HTTPS site with openssl s_server (ignoreCertificateErrors).
  if ! command -v openssl >/dev/null 2>&1; then
    echo "setup: installing openssl"
    apt_install openssl
  fi
  # Proxy tests run two tinyproxy upstreams of their own; the package's own service is not
  # wanted (an open proxy on port 8888 the tests do not use).
  if ! command -v tinyproxy >/dev/null 2>&1; then
    echo "setup: installing tinyproxy (upstream proxies for the proxies tests)"
    apt_install tinyproxy
    systemctl disable --now tinyproxy >/dev/null 2>&1 || true
  fi
  # ...and a SOCKS5 upstream with a username and password (Debian ships no service for it).
  if ! command -v microsocks >/dev/null 2>&1; then
    echo "setup: installing microsocks (the SOCKS5 upstream for the proxies tests)"
    apt_install microsocks
  fi
  # The egress test builds network namespaces of its own (unshare, nsenter from util-linux;
  # ip from iproute2) and a veth between them.
  if ! command -v ip >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
    echo "setup: installing iproute2 and util-linux (network namespaces for the egress test)"
    apt_install iproute2 util-linux
  fi
  # The systemd unit in deploy/ is checked with systemd-analyze verify.
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "setup: installing systemd (for systemd-analyze)"
    apt_install systemd
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing Node.js and npm"
    apt_install nodejs npm
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}
