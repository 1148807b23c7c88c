// Create-to-ready of Stagehand 4 sessions beside plain ones, interleaved, against one
// browserd (BASE, KEY). Stagehand: `browserbase.launch` (extension upload, create, connect)
// and `Stagehand.create`, until its first page is in hand. Plain: `POST /v1/sessions` and
// Playwright's connectOverCDP, until its first page is in hand. Each ends as its user ends
// it; a pause after each lets the warm pool refill. Prints one JSON line.
import { browserbase, Stagehand } from '@browserbasehq/stagehand';
import { chromium } from 'playwright-core';

const [BASE, KEY, N = '15', PAUSE = '1500'] = process.argv.slice(2);
const now = () => performance.now();
const pause = () => new Promise((r) => setTimeout(r, Number(PAUSE)));
const out = { stagehand: [], launch: [], plain: [] };
for (let i = 0; i < Number(N); i++) {
  let t = now();
  const browser = await browserbase.launch({ apiKey: KEY, baseUrl: BASE });
  const launched = now() - t;
  const stagehand = await Stagehand.create({
    browser, model: { modelName: 'openai/gpt-4o-mini', apiKey: 'unused' }, apiUrl: `${BASE}/unused`,
  });
  await browser.context.pages();
  out.stagehand.push(now() - t);
  out.launch.push(launched);
  await stagehand.close();
  await browser.close();
  await pause();

  t = now();
  const created = await fetch(`${BASE}/v1/sessions`, {
    method: 'POST', headers: { 'x-bb-api-key': KEY, 'content-type': 'application/json' }, body: '{}',
  });
  const session = await created.json();
  const plain = await chromium.connectOverCDP(session.connectUrl);
  plain.contexts()[0].pages()[0];
  out.plain.push(now() - t);
  await plain.close();
  await pause();
}
console.log(JSON.stringify(out));
