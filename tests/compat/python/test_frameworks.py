"""Frameworks Browserbase users reach browsers through, pointed at browserd only through
their documented settings: LangChain's BrowserbaseLoader (the Python SDK, through
BROWSERBASE_BASE_URL) and scrapy-playwright (PLAYWRIGHT_CDP_URL = a session's connectUrl)."""

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap

from conftest import API_KEY, wait_until


def test_langchain_browserbase_loader_reads_pages(bb, browserd, site, monkeypatch):
    from langchain_community.document_loaders import BrowserbaseLoader

    monkeypatch.setenv("BROWSERBASE_BASE_URL", browserd["base_url"])
    project_id = bb.projects.list()[0].id
    before = {s.id for s in bb.sessions.list()}
    loader = BrowserbaseLoader(urls=[f"{site}/app", f"{site}/login"], text_content=True,
                               api_key=API_KEY, project_id=project_id)
    # In a thread of its own: the loader runs sync Playwright, which the suite's own
    # session-wide Playwright already runs in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        docs = pool.submit(lambda: list(loader.lazy_load())).result()
    assert [d.metadata["url"] for d in docs] == [f"{site}/app", f"{site}/login"]
    assert "Hello from the test" in docs[0].page_content
    assert "logged in" in docs[1].page_content
    # One session per page, each ended when the loader disconnected (keepAlive off).
    def ended():
        made = [s for s in bb.sessions.list() if s.id not in before]
        return len(made) == 2 and all(s.status == "COMPLETED" for s in made)
    wait_until(ended, what="the loader's two sessions to end")


SPIDER = textwrap.dedent("""
    import scrapy

    class Pages(scrapy.Spider):
        name = "pages"
        custom_settings = {
            "DOWNLOAD_HANDLERS": {
                "http": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
                "https": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
            },
            "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
            "LOG_LEVEL": "ERROR",
        }

        async def start(self):
            yield scrapy.Request(self.url, meta={"playwright": True})

        def parse(self, response):
            yield {"heading": response.css("#h::text").get(), "url": response.url}
""")


def test_scrapy_playwright_crawls_through_a_connect_url(bb, site, tmp_path):
    session = bb.sessions.create(keep_alive=True)
    spider = tmp_path / "pages.py"
    spider.write_text(SPIDER)
    out = tmp_path / "items.json"
    env = {**os.environ, "PLAYWRIGHT_CDP_URL": session.connect_url}
    run = subprocess.run(
        [sys.executable, "-m", "scrapy", "runspider", str(spider), "-a", f"url={site}/app",
         "-s", f"PLAYWRIGHT_CDP_URL={session.connect_url}", "-O", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    items = json.loads(out.read_text())
    assert items == [{"heading": "Hello from the test", "url": f"{site}/app"}], run.stderr[-2000:]
    assert bb.sessions.retrieve(session.id).status == "RUNNING", "keepAlive: scrapy only disconnected"


# browser-use lives in a virtualenv of its own (its pins clash with Stagehand 4's); the test
# command makes it, and this test runs browser-use there.
BROWSER_USE_PYTHON = os.path.join(os.path.dirname(__file__), "..", "..", "..", ".venv-browser-use", "bin", "python")


def test_browser_use_drives_a_keep_alive_session(bb, site):
    session = bb.sessions.create(keep_alive=True)
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "false", "BROWSER_USE_CLOUD_SYNC": "false",
           "BROWSER_USE_LOGGING_LEVEL": "error"}
    run = subprocess.run(
        [BROWSER_USE_PYTHON, os.path.join(os.path.dirname(__file__), "browser_use_client", "drive.py"),
         session.connect_url, f"{site}/app"],
        env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["url"] == f"{site}/app"
    # What its agent would be shown: the page's text and its interactive elements.
    assert "Hello from the test" in seen["text"], seen["text"]
    assert "<button id=b" in seen["text"], seen["text"]
    assert seen["screenshot"]
    assert bb.sessions.retrieve(session.id).status == "RUNNING", "keepAlive: it only disconnected"
