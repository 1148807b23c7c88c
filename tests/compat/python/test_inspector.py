"""The session inspector through the official Python SDK, and the dashboard in a real browser
(Playwright driving a local Chromium): live view, DevTools, logs, recordings, settings."""

import hashlib
import os
import shutil
import tempfile
import time

import pytest
import requests
from browserbase import APIStatusError

from conftest import API_KEY, wait_until

SCREENSHOTS = os.environ.get("BROWSERD_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def viewer(playwright):
    """A local Chromium for looking at browserd's pages, as a person would."""
    browser = playwright.chromium.launch(
        executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
        args=["--no-sandbox"] if os.geteuid() == 0 else [])
    yield browser
    browser.close()


def open_page(playwright, session):
    browser = playwright.chromium.connect_over_cdp(session.connect_url)
    return browser, browser.contexts[0].pages[0]


def test_debug_urls_logs_and_recording_through_the_sdk(bb, browserd, playwright, site):
    s = bb.sessions.create(keep_alive=True)
    browser, page = open_page(playwright, s)
    page.goto(f"{site}/page")
    page.click("#b")
    assert page.text_content("#h") == "clicked"

    debug = bb.sessions.debug(s.id)
    base = browserd["base_url"].removeprefix("http://")
    for url in (debug.debugger_fullscreen_url, debug.debugger_url):
        assert url.startswith(f"http://{base}") and "/debug/" in url
    assert debug.ws_url.startswith(f"ws://{base}") and debug.ws_url.endswith("/devtools/browser")
    assert len(debug.pages) == 1
    tab = debug.pages[0]
    assert tab.url == f"{site}/page" and tab.title == "hello" and tab.id
    assert tab.debugger_fullscreen_url.endswith(f"/live?page={tab.id}")
    assert f"ws={base}/debug/" in tab.debugger_url and tab.debugger_url.endswith(f"/devtools/page/{tab.id}")
    assert isinstance(tab.favicon_url, str)

    # The URLs carry their own credential: no API key needed.
    assert requests.get(tab.debugger_fullscreen_url).status_code == 200
    devtools = requests.get(tab.debugger_url)
    assert devtools.status_code == 200 and "devtools" in devtools.text.lower()

    # wsUrl is a browser-level CDP endpoint; a debugger on it is not a client of the session.
    debugger = playwright.chromium.connect_over_cdp(debug.ws_url)
    assert debugger.version
    debugger.close()
    assert bb.sessions.retrieve(s.id).status == "RUNNING"

    # expiresIn is honoured.
    short = bb.sessions.debug(s.id, expires_in=1)
    wait_until(lambda: requests.get(short.debugger_fullscreen_url).status_code == 401,
               what="the short link to expire")
    assert "expired" in requests.get(short.debugger_fullscreen_url).json()["message"]

    logs = wait_until(lambda: [l for l in bb.sessions.logs.list(s.id) if l.method == "Page.navigate"],
                      what="Page.navigate in the log")
    nav = logs[0]
    assert nav.request.params["url"] == f"{site}/page"
    assert nav.response.result["frameId"] == nav.frame_id
    assert isinstance(nav.page_id, int) and nav.page_id > 0 and nav.session_id
    assert nav.timestamp > 1_700_000_000_000 and nav.request.timestamp <= nav.response.timestamp
    assert nav.request.raw_body.startswith("{") and nav.response.raw_body.startswith("{")

    events = wait_until(lambda: [e for e in bb.sessions.recording.retrieve(s.id)
                                 if e.type == 2 and "Hello from the test" in str(e.data)],
                        what="a full snapshot of the page")
    full = events[0]
    assert full.session_id == s.id and full.timestamp > 0 and full.id
    incremental = wait_until(lambda: [e for e in bb.sessions.recording.retrieve(s.id) if e.type == 3],
                             what="incremental events (the click changed the heading)")
    assert incremental

    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")
    # The links stop with the session; logs and recording stay.
    gone = requests.get(debug.debugger_fullscreen_url)
    assert gone.status_code == 410 and "ended" in gone.json()["message"]
    with pytest.raises(APIStatusError) as e:
        bb.sessions.debug(s.id)
    assert e.value.status_code == 409
    assert any(l.method == "Page.navigate" for l in bb.sessions.logs.list(s.id))
    assert any(e.type == 2 for e in bb.sessions.recording.retrieve(s.id))


def test_devtools_inspects_the_page_from_an_origin_of_its_own(bb, browserd, playwright, site, viewer):
    """The DevTools front end's bytes come from the session's browser, which a page may have
    taken over: they run in an opaque origin, so they cannot reach browserd's own pages (the
    dashboard's stored key), yet DevTools still works."""
    s = bb.sessions.create()
    browser, page = open_page(playwright, s)
    page.goto(f"{site}/page")
    tab = bb.sessions.debug(s.id).pages[0]
    headers = requests.get(tab.debugger_url).headers
    assert "sandbox allow-scripts" in headers["content-security-policy"]
    assert "allow-same-origin" not in headers["content-security-policy"]

    d = viewer.new_page(viewport={"width": 1300, "height": 800})
    errors = []
    d.on("pageerror", lambda e: errors.append(str(e)))
    d.goto(tab.debugger_url)
    assert d.evaluate("self.origin") == "null"
    # The dashboard's origin is out of reach: no cookies, no reading a window it opens
    # (its web storage is browserd's stand-in, in memory).
    assert d.evaluate("""() => { try { document.cookie; return 'readable'; }
                                  catch (e) { return e.name; } }""") == "SecurityError"
    assert d.evaluate(f"""async () => {{
        const w = window.open({browserd['base_url'] + '/dashboard'!r});
        try {{
            // Until the dashboard loads, the window holds an about:blank of this origin.
            for (let i = 0; i < 400; i++) {{
                try {{
                    if (w.document.URL.includes('/dashboard') && w.document.readyState === 'complete')
                        return 'readable';
                }} catch (e) {{ return e.name; }}
                await new Promise(r => setTimeout(r, 25));
            }}
            return 'never loaded';
        }} finally {{ w.close(); }} }}""") == "SecurityError"
    # Nor can it send anything elsewhere (a page of the browser's making asking for a key).
    assert d.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation', e => resolve(e.effectiveDirective));
        fetch('http://127.0.0.2:9/').catch(() => {});
    })""") == "connect-src"
    # DevTools itself works: its Elements panel shows the page's DOM, through the link's own
    # websocket.
    try:
        d.get_by_text("Hello from the test").first.wait_for(timeout=30_000)
    except Exception as e:
        raise AssertionError(f"DevTools showed no DOM; its page errors: {errors[:10]}") from e
    if SCREENSHOTS:
        d.screenshot(path=os.path.join(SCREENSHOTS, "devtools.png"))
    d.close()
    browser.close()


def test_log_session_and_record_session_false_keep_nothing(bb, playwright, site):
    s = bb.sessions.create(keep_alive=True, browser_settings={"logSession": False, "recordSession": False})
    browser, page = open_page(playwright, s)
    page.goto(f"{site}/page")
    page.click("#b")
    browser.close()
    bb.sessions.update(s.id, status="REQUEST_RELEASE")
    assert bb.sessions.logs.list(s.id) == []
    assert bb.sessions.recording.retrieve(s.id) == []


def live_point(viewer_page, remote_page, selector):
    """Where `selector` of the remote page shows on the live view's canvas."""
    canvas = viewer_page.frame_locator("#live").locator("#screen") if viewer_page.locator("#live").count() \
        else viewer_page.locator("#screen")
    box = canvas.bounding_box()
    target = remote_page.locator(selector).bounding_box()
    width, height = remote_page.evaluate("[innerWidth, innerHeight]")
    return (box["x"] + (target["x"] + target["width"] / 2) * box["width"] / width,
            box["y"] + (target["y"] + target["height"] / 2) * box["height"] / height)


def shot(page, name, full_page=False):
    """Screenshots go to a temp dir, or to BROWSERD_SCREENSHOT_DIR (docs/ when refreshed)."""
    path = os.path.join(SCREENSHOTS or tempfile.gettempdir(), name)
    page.screenshot(path=path, full_page=full_page)
    assert os.path.getsize(path) > 10_000


@pytest.fixture
def restore_default_timeout(bb, browserd):
    project = bb.projects.list()[0]
    yield
    requests.patch(f"{browserd['base_url']}/v1/projects/{project.id}", headers={"X-BB-API-Key": API_KEY},
                   json={"defaultTimeout": project.default_timeout}).raise_for_status()


def test_the_dashboard_in_a_real_browser(bb, browserd, playwright, site, viewer, restore_default_timeout):
    v = viewer.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    v.on("pageerror", lambda e: errors.append(str(e)))

    # Sign in: a wrong key is refused with the server's message; the right one gets in.
    v.goto(browserd["base_url"] + "/")
    assert v.url.endswith("/dashboard")
    v.fill("#key", "not-a-key")
    v.click("#signin-button")
    assert "invalid API key" in v.text_content("#signin-error")
    v.fill("#key", API_KEY)
    v.click("#signin-button")
    v.wait_for_selector("#chart svg")
    assert "GiB" in v.text_content("#glance-memory")

    # The overview draws this server's last hour: a create and a refusal show up in it.
    s = bb.sessions.create(keep_alive=True, user_metadata={"suite": "dashboard"})
    project = bb.projects.list()[0]
    patch = lambda rate: requests.patch(f"{browserd['base_url']}/v1/projects/{project.id}",  # noqa: E731
                                        headers={"X-BB-API-Key": API_KEY}, json={"creationRate": rate})
    patch(1).raise_for_status()
    try:
        refused = requests.post(f"{browserd['base_url']}/v1/sessions", headers={"X-BB-API-Key": API_KEY}, json={})
        assert refused.status_code == 429, refused.text
    finally:
        patch(0).raise_for_status()
    if not browserd["cluster"]:
        # Figures are per node: a gateway node of a cluster forwards creates unanswered.
        v.wait_for_function("() => { const c = document.getElementById('chart').dataset;"
                            " return Number(c.created) >= 1 && Number(c.refused) >= 1 && Number(c.live) >= 1; }",
                            timeout=15_000)
        assert v.locator("#chart rect.created").count() >= 1
        assert v.locator("#chart rect.refused").count() >= 1
        assert v.locator("#chart polyline.live").count() == 1
        assert "of 6" in v.text_content("#glance-live")
        shot(v, "dashboard-overview.png")
    v.click("#nav-sessions")
    v.wait_for_selector("#sessions")

    # A session created through the SDK appears in the live list.
    row = v.locator(f"tr[data-session='{s.id}']")
    row.wait_for()
    assert "RUNNING" in row.text_content() and "dashboard" in row.text_content()
    assert row.locator("td.left").text_content().endswith("s")  # time left, counting down
    remote_browser, remote = open_page(playwright, s)
    remote.goto(f"{site}/page")
    v.click("button[data-filter='RUNNING']")
    row.wait_for()
    shot(v, "dashboard-sessions.png")

    # Its page: the live view; a click and typing through it change the remote page.
    row.locator("a").click()
    v.wait_for_selector("#live")
    live = v.frame_locator("#live")
    live.locator("#screen[data-frames]").wait_for()
    v.mouse.click(*live_point(v, remote, "#b"))
    remote.wait_for_function("document.getElementById('h').textContent === 'clicked'")
    v.mouse.click(*live_point(v, remote, "#name"))
    v.keyboard.type("typed remotely")
    remote.wait_for_function("document.getElementById('name').value === 'typed remotely'")
    wait_until(lambda: "clicked" in remote.text_content("#h"), what="the remote change")
    time.sleep(0.5)  # let the next screencast frame reach the picture for the screenshot
    shot(v, "dashboard-live-view.png")
    v.wait_for_selector("#logs tr")
    assert "Page.navigate" in v.text_content("#logs")

    # The live view alone, read-only: it shows frames but sends no input.
    ro = bb.sessions.debug(s.id, extra_query={"readOnly": "true"})
    w = viewer.new_page(viewport={"width": 1300, "height": 800})
    w.goto(ro.debugger_fullscreen_url)
    w.wait_for_selector("#screen[data-frames]")
    assert "read-only" in w.text_content("#status")
    # That the server drops a read-only viewer's input (and says so) is proven at the
    # websocket in crates/browserd/tests/attacks.rs: no page-side event marks an absence.
    assert requests.get(ro.debugger_url).status_code == 403, "no DevTools on a read-only link"
    w.close()

    # Project settings: a common choice and a custom value, each given to the next session.
    v.click("#nav-settings")
    v.select_option("#timeout-choice", "900")
    v.click("#save-timeout")
    v.wait_for_selector("#settings-message:has-text('900')")
    fresh = bb.sessions.create()
    assert (fresh.expires_at - fresh.started_at).total_seconds() == 900
    bb.sessions.update(fresh.id, status="REQUEST_RELEASE")
    v.select_option("#timeout-choice", "custom")
    v.fill("#timeout-custom", "30")
    v.click("#save-timeout")
    v.wait_for_selector("#settings-message.error:has-text('60 to 21600')")
    v.select_option("#timeout-choice", "custom")
    v.fill("#timeout-custom", "123")
    v.click("#save-timeout")
    v.wait_for_selector("#settings-message:has-text('123')")
    v.wait_for_selector("#timeout-current:text-is('123 s')")
    fresh = bb.sessions.create()
    assert (fresh.expires_at - fresh.started_at).total_seconds() == 123
    bb.sessions.update(fresh.id, status="REQUEST_RELEASE")
    assert v.text_content("#concurrency") and v.text_content("#browser-minutes").isdigit()

    # Limits: the operator's own project may raise them; a bad value is named, not sent.
    def own_project(key=API_KEY):
        return requests.get(browserd["base_url"] + "/v1/projects", headers={"X-BB-API-Key": key})
    before = own_project().json()[0]
    v.fill("#concurrency-input", str(before["concurrency"] + 1))
    v.fill("#rate-input", "0")
    v.click("#save-limits")
    v.wait_for_selector("#limits-message:has-text('Saved')")
    assert own_project().json()[0]["concurrency"] == before["concurrency"] + 1
    v.fill("#concurrency-input", "0")
    v.click("#save-limits")
    v.wait_for_selector("#limits-message.error:has-text('at least 1')")
    v.fill("#concurrency-input", str(before["concurrency"]))
    v.click("#save-limits")
    v.wait_for_selector(f"#limits-message:has-text('Saved: {before['concurrency']} at once')")
    assert own_project().json()[0]["concurrency"] == before["concurrency"]

    # Keys: one made is shown once and works at once; revoked from the list, refused at once.
    v.click("#create-key")
    v.wait_for_selector("#new-key")
    made = v.text_content("#new-key").strip()
    assert own_project(made).status_code == 200
    made_id = hashlib.sha256(made.encode()).hexdigest()[:12]
    row = v.locator(f"#keys tr[data-key='{made_id}']")
    assert row.count() == 1 and made not in v.text_content("#keys")
    v.once("dialog", lambda dialog: dialog.accept())
    row.locator(".revoke-key").click()
    v.wait_for_selector(f"#keys-message:has-text('{made_id} revoked')")
    assert own_project(made).status_code == 401
    assert v.locator("#keys tr").count() >= 1 and own_project().status_code == 200
    # The nodes: this one alone, or (through a cluster) the node that serves the dashboard
    # and the one that runs the browsers, both live.
    nodes = v.locator("#nodes tr")
    assert nodes.count() >= 1
    states = [n.locator("td").nth(1).inner_text().strip() for n in nodes.all()]
    assert states and all(state == "live" for state in states), nodes.all_inner_texts()
    shot(v, "dashboard-settings.png")

    # Release from the UI; then the finished session replays its recording.
    v.goto(browserd["base_url"] + f"/dashboard#/sessions/{s.id}")
    v.click("#release")
    # The button is disabled while the release is asked, so the click reached it.
    v.wait_for_selector("#release[disabled], #status:has-text('COMPLETED')", state="attached")
    v.wait_for_selector("#status:has-text('COMPLETED'), #release-error")
    assert v.locator("#release-error").count() == 0, v.text_content("#release-error")
    v.wait_for_selector("#status:has-text('COMPLETED')")
    assert bb.sessions.retrieve(s.id).status == "COMPLETED"
    remote_browser.close()
    v.reload()
    v.wait_for_selector("#replay-box iframe")
    replay = v.frame_locator("#replay-box iframe")
    replay.locator("text=clicked").wait_for()
    v.wait_for_selector("#replay-box[data-finished='true']", timeout=60_000)
    shot(v, "dashboard-replay.png", full_page=True)
    assert errors == []


def test_the_live_view_switches_between_tabs(bb, playwright, site, viewer):
    s = bb.sessions.create(keep_alive=True)
    remote_browser, first = open_page(playwright, s)
    first.goto(f"{site}/page")
    second = remote_browser.contexts[0].new_page()
    second.goto(f"{site}/login")
    debug = bb.sessions.debug(s.id)
    assert [p.title for p in debug.pages][0] == "hello", "the primary tab comes first"
    assert {p.title for p in debug.pages} == {"hello", "login"}

    v = viewer.new_page(viewport={"width": 1300, "height": 800})
    v.goto(debug.debugger_fullscreen_url)
    v.wait_for_selector("#screen[data-frames]")
    v.wait_for_selector("#tabs button:nth-child(2)")
    assert v.get_attribute("#tabs button:nth-child(1)", "aria-pressed") == "true"
    second.evaluate("window.__clicked = false; document.addEventListener('mousedown', () => window.__clicked = true)")
    v.click("#tabs button:has-text('login')")
    v.wait_for_selector("#tabs button:has-text('login')[aria-pressed='true']")
    # Frames of the second tab arrive; a click through the live view lands there.
    v.wait_for_selector(f"#screen[data-frames][data-tab='{debug.pages[1].id}']")
    box = v.locator("#screen").bounding_box()
    v.mouse.click(box["x"] + 20, box["y"] + 20)
    second.wait_for_function("window.__clicked === true")
    assert first.evaluate("window.__clicked") is None
    v.close()
    remote_browser.close()
