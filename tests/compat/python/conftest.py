"""Fixtures: a real browserd (the built binary) on a free port, a page server on loopback,
and the official Browserbase SDK pointed at browserd with only the base URL and key changed."""

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
from browserbase import Browserbase

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("BROWSERD_BIN", os.path.join(REPO, "target", "debug", "browserd"))
API_KEY = "bd_python_compat_key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout=30.0, what="condition"):
    """Polls `check` until it returns a truthy value; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# With BROWSERD_COMPAT_DATABASE (a PostgreSQL URL), the SDK talks to a node that runs no
# browsers: every create is placed on a second node, and every request and websocket about a
# session is forwarded to it. The tests see the same contract either way.
CLUSTER_DATABASE = os.environ.get("BROWSERD_COMPAT_DATABASE")
CONTEXT_KEY = "0123456789abcdef" * 4
# The upstream proxy's password in test_traffic: never in a log.
PROXY_PASSWORD = "tiny-proxy-secret-5f1c"


# Every node logs at debug level into this folder; at the end no log may hold a secret.
LOG_DIR = tempfile.mkdtemp(prefix="browserd-py-logs-")


# Only the fixture's nodes join the cluster's database: a test that starts a server of its
# own (the fuzzer) must not become a third node that shares the project and takes creates.
CLUSTER_ENV = {"BROWSERD_DATABASE": CLUSTER_DATABASE, "BROWSERD_CONTEXT_KEY": CONTEXT_KEY} if CLUSTER_DATABASE else {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows what the servers said meanwhile: their warnings, errors
    and access lines (the logs hold no secret: asserted at the end), the last 60 of each."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or not os.path.isdir(LOG_DIR):
        return
    for name in sorted(os.listdir(LOG_DIR)):
        with open(os.path.join(LOG_DIR, name), errors="replace") as f:
            lines = [l.rstrip() for l in f if " WARN " in l or " ERROR " in l or "browserd::access" in l]
        report.sections.append((f"browserd log {name}: warnings, errors, requests", "\n".join(lines[-60:])))


def start_node(data_dir, *extra):
    port = free_port()
    log = open(os.path.join(LOG_DIR, f"{port}.log"), "w")
    proc = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
         "--api-key", API_KEY, "--min-timeout", "1",
         "--allow-local-egress", "true", "--shutdown", "end", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, **CLUSTER_ENV, "RUST_LOG": "debug"},
    )
    for line in proc.stdout:
        if "listening on" in line:
            break
    else:
        raise RuntimeError("browserd did not start")
    # Drain stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def browserd():
    data_dir = tempfile.mkdtemp(prefix="browserd-py-")
    if CLUSTER_DATABASE:
        owner, _ = start_node(data_dir, "--max-sessions", "6", "--node-name", "owner")
        gateway_dir = tempfile.mkdtemp(prefix="browserd-py-gateway-")
        gateway, base_url = start_node(gateway_dir, "--max-sessions", "0", "--node-name", "gateway")
        procs = [gateway, owner]
    else:
        owner, base_url = start_node(data_dir, "--max-sessions", "6")
        gateway_dir, procs = None, [owner]
    # data_dir: where the sessions' browsers and files are (the owner's).
    # env: what a `browserd` command run by a test needs to reach the same store.
    yield {"base_url": base_url, "data_dir": data_dir, "bin": BIN, "cluster": bool(CLUSTER_DATABASE),
           "env": {**os.environ, **CLUSTER_ENV}}
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # Every session ended at shutdown: no process of any of its browsers is left.
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and names(pid, data_dir)]
    assert not left, f"browser processes outlived browserd: {left}"
    assert_no_secret_logged(data_dir)
    for d in [data_dir, gateway_dir, LOG_DIR]:
        if d:
            shutil.rmtree(d, ignore_errors=True)


def assert_no_secret_logged(data_dir):
    """The servers' debug-level logs of the whole run hold no key, signing key, link token,
    database or proxy password."""
    import re
    secrets = [API_KEY, CONTEXT_KEY, PROXY_PASSWORD]
    made_key = os.path.join(data_dir, "context.key")
    if os.path.exists(made_key):
        secrets.append(open(made_key).read().strip())
    if CLUSTER_DATABASE and ":" in CLUSTER_DATABASE.split("@")[0][len("postgres://"):]:
        secrets.append(CLUSTER_DATABASE.split("@")[0].rsplit(":", 1)[1])
    for name in os.listdir(LOG_DIR):
        text = open(os.path.join(LOG_DIR, name), errors="replace").read()
        assert text, f"{name} is empty: the server logged nothing"
        for secret in secrets:
            assert secret not in text, f"a secret is in the log {name}"
        assert not re.search(r"signingKey=[A-Za-z0-9]", text), f"a signing key is in the log {name}"
        assert not re.search(r"apiKey=[A-Za-z0-9]", text), f"an API key is in the log {name}"
        assert not re.search(r"/debug/[0-9a-f]{32}\.", text), f"a link token is in the log {name}"


def names(pid, path):
    """Whether process `pid`'s command line names `path`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return path.encode() in f.read()
    except OSError:
        return False


@pytest.fixture
def bb(browserd):
    client = Browserbase(api_key=API_KEY, base_url=browserd["base_url"])
    yield client
    # Leave no session running for the next test.
    for s in client.sessions.list(status="RUNNING"):
        client.sessions.update(s.id, status="REQUEST_RELEASE")


# A 1x1 PNG.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63f8cfc0f01f00050001ff89993d1d0000000049454e44ae426082")


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/account"):
            return self._account()
        if self.path.startswith("/signin"):
            # A real sign-in: a session cookie (no expiry), which Chromium never writes
            # to disk, so only browserd's cookie restore can carry it to the next session.
            user = self.path.split("user=", 1)[1] if "user=" in self.path else "nobody"
            return self._send(b"<html><body>signed in</body></html>",
                              [("Set-Cookie", f"session_user={user}; Path=/; HttpOnly")])
        if self.path.startswith("/files/report.txt"):
            return self._send(b"quarterly numbers\n", [
                ("Content-Disposition", "attachment; filename=report.txt")], "text/plain")
        if self.path.startswith("/form"):
            return self._send(
                b"<html><body><input type='file' id='f'><pre id='out'></pre><script>"
                b"document.getElementById('f').addEventListener('change', async (e) => {"
                b"  const file = e.target.files[0];"
                b"  document.getElementById('out').textContent = file.name + ':' + await file.text();"
                b"});</script></body></html>")
        if self.path.startswith("/pixel.png"):
            return self._send(PIXEL, content_type="image/png")
        if self.path.startswith("/ads"):
            # A first-party image and one from a well-known ad host (EasyList: ||ad.doubleclick.net^).
            return self._send(b"<html><body><img id='own' src='/pixel.png'>"
                              b"<img id='ad' src='http://ad.doubleclick.net/pixel.png'></body></html>")
        if self.path.startswith("/downloads"):
            return self._send(b"<html><body><a id='get' href='/files/report.txt'>report</a></body></html>")
        if self.path.startswith("/login"):
            body = b"<html><title>login</title><body>logged in</body></html>"
            self.send_response(200)
            self.send_header("Set-Cookie", "auth=yes; Path=/")
        else:
            body = (b"<html><title>hello</title><body><h1 id='h'>Hello from the test</h1>"
                    b"<input id='name'><button id='b' onclick=\"document.getElementById('h').textContent='clicked'\">go</button>"
                    b"</body></html>")
            self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _account(self):
        cookies = self.headers.get("Cookie") or ""
        user = next((c.split("=", 1)[1] for c in cookies.split("; ")
                     if c.startswith("session_user=")), None)
        text = f"Welcome {user}" if user else "Please sign in"
        self._send(f"<html><body><h1 id='who'>{text}</h1></body></html>".encode())

    def _send(self, body, headers=(), content_type="text/html"):
        self.send_response(200)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def playwright():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p
