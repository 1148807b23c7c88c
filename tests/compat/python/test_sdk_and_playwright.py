"""The official Python SDK (browserbase) and Playwright for Python against browserd."""

import datetime
import os
import subprocess
import time

import pytest
from browserbase import Browserbase, AuthenticationError, BadRequestError, NotFoundError, RateLimitError

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from conftest import API_KEY, wait_until


def test_create_retrieve_list_and_release(bb):
    s = bb.sessions.create(keep_alive=True, api_timeout=120, region="us-east-1",
                           user_metadata={"suite": {"name": "python"}},
                           browser_settings={"viewport": {"width": 900, "height": 600}})
    assert s.status == "RUNNING"
    assert s.keep_alive is True
    assert s.region == "us-east-1"
    assert s.connect_url.startswith("ws://127.0.0.1:") and "signingKey=" in s.connect_url
    assert s.signing_key and s.selenium_remote_url
    assert (s.expires_at - s.started_at) == datetime.timedelta(seconds=120)
    assert isinstance(s.created_at, datetime.datetime)

    got = bb.sessions.retrieve(s.id)
    assert got.id == s.id and got.connect_url == s.connect_url

    running = [x.id for x in bb.sessions.list(status="RUNNING")]
    assert s.id in running
    found = [x.id for x in bb.sessions.list(q="user_metadata['suite']['name']:'python'")]
    assert found == [s.id]

    released = bb.sessions.update(s.id, status="REQUEST_RELEASE")
    assert released.status == "COMPLETED"
    assert released.ended_at is not None
    assert bb.sessions.retrieve(s.id).connect_url is None
    # Releasing again is harmless.
    assert bb.sessions.update(s.id, status="REQUEST_RELEASE").status == "COMPLETED"


def test_playwright_drives_the_session_and_keep_alive_survives_a_reconnect(bb, playwright, site):
    s = bb.sessions.create(keep_alive=True)
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    context = browser.contexts[0]
    page = context.pages[0]
    page.goto(f"{site}/login")
    page.goto(f"{site}/page")
    page.click("#b")
    page.fill("#name", "kept")
    assert page.text_content("#h") == "clicked"
    browser.close()  # only disconnects a CDP-connected browser

    assert bb.sessions.retrieve(s.id).status == "RUNNING"
    again = playwright.chromium.connect_over_cdp(s.connect_url)
    page = again.contexts[0].pages[0]
    assert page.url == f"{site}/page"
    assert page.text_content("#h") == "clicked", "DOM state survives the reconnect"
    assert page.input_value("#name") == "kept"
    cookies = {c["name"]: c["value"] for c in again.contexts[0].cookies()}
    assert cookies.get("auth") == "yes"

    disconnected = []
    again.on("disconnected", lambda _: disconnected.append(True))
    assert bb.sessions.update(s.id, status="REQUEST_RELEASE").status == "COMPLETED"
    # Playwright's event loop runs while it waits; wait_until polls through page calls.
    with pytest.raises(PlaywrightError, match="closed"):
        wait_until(lambda: page.evaluate("false"), timeout=10)
    assert disconnected, "Playwright reports the browser as closed"


def test_without_keep_alive_disconnecting_completes_the_session(bb, playwright):
    s = bb.sessions.create()
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    assert browser.contexts[0].pages[0].evaluate("6 * 7") == 42
    browser.close()
    wait_until(lambda: bb.sessions.retrieve(s.id).status == "COMPLETED", what="COMPLETED")


def test_a_timeout_ends_the_session_and_playwright_sees_the_browser_close(bb, playwright):
    s = bb.sessions.create(keep_alive=True, api_timeout=3)
    browser = playwright.chromium.connect_over_cdp(s.connect_url)
    page = browser.contexts[0].pages[0]
    disconnected = []
    browser.on("disconnected", lambda _: disconnected.append(True))
    started = time.monotonic()
    # A script waiting on the page when the session expires gets an error at once, not a hang.
    with pytest.raises(PlaywrightError) as err:
        page.wait_for_function("false", timeout=30_000)
    assert not isinstance(err.value, PlaywrightTimeoutError), err.value
    # Playwright shows the close reason browserd sent.
    assert "session timed out" in str(err.value), err.value
    assert time.monotonic() - started < 15
    assert disconnected, "Playwright reports the browser as closed"
    ended = bb.sessions.retrieve(s.id)
    assert ended.status == "TIMED_OUT"
    assert ended.ended_at >= ended.expires_at


def test_errors_surface_as_the_sdk_exceptions(bb, browserd):
    with pytest.raises(BadRequestError) as e:
        bb.sessions.create(api_timeout=21601)
    assert "timeout must be <= 21600" in str(e.value)
    with pytest.raises(NotFoundError):
        bb.sessions.retrieve("00000000-0000-0000-0000-000000000000")
    with pytest.raises(AuthenticationError):
        Browserbase(api_key="wrong", base_url=browserd["base_url"]).sessions.list()

    # A project allowed one session at a time gets a 429 the SDK does not retry.
    out = subprocess.run([browserd["bin"], "--data-dir", browserd["data_dir"], "project", "create",
                          "py-limited", "--concurrency", "1"], check=True, capture_output=True, text=True,
                         env=browserd["env"]).stdout
    key = next(l.split()[2] for l in out.splitlines() if l.startswith("API key:"))
    limited = Browserbase(api_key=key, base_url=browserd["base_url"])
    first = limited.sessions.create()
    with pytest.raises(RateLimitError) as e:
        limited.sessions.create()
    assert "limit 1, currently 1" in str(e.value)
    assert e.value.response.headers["x-should-retry"] == "false"
    limited.sessions.update(first.id, status="REQUEST_RELEASE")


def test_projects_and_usage(bb):
    projects = bb.projects.list()
    assert len(projects) == 1
    p = bb.projects.retrieve(projects[0].id)
    assert p.default_timeout >= 60 and p.concurrency >= 1
    s = bb.sessions.create()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")
    usage = bb.projects.usage(p.id)
    assert usage.browser_minutes >= 1
    assert usage.proxy_bytes == 0
