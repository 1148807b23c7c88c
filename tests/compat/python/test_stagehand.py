"""Stagehand 4 for Python (PyPI `stagehand`) against a default (sandboxed) browserd: its
`browserbase.launch` uploads its extension and creates the session with it, and the
extension's service worker opens the session's connectUrl from inside the browser. No
language model is called; the model key is a stand-in that must never reach a log."""

import asyncio
import concurrent.futures

from stagehand import Stagehand, browserbase

from conftest import API_KEY

MODEL_KEY = "sk-python-model-key-never-logged-3a9e"


def test_stagehand_4_launches_navigates_and_closes(bb, browserd, site, monkeypatch):
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("BROWSERBASE_TELEMETRY_DISABLED", "1")

    async def run():
        browser = await browserbase.launch(api_key=API_KEY, base_url=browserd["base_url"])
        # Fails with "CDP websocket failed to open" when the browser cannot reach its session.
        stagehand = await Stagehand.create(
            browser=browser, model="openai/gpt-4o-mini", model_api_key=MODEL_KEY,
            api_url=f"{site}/stagehand-api")
        try:
            page = (await browser.context.pages())[0]
            await page.goto(f"{site}/app")
            text = await page.evaluate("document.querySelector('#h').textContent")
            shot = await page.screenshot()
        finally:
            await stagehand.close()
            await browser.close()
        return text, shot

    # In a thread of its own: the suite's sync Playwright keeps an event loop in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        text, shot = pool.submit(asyncio.run, run()).result()
    assert text == "Hello from the test"
    assert bytes(shot[:4]) == b"\x89PNG"
    # Its session was created with Stagehand's metadata, and close() released it.
    sessions = [s for s in bb.sessions.list() if (s.user_metadata or {}).get("stagehand") == "true"]
    assert sessions, "a Stagehand session was created"
    assert all(s.status == "COMPLETED" for s in sessions), [s.status for s in sessions]
