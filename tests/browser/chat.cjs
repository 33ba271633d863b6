// The chat page in headless Chromium (Debian's, driven by playwright-core):
// two pages in one room chat, an HTML payload shows as text, a page that
// leaves is announced, and the page reconnects when the server restarts.
//
// usage: node chat.cjs HUBBUB_BINARY SCREENSHOT.png
const { chromium } = require('playwright-core');
const { spawn } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const assert = require('assert');

const [binary, screenshot] = process.argv.slice(2);
const XSS = '<img src=x onerror=alert(1)>';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on('error', reject);
  });
}

function startServer(port, extra = []) {
  const child = spawn(binary, ['serve', '--port', String(port), ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => { if (String(d).includes('chat server on')) resolve(child); });
    child.on('exit', (code) => reject(new Error(`hubbub exited with ${code}`)));
  });
}

function stopServer(child) {
  return new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); });
}

const texts = (page, selector) => page.$$eval(selector, (nodes) => nodes.map((n) => n.textContent));

async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

async function main() {
  const port = await freePort();
  let server = await startServer(port);
  const base = `http://127.0.0.1:${port}`;
  // A test certificate (made by the Rust side of the test) that Chromium
  // trusts by its public-key pin, for the wss:// part.
  const certFile = process.env.HUBBUB_TEST_CERT;
  const keyFile = process.env.HUBBUB_TEST_KEY;
  const pinArgs = [];
  if (certFile) {
    const spki = new crypto.X509Certificate(fs.readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' });
    pinArgs.push(`--ignore-certificate-errors-spki-list=${crypto.createHash('sha256').update(spki).digest('base64')}`);
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...pinArgs],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 620 } });
    const a = await context.newPage();
    const b = await context.newPage();
    let dialogs = 0;
    for (const page of [a, b]) page.on('dialog', (d) => { dialogs += 1; d.dismiss(); });

    await a.goto(`${base}/rust`);
    await a.waitForSelector('#state.online');
    await b.goto(`${base}/rust`);
    await b.waitForSelector('#state.online');
    await a.waitForFunction(() => document.getElementById('who').textContent === '2 here');
    // Chromium offers permessage-deflate by default; the server accepts it.
    const extensions = await a.evaluate(() => document.documentElement.dataset.extensions);
    assert.ok(extensions.includes('permessage-deflate'), `extensions: ${extensions}`);

    await send(a, '/nick Ada');
    await b.waitForFunction(() => [...document.querySelectorAll('.sys')].some((n) => n.textContent.endsWith('is now known as Ada.')));
    await send(b, '/nick Bob');
    await a.waitForFunction(() => [...document.querySelectorAll('.sys')].some((n) => n.textContent.endsWith('is now known as Bob.')));
    await send(a, 'Hello from Ada');
    const long = 'A long message that compresses well. '.repeat(40);
    await send(a, long);
    await send(b, 'Hi Ada, Bob here');
    await send(b, XSS);
    for (const page of [a, b]) {
      await page.waitForFunction((x) => {
        const all = [...document.querySelectorAll('.msg .text')].map((n) => n.textContent);
        return all.includes('Hello from Ada') && all.includes('Hi Ada, Bob here') && all.includes(x)
          && all.some((t) => t.startsWith('A long message') && t.length > 1000);
      }, XSS);
      assert.strictEqual(await page.locator('#log img').count(), 0, 'a message was rendered as HTML');
    }
    assert.ok((await texts(b, '.msg .from')).includes('Ada'), 'sender name shown');
    assert.ok((await texts(a, '.msg .from')).includes('Bob'), 'sender name shown');
    assert.strictEqual((await texts(a, '.msg.mine .text')).includes('Hello from Ada'), true, 'own messages marked');
    assert.ok((await texts(a, '.msg .time')).every((t) => /\d/.test(t)), 'times shown');
    assert.strictEqual(dialogs, 0, 'script from a message ran');
    await a.screenshot({ path: screenshot });

    await b.close();
    await a.waitForFunction(() => [...document.querySelectorAll('.sys')].some((n) => n.textContent.endsWith('left the chat room.')));
    await a.waitForFunction(() => document.getElementById('who').textContent === '1 here');

    // The server restarts: the page shows it is offline, then reconnects.
    await stopServer(server);
    await a.waitForSelector('#state.offline');
    server = await startServer(port);
    await a.waitForSelector('#state.online', { timeout: 20000 });
    await send(a, 'back again');
    await a.waitForFunction(() => [...document.querySelectorAll('.msg .text')].some((n) => n.textContent === 'back again'));
    if (certFile) {
      // The page over https:// connects with wss:// on its own.
      const tlsPort = await freePort();
      const metricsPort = await freePort();
      const tlsServer = await startServer(tlsPort, ['--tls-cert', certFile, '--tls-key', keyFile,
        '--metrics', `127.0.0.1:${metricsPort}`]);
      try {
        const c = await context.newPage();
        await c.goto(`https://localhost:${tlsPort}/secure`);
        await c.waitForSelector('#state.online');
        await send(c, 'over wss');
        await c.waitForFunction(() => [...document.querySelectorAll('.msg .text')].some((n) => n.textContent === 'over wss'));
        const extensions = await c.evaluate(() => document.documentElement.dataset.extensions);
        assert.ok(extensions.includes('permessage-deflate'), `extensions over TLS: ${extensions}`);
        // `hubbub serve` offers HTTP/2 by ALPN: the page comes over it.
        const pageProtocol = await c.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
        assert.strictEqual(pageProtocol, 'h2', 'the page over HTTP/2');
        // Whether this Chromium opened the page's WebSocket as a stream of
        // that connection (RFC 8441): the server's metrics tell.
        const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        const opened = (http) => {
          const line = metrics.split('\n').find((l) => l.startsWith(`hubbub_connections_opened_by_http_total{http="${http}"}`));
          return line ? Number(line.split(' ').pop()) : 0;
        };
        const [overH2, overH1] = [opened('2'), opened('1.1')];
        assert.strictEqual(overH2 + overH1, 1, `one socket: ${metrics}`);
        console.log(`page over ${pageProtocol}; its WebSocket over ${overH2 ? 'HTTP/2 (RFC 8441)' : 'HTTP/1.1'}`);
      } finally {
        await stopServer(tlsServer);
      }
    }
    console.log('browser chat: ok');
  } finally {
    await browser.close();
    server.kill('SIGKILL');
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
