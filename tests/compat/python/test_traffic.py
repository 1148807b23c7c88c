"""Where sessions' traffic goes, asked for through the official SDK and driven with
Playwright: through an upstream proxy (Debian's tinyproxy with basic auth, and microsocks
for SOCKS5 with a username and password), blockAds, and CA certificates a project uploads
for its sessions to trust (an HTTPS site on loopback with a certificate of a private CA)."""

import os
import shutil
import socket
import subprocess
import tempfile

import pytest
from browserbase import BadRequestError, NotFoundError
from playwright.sync_api import Error as PlaywrightError

from conftest import PROXY_PASSWORD, free_port, wait_until


def wait_listening(port, name):
    """Waits until something accepts connections on 127.0.0.1:port."""
    def listens():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listens, what=f"{name} to listen")


def wait_for_credentials_refusal(bb, session_id, proxy):
    """Waits for the session log's line saying `proxy` (no password) refused the credentials."""
    def named():
        return [log for log in bb.sessions.logs.list(session_id)
                if log.method == "browserd.proxyFailed"
                and log.request.params.get("proxy") == proxy
                and "credentials" in log.request.params.get("reason", "")]
    wait_until(named, what="the refusal in the session log")


@pytest.fixture(scope="module")
def tinyproxy():
    folder = tempfile.mkdtemp(prefix="browserd-py-tinyproxy-")
    port = free_port()
    log = os.path.join(folder, "access.log")
    conf = os.path.join(folder, "tinyproxy.conf")
    with open(conf, "w") as f:
        # No ConnectPort line: CONNECT to any port (browserd tunnels plain HTTP too).
        f.write(f"Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\n"
                f"LogFile \"{log}\"\nBasicAuth carol {PROXY_PASSWORD}\n")
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, "tinyproxy")
        yield {"server": f"http://127.0.0.1:{port}", "port": port, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def tunnels(log):
    """The host:port of every CONNECT the proxy was asked for."""
    return [line.split("): CONNECT ", 1)[1].split()[0]
            for line in open(log) if "): CONNECT " in line]


def test_an_external_proxy_carries_the_sessions_traffic_and_its_bytes_are_counted(
        bb, playwright, site, tinyproxy):
    s = bb.sessions.create(proxies=[{
        "type": "external", "server": tinyproxy["server"],
        "username": "carol", "password": PROXY_PASSWORD,
    }])
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    page.goto(f"{site}/page")
    assert page.text_content("#h") == "Hello from the test"
    assert site.removeprefix("http://") in tunnels(tinyproxy["log"])
    browser.close()  # without keepAlive: the session ends

    ended = wait_until(lambda: (got := bb.sessions.retrieve(s.id)).status == "COMPLETED" and got,
                       what="the session to end")
    # The page's bytes both ways (its request and its answer), at least.
    assert ended.proxy_bytes > 300, ended.proxy_bytes
    usage = bb.projects.usage(s.project_id)
    assert usage.proxy_bytes >= ended.proxy_bytes


def test_a_refused_proxy_fails_the_navigation_and_the_session_log_names_it(
        bb, playwright, site, tinyproxy):
    s = bb.sessions.create(keep_alive=True, proxies=[
        {"type": "external", "server": tinyproxy["server"], "username": "carol",
         "password": "wrong", "domain_pattern": r"127\.0\.0\.1"},
    ])
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    with pytest.raises(PlaywrightError, match="ERR_SOCKS_CONNECTION_FAILED"):
        page.goto(f"{site}/page")
    proxy = f"http://carol@127.0.0.1:{tinyproxy['port']}"
    wait_for_credentials_refusal(bb, s.id, proxy)
    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")


@pytest.fixture(scope="module")
def microsocks():
    folder = tempfile.mkdtemp(prefix="browserd-py-microsocks-")
    port = free_port()
    log = os.path.join(folder, "connections.log")
    # It logs each tunnel to stderr: "client[N] 127.0.0.1: connected to host:port".
    with open(log, "w") as out:
        proc = subprocess.Popen(["microsocks", "-i", "127.0.0.1", "-p", str(port),
                                 "-u", "dave", "-P", PROXY_PASSWORD],
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_listening(port, "microsocks")
        yield {"server": f"socks5://127.0.0.1:{port}", "port": port, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_socks5_proxy_with_credentials_carries_the_sessions_traffic(
        bb, playwright, site, microsocks):
    s = bb.sessions.create(keep_alive=True, proxies=[{
        "type": "external", "server": microsocks["server"],
        "username": "dave", "password": PROXY_PASSWORD,
    }])
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    page.goto(f"{site}/page")
    assert page.text_content("#h") == "Hello from the test"
    assert f"connected to {site.removeprefix('http://')}" in open(microsocks["log"]).read()
    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")
    ended = wait_until(lambda: (got := bb.sessions.retrieve(s.id)).status == "COMPLETED" and got,
                       what="the session to end")
    assert ended.proxy_bytes > 300, ended.proxy_bytes

    # Wrong credentials: the navigation fails, and the session log says why.
    s = bb.sessions.create(keep_alive=True, proxies=[{
        "type": "external", "server": microsocks["server"], "username": "dave", "password": "wrong",
    }])
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    with pytest.raises(PlaywrightError, match="ERR_SOCKS_CONNECTION_FAILED"):
        page.goto(f"{site}/page")
    proxy = f"socks5://dave@127.0.0.1:{microsocks['port']}"
    wait_for_credentials_refusal(bb, s.id, proxy)
    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")


def test_proxies_true_without_a_pool_is_refused_by_name(bb):
    with pytest.raises(BadRequestError, match="--proxy-pool"):
        bb.sessions.create(proxies=True)


def test_block_ads_keeps_an_ad_host_out_and_first_party_images_in(bb, playwright, site):
    s = bb.sessions.create(keep_alive=True, browser_settings={"block_ads": True})
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    page.goto(f"{site}/ads", wait_until="load")
    assert page.evaluate("[own.naturalWidth, ad.naturalWidth]") == [1, 0]

    def named():
        return [log for log in bb.sessions.logs.list(s.id)
                if log.method == "browserd.egressRefused"
                and log.request.params.get("host") == "ad.doubleclick.net"
                and "blockAds" in log.request.params.get("reason", "")]
    wait_until(named, what="the ad host in the session log")
    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")


@pytest.fixture(scope="module")
def private_ca_site():
    """A private CA (openssl), and an HTTPS server (openssl s_server) whose certificate it
    signed, for 127.0.0.1."""
    folder = tempfile.mkdtemp(prefix="browserd-py-ca-")
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    openssl = lambda *args: subprocess.run(["openssl", *args], check=True,  # noqa: E731
                                           capture_output=True, cwd=folder)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=browserd test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "site.key", "-out", "site.csr")
    with open(path("site.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "site.ext", "-out", "site.pem")
    port = free_port()
    proc = subprocess.Popen(["openssl", "s_server", "-quiet", "-www", "-accept", f"127.0.0.1:{port}",
                             "-cert", "site.pem", "-key", "site.key"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, "openssl s_server")
        yield {"url": f"https://127.0.0.1:{port}/", "ca": path("ca.pem"), "ca_key": path("ca.key")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_ca_certificate_uploaded_through_the_sdk_is_trusted_by_the_sessions_that_name_it(
        bb, playwright, private_ca_site):
    with open(private_ca_site["ca"], "rb") as f:
        cert = bb.certificates.create(file=f)
    assert cert.id in [c.id for c in bb.certificates.list()]
    assert bb.certificates.retrieve(cert.id).project_id == cert.project_id
    with open(private_ca_site["ca_key"], "rb") as f, pytest.raises(BadRequestError, match="private key"):
        bb.certificates.create(file=f)

    trusting = bb.sessions.create(keep_alive=True, proxy_settings={"ca_certificates": [cert.id]})
    plain = bb.sessions.create(keep_alive=True)
    for s, trusted in [(trusting, True), (plain, False)]:
        browser = playwright.chromium.connect_over_cdp(s.connect_url)
        page = browser.contexts[0].pages[0]
        if trusted:
            page.goto(private_ca_site["url"])
            assert "s_server" in page.content()
        else:
            # Only the session that named the certificate trusts it.
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                page.goto(private_ca_site["url"])
        browser.close()
        bb.sessions.update(s.id, status="REQUEST_RELEASE")

    bb.certificates.delete(cert.id)
    with pytest.raises(NotFoundError, match=f"certificate {cert.id} not found"):
        bb.sessions.create(proxy_settings={"ca_certificates": [cert.id]})
