// The axum example's chat page in headless Chromium: two pages chat
// through the hub mounted in the axum app, an HTML payload shows as text,
// and a page that leaves is announced.
//
// usage: node axum_chat.cjs AXUM_EXAMPLE_BINARY SCREENSHOT.png
const { chromium } = require('playwright-core');
const { spawn } = require('child_process');
const assert = require('assert');

const [binary, screenshot] = process.argv.slice(2);
const XSS = '<img src=x onerror=alert(1)>';

// Port 0: the example prints the address it got.
function startExample() {
  const child = spawn(binary, ['0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      const found = /on http:\/\/([^/\s]+)\//.exec(String(d));
      if (found) resolve({ child, host: found[1] });
    });
    child.on('exit', (code) => reject(new Error(`the axum example exited with ${code}`)));
  });
}

const lines = (page) => page.$$eval('#log li', (nodes) => nodes.map((n) => n.textContent));

async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

async function main() {
  const { child, host } = await startExample();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 800, height: 500 } });
    const a = await context.newPage();
    const b = await context.newPage();
    let dialogs = 0;
    for (const page of [a, b]) page.on('dialog', (d) => { dialogs += 1; d.dismiss(); });
    await a.goto(`http://${host}/`);
    await a.waitForFunction(() => document.getElementById('status').textContent === 'connected');
    await b.goto(`http://${host}/`);
    await b.waitForFunction(() => document.getElementById('status').textContent === 'connected');
    for (const page of [a, b]) {
      await page.waitForFunction(() => [...document.querySelectorAll('#log li')]
        .some((n) => n.textContent === 'You have just joined the conversation.'));
    }
    await a.waitForFunction(() => [...document.querySelectorAll('#log li')]
      .some((n) => n.textContent.endsWith(' joined the conversation.')));
    await send(a, 'Hello from page A');
    await send(b, XSS);
    for (const page of [a, b]) {
      await page.waitForFunction((x) => {
        const all = [...document.querySelectorAll('#log li')].map((n) => n.textContent);
        return all.some((t) => t.endsWith(' says: Hello from page A'))
          && all.some((t) => t.endsWith(` says: ${x}`));
      }, XSS);
      assert.strictEqual(await page.locator('#log img').count(), 0, 'a message was rendered as HTML');
    }
    // "<id> says: …" with the sender's id, the same on both pages.
    const said = (await lines(b)).find((t) => t.endsWith(' says: Hello from page A'));
    assert.match(said, /^[0-9a-f-]{36} says: Hello from page A$/);
    assert.strictEqual(dialogs, 0, 'script from a message ran');
    await a.screenshot({ path: screenshot });
    await b.close();
    await a.waitForFunction(() => [...document.querySelectorAll('#log li')]
      .some((n) => n.textContent.endsWith(' left the chat room.')));
    console.log('axum browser chat: ok');
  } finally {
    await browser.close();
    child.kill('SIGKILL');
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
