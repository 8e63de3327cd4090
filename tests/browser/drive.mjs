// A real browser for the tests: Debian's chromium, headless, driven through
// puppeteer-core. Reads one JSON command per line on stdin and answers one
// JSON line on stdout, so a Rust test can interleave browser steps with
// real clients and the CLI (tests/common/browser.rs).
import puppeteer from 'puppeteer-core';
import readline from 'node:readline';

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Root in a test namespace: chromium's own sandbox cannot start there.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-extensions'],
});
const page = await browser.newPage();
// A phone first: the pages must fit 360 px.
await page.setViewport({ width: 360, height: 780 });

async function navigated(action) {
  const [r] = await Promise.all([page.waitForNavigation({ waitUntil: 'load', timeout: 30000 }), action()]);
  return { status: r ? r.status() : 0, url: page.url() };
}

const rl = readline.createInterface({ input: process.stdin });
console.log(JSON.stringify({ ok: true, ready: true }));
for await (const line of rl) {
  let out = {};
  try {
    const c = JSON.parse(line);
    switch (c.op) {
      case 'goto': {
        const r = await page.goto(c.url, { waitUntil: 'load', timeout: 30000 });
        out = { status: r ? r.status() : 0, url: page.url() };
        break;
      }
      case 'html':
        out = { html: await page.content(), url: page.url() };
        break;
      case 'screenshot':
        await page.screenshot({ path: c.path, fullPage: true });
        break;
      case 'set':
        // Opens the folded section the field is in, as a person would.
        await page.$eval(c.selector, (e, v) => {
          for (let d = e.closest('details'); d; d = d.parentElement.closest('details')) d.open = true;
          e.value = v;
        }, c.value);
        break;
      case 'click':
        await page.$eval(c.selector, (e) => {
          for (let d = e.closest('details'); d; d = d.parentElement.closest('details')) d.open = true;
        });
        out = await navigated(() => page.click(c.selector));
        break;
      case 'eval':
        out = { value: await page.evaluate(c.js) };
        break;
      case 'cookies':
        out = { cookies: (await browser.cookies()).map((k) => k.name) };
        break;
      case 'width':
        out = { value: await page.evaluate(() => document.documentElement.scrollWidth) };
        break;
      case 'close':
        await browser.close();
        console.log(JSON.stringify({ ok: true }));
        process.exit(0);
      default:
        throw new Error(`unknown op ${c.op}`);
    }
    out.ok = true;
  } catch (e) {
    out = { ok: false, error: String(e && e.stack || e) };
  }
  console.log(JSON.stringify(out));
}
await browser.close();
