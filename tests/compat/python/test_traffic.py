"""Where sessions' traffic goes, asked for through the official SDK and driven with
Playwright: through an upstream proxy (Debian's tinyproxy with basic auth, and microsocks
for SOCKS5 with a username and password), and blockAds."""

import os
import shutil
import socket
import subprocess
import tempfile

import pytest
from browserbase import BadRequestError
from playwright.sync_api import Error as PlaywrightError

from conftest import PROXY_PASSWORD, free_port, wait_until


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
    def listens():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_until(listens, what="tinyproxy to listen")
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

    def named():
        return [log for log in bb.sessions.logs.list(s.id)
                if log.method == "browserd.proxyFailed"
                and log.request.params.get("proxy") == proxy
                and "credentials" in log.request.params.get("reason", "")]
    wait_until(named, what="the refusal in the session log")
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
    def listens():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_until(listens, what="microsocks to listen")
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

    def named():
        return [log for log in bb.sessions.logs.list(s.id)
                if log.method == "browserd.proxyFailed"
                and log.request.params.get("proxy") == proxy
                and "credentials" in log.request.params.get("reason", "")]
    wait_until(named, what="the refusal in the session log")
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
