"""browser-use's BrowserSession on a browserd connectUrl (BrowserProfile(cdp_url=...)): no
agent, no language model; open a page, read its state, and disconnect. Run in browser-use's
own virtualenv by test_frameworks.py; prints one JSON line."""

import asyncio
import json
import sys

from browser_use import BrowserProfile, BrowserSession


async def main(connect_url: str, url: str) -> None:
    session = BrowserSession(browser_profile=BrowserProfile(cdp_url=connect_url, keep_alive=False))
    await session.start()
    try:
        await session.navigate_to(url)
        state = await session.get_browser_state_summary(include_screenshot=True)
        result = {
            "url": await session.get_current_page_url(),
            "title": await session.get_current_page_title(),
            "text": state.dom_state.llm_representation() if state.dom_state else "",
            "screenshot": bool(state.screenshot),
        }
    finally:
        await session.stop()
    print(json.dumps(result))


asyncio.run(main(sys.argv[1], sys.argv[2]))
