"""Contexts, extensions, uploads and downloads through the official Python SDK and Playwright."""

import io
import os
import zipfile

import pytest
from browserbase import APIStatusError, BadRequestError, ConflictError, NotFoundError

from conftest import wait_until


def open_page(playwright, session):
    browser = playwright.chromium.connect_over_cdp(session.connect_url)
    return browser, browser.contexts[0].pages[0]


def page_state(page, site):
    """Who the site thinks is signed in, and what the page stored locally."""
    page.goto(f"{site}/account")
    local = page.evaluate("localStorage.getItem('theme')")
    idb = page.evaluate("""() => new Promise((resolve) => {
        const open = indexedDB.open('app', 1);
        open.onupgradeneeded = () => open.result.createObjectStore('kv');
        open.onsuccess = () => {
            const get = open.result.transaction('kv').objectStore('kv').get('draft');
            get.onsuccess = () => resolve(get.result ?? null);
            get.onerror = () => resolve(null);
        };
    })""")
    return page.text_content("#who"), local, idb


def sign_in_and_store(page, site, user, theme, draft):
    page.goto(f"{site}/signin?user={user}")
    page.goto(f"{site}/account")
    page.evaluate("theme => localStorage.setItem('theme', theme)", theme)
    page.evaluate("""draft => new Promise((resolve, reject) => {
        const open = indexedDB.open('app', 1);
        open.onupgradeneeded = () => open.result.createObjectStore('kv');
        open.onsuccess = () => {
            const tx = open.result.transaction('kv', 'readwrite');
            tx.objectStore('kv').put(draft, 'draft');
            tx.oncomplete = () => resolve();
            tx.onerror = () => reject(tx.error);
        };
    })""", draft)


def test_a_persisted_context_keeps_the_login_and_storage_for_the_next_session(bb, playwright, site):
    ctx = bb.contexts.create()
    assert ctx.upload_url.startswith("http") and ctx.cipher_algorithm == "AES-256-GCM"
    assert ctx.initialization_vector_size == 12
    got = bb.contexts.retrieve(ctx.id)
    assert got.id == ctx.id and got.project_id == bb.projects.list()[0].id

    first = bb.sessions.create(browser_settings={"context": {"id": ctx.id, "persist": True}})
    assert bb.sessions.retrieve(first.id).context_id == ctx.id
    browser, page = open_page(playwright, first)
    assert page_state(page, site)[0] == "Please sign in"
    sign_in_and_store(page, site, "alice", "dark", "hello")
    assert page_state(page, site) == ("Welcome alice", "dark", "hello")
    browser.close()
    # keepAlive is off: the disconnect ended the session, and its save began. The save
    # finishes after the end is recorded; updatedAt moves when it lands.
    wait_until(lambda: bb.sessions.retrieve(first.id).status == "COMPLETED", what="the end")
    wait_until(lambda: bb.contexts.retrieve(ctx.id).updated_at > got.updated_at, what="the save")

    # A new session with the context is signed in: the session cookie came back too.
    second = bb.sessions.create(browser_settings={"context": {"id": ctx.id, "persist": False}})
    browser, page = open_page(playwright, second)
    assert page_state(page, site) == ("Welcome alice", "dark", "hello")
    # persist: false: what this session changes is not saved.
    sign_in_and_store(page, site, "mallory", "light", "changed")
    browser.close()
    bb.sessions.update(second.id, status="REQUEST_RELEASE")

    third = bb.sessions.create(browser_settings={"context": {"id": ctx.id, "persist": True}})
    browser, page = open_page(playwright, third)
    assert page_state(page, site) == ("Welcome alice", "dark", "hello")
    browser.close()
    bb.sessions.update(third.id, status="REQUEST_RELEASE")

    # A session without the context starts clean.
    plain = bb.sessions.create()
    browser, page = open_page(playwright, plain)
    assert page_state(page, site) == ("Please sign in", None, None)
    browser.close()

    bb.contexts.delete(ctx.id)
    with pytest.raises(NotFoundError):
        bb.contexts.retrieve(ctx.id)
    with pytest.raises(NotFoundError):
        bb.sessions.create(browser_settings={"context": {"id": ctx.id, "persist": True}})


def test_a_keep_alive_session_saves_its_context_when_it_times_out(bb, playwright, site):
    ctx = bb.contexts.create(name="timeout-save")
    s = bb.sessions.create(keep_alive=True, api_timeout=5,
                           browser_settings={"context": {"id": ctx.id, "persist": True}})
    browser, page = open_page(playwright, s)
    sign_in_and_store(page, site, "bob", "blue", "draft")
    browser.close()
    wait_until(lambda: bb.sessions.retrieve(s.id).status == "TIMED_OUT", what="the timeout")
    again = bb.sessions.create(browser_settings={"context": {"id": ctx.id}})
    browser, page = open_page(playwright, again)
    assert page_state(page, site) == ("Welcome bob", "blue", "draft")
    browser.close()


def test_context_names_are_unique_per_project_and_errors_are_clear(bb):
    bb.contexts.create(name="Shop Login")
    with pytest.raises(ConflictError) as e:
        bb.contexts.create(name="  shop login ")
    assert "already has a context named" in str(e.value)
    with pytest.raises(NotFoundError):
        bb.contexts.retrieve("00000000-0000-0000-0000-000000000000")
    ctx = bb.contexts.create()
    updated = bb.contexts.update(ctx.id)
    assert updated.id == ctx.id and updated.upload_url


def make_extension():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", """{"manifest_version": 3, "name": "marker", "version": "1.0",
            "content_scripts": [{"matches": ["<all_urls>"], "js": ["mark.js"], "run_at": "document_end"}]}""")
        z.writestr("mark.js", "document.documentElement.dataset.marked = 'by-extension';")
    return buf.getvalue()


def test_an_uploaded_extension_runs_in_the_session(bb, playwright, site):
    ext = bb.extensions.create(file=("marker.zip", make_extension()))
    assert ext.file_name == "marker.zip"
    assert bb.extensions.retrieve(ext.id).id == ext.id

    s = bb.sessions.create(extension_id=ext.id)
    browser, page = open_page(playwright, s)
    page.goto(f"{site}/page")
    page.wait_for_function("document.documentElement.dataset.marked === 'by-extension'")
    browser.close()

    # Without it, the page is untouched.
    plain = bb.sessions.create()
    browser, page = open_page(playwright, plain)
    page.goto(f"{site}/page")
    assert page.evaluate("document.documentElement.dataset.marked") is None
    browser.close()

    bb.extensions.delete(ext.id)
    with pytest.raises(NotFoundError):
        bb.extensions.retrieve(ext.id)
    with pytest.raises(NotFoundError):
        bb.sessions.create(extension_id=ext.id)


def test_bad_extensions_are_refused(bb):
    with pytest.raises(APIStatusError) as e:
        bb.extensions.create(file=("x.zip", b"not a zip at all"))
    assert e.value.status_code == 415
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ext/manifest.json", "{}")
    with pytest.raises(BadRequestError) as e:
        bb.extensions.create(file=("nested.zip", buf.getvalue()))
    assert "manifest.json" in str(e.value)


def test_an_upload_goes_into_a_page_form(bb, playwright, site):
    s = bb.sessions.create(keep_alive=True)
    reply = bb.sessions.uploads.create(s.id, file=("../../notes.txt", b"uploaded through browserd"))
    path = reply.message.split(" to ", 1)[1]
    assert os.path.basename(path) == "notes.txt", "the name is sanitised"
    assert f"/{s.id}/uploads/" in path

    browser, page = open_page(playwright, s)
    page.goto(f"{site}/form")
    page.set_input_files("#f", path)
    page.wait_for_function("document.getElementById('out').textContent !== ''")
    assert page.text_content("#out") == "notes.txt:uploaded through browserd"

    # The same through raw CDP, as a non-Playwright client would.
    page.goto(f"{site}/form")
    cdp = page.context.new_cdp_session(page)
    doc = cdp.send("DOM.getDocument")
    node = cdp.send("DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": "#f"})
    cdp.send("DOM.setFileInputFiles", {"files": [path], "nodeId": node["nodeId"]})
    page.evaluate("document.getElementById('f').dispatchEvent(new Event('change'))")
    page.wait_for_function("document.getElementById('out').textContent !== ''")
    assert page.text_content("#out") == "notes.txt:uploaded through browserd"
    browser.close()

    bb.sessions.update(s.id, status="REQUEST_RELEASE")
    with pytest.raises(ConflictError):
        bb.sessions.uploads.create(s.id, file=("late.txt", b"x"))


def zip_names(bb, session_id):
    data = bb.sessions.downloads.list(session_id).read()
    return zipfile.ZipFile(io.BytesIO(data)).namelist(), data


def test_downloads_land_in_the_session_and_come_back_as_a_zip(bb, playwright, site):
    s = bb.sessions.create(keep_alive=True)
    names, _ = zip_names(bb, s.id)
    assert names == [], "an empty zip while there are none"

    browser, page = open_page(playwright, s)
    page.goto(f"{site}/downloads")
    with page.expect_download() as download:
        page.click("#get")
    assert download.value.suggested_filename == "report.txt"
    names = wait_until(lambda: zip_names(bb, s.id)[0], what="the download in the zip")
    assert names == ["report.txt"]
    browser.close()

    bb.sessions.update(s.id, status="REQUEST_RELEASE")
    # Still there after the session ended.
    names, data = zip_names(bb, s.id)
    assert names == ["report.txt"]
    assert zipfile.ZipFile(io.BytesIO(data)).read("report.txt") == b"quarterly numbers\n"
