"""Selenium (the official Python bindings) on a session's seleniumRemoteUrl, with the
custom connection Browserbase's Selenium guide has users write: it adds the session's
signing key (or the legacy session-id and API key) to every request."""

import subprocess

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import (InvalidArgumentException, InvalidSessionIdException,
                                        WebDriverException)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.remote_connection import RemoteConnection

from conftest import API_KEY, wait_until


class BrowserbaseConnection(RemoteConnection):
    """As in Browserbase's guide: every request carries the session's credentials."""

    def __init__(self, headers, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bb_headers = headers

    def get_remote_connection_headers(self, parsed_url, keep_alive=False):
        headers = super().get_remote_connection_headers(parsed_url, keep_alive)
        headers.update(self.bb_headers)
        return headers


def remote(session, headers=None):
    connection = BrowserbaseConnection(
        headers if headers is not None else {"x-bb-signing-key": session.signing_key},
        session.selenium_remote_url)
    return webdriver.Remote(connection, options=webdriver.ChromeOptions())


def chromedrivers(data_dir):
    """chromedriver processes of this server's sessions (their log is in a browser folder)."""
    out = subprocess.run(["pgrep", "-af", "chromedriver"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if data_dir in line]


def test_selenium_drives_the_sessions_browser_and_quit_completes_it(bb, site, browserd):
    s = bb.sessions.create()
    driver = remote(s)
    driver.get(f"{site}/page")
    assert driver.title == "hello"
    driver.find_element(By.ID, "name").send_keys("typed by selenium")
    driver.find_element(By.ID, "b").click()
    assert driver.find_element(By.ID, "h").text == "clicked"
    assert driver.execute_script("return document.getElementById('name').value") == "typed by selenium"
    png = driver.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    driver.add_cookie({"name": "flavour", "value": "oat"})
    assert driver.get_cookie("flavour")["value"] == "oat"
    assert len(driver.window_handles) >= 1
    assert chromedrivers(browserd["data_dir"]), "a chromedriver runs for the session"
    driver.quit()
    # Without keepAlive, the WebDriver session was the last client: the session completes,
    # and its chromedriver goes with it.
    wait_until(lambda: bb.sessions.retrieve(s.id).status == "COMPLETED", what="COMPLETED")
    wait_until(lambda: not chromedrivers(browserd["data_dir"]), what="chromedriver to stop")


def test_keep_alive_survives_quit_and_playwright_sees_what_selenium_opened(bb, site, playwright):
    s = bb.sessions.create(keep_alive=True)
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    page.goto(f"{site}/login")

    legacy = {"session-id": s.id, "x-bb-api-key": API_KEY}
    driver = remote(s, legacy)
    # The page Playwright opened is the one Selenium sees: the same browser.
    assert driver.current_url == f"{site}/login"
    driver.get(f"{site}/page")
    wait_until(lambda: page.evaluate("location.href") == f"{site}/page",
               what="Playwright to see Selenium's navigation")
    driver.quit()
    assert bb.sessions.retrieve(s.id).status == "RUNNING"

    again = remote(s)
    assert again.current_url == f"{site}/page"
    again.quit()
    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")


def test_wrong_or_missing_credentials_and_browser_options_are_refused(bb):
    s = bb.sessions.create(keep_alive=True)
    new_session = {"capabilities": {"alwaysMatch": {"browserName": "chrome"}}}
    for headers, says in [({"x-bb-signing-key": "not-a-key"}, "invalid x-bb-signing-key"),
                          ({}, "missing credentials"),
                          ({"session-id": s.id, "x-bb-api-key": "bd_wrong"}, "invalid x-bb-api-key")]:
        # Selenium shows a 401 as "Authorization Required"; the body says why.
        with pytest.raises(WebDriverException, match="Authorization Required"):
            remote(s, headers)
        raw = requests.post(f"{s.selenium_remote_url}/session", json=new_session, headers=headers)
        assert raw.status_code == 401
        assert says in raw.json()["value"]["message"], raw.text
    options = webdriver.ChromeOptions()
    options.add_argument("--disable-web-security")
    connection = BrowserbaseConnection({"x-bb-signing-key": s.signing_key}, s.selenium_remote_url)
    with pytest.raises(InvalidArgumentException, match="goog:chromeOptions.args"):
        webdriver.Remote(connection, options=options)
    # W3C capability matching: the first firstMatch entry that this browser honours wins.
    signed = {"x-bb-signing-key": s.signing_key}
    either = {"capabilities": {"alwaysMatch": {"pageLoadStrategy": "eager"},
                               "firstMatch": [{"browserName": "firefox"}, {"browserName": "chrome"}]}}
    made = requests.post(f"{s.selenium_remote_url}/session", json=either, headers=signed)
    assert made.status_code == 200, made.text
    value = made.json()["value"]
    assert value["capabilities"]["browserName"] == "chrome"
    assert value["capabilities"]["pageLoadStrategy"] == "eager"
    gone = requests.delete(f"{s.selenium_remote_url}/session/{value['sessionId']}", headers=signed)
    assert gone.status_code == 200, gone.text
    bb.sessions.update(s.id, status="REQUEST_RELEASE")


def test_a_timeout_while_a_command_waits_answers_it_with_the_reason(bb, site, browserd):
    s = bb.sessions.create(keep_alive=True, api_timeout=4)
    driver = remote(s)
    driver.get(f"{site}/page")
    # A script that never calls back, with a script timeout longer than the session's: the
    # session times out while the command waits.
    driver.set_script_timeout(120)
    with pytest.raises(InvalidSessionIdException, match="has ended \\(TIMED_OUT\\)"):
        driver.execute_async_script("/* never calls back */")
    assert bb.sessions.retrieve(s.id).status == "TIMED_OUT"
    wait_until(lambda: not chromedrivers(browserd["data_dir"]), what="chromedriver to stop")


def test_chromedrivers_own_extensions_and_other_sessions_webdriver_ids_are_out_of_reach(bb):
    """Raw CDP (goog/cdp/execute), file pushes (se/file) and chromedriver's other extensions
    would pass around the CDP filter and the sandbox's folders: they are unknown commands.
    A WebDriver session id of another browserd session is not this one's."""
    a = bb.sessions.create(keep_alive=True)
    b = bb.sessions.create(keep_alive=True)
    driver_a, driver_b = remote(a), remote(b)
    signed = {"x-bb-signing-key": a.signing_key}
    base = f"{a.selenium_remote_url}/session/{driver_a.session_id}"
    for path, body in [("goog/cdp/execute", {"cmd": "Browser.getVersion", "params": {}}),
                       ("se/file", {"file": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}),
                       ("chromium/send_command_and_get_result", {"cmd": "Browser.close", "params": {}}),
                       ("goog/cast/get_sinks", {})]:
        raw = requests.post(f"{base}/{path}", json=body, headers=signed)
        assert raw.status_code == 404, (path, raw.text)
        assert raw.json()["value"]["error"] == "unknown command", raw.text
    other = requests.get(f"{a.selenium_remote_url}/session/{driver_b.session_id}/url", headers=signed)
    assert other.status_code == 404 and other.json()["value"]["error"] == "invalid session id"
    assert driver_a.execute_script("return 1") == 1, "its own session still works"
    driver_a.quit()
    driver_b.quit()
    for s in (a, b):
        bb.sessions.update(s.id, status="REQUEST_RELEASE")
