// Load one page in headless Chromium (playwright-core + /usr/bin/chromium), save a screenshot,
// print what a person sees as JSON: {"status", "title", "text"} (document.body.innerText).
//   NODE_PATH=/tmp/apolo-viewer-cache/node/node_modules node web_page_shot.js URL OUT.png [AUTHORIZATION]
const { chromium } = require('playwright-core');

const [url, out, authorization] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({
    viewport: { width: 1280, height: 800 },
    extraHTTPHeaders: authorization ? { Authorization: authorization } : {},
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e).slice(0, 300)));
  const response = await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  await page.screenshot({ path: out, fullPage: true });
  const result = {
    status: response ? response.status() : 0, title: await page.title(),
    text: await page.evaluate(() => document.body ? document.body.innerText : ''), errors,
  };
  await browser.close();
  process.stdout.write(JSON.stringify(result));
})().catch((e) => { console.error(String(e).split('\n')[0]); process.exit(1); });
