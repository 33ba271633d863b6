// Three `hubbub serve --redis` nodes sharing one redis-server (started by
// the Rust side of the test), a page on each node's port, in headless
// Chromium: they chat as one room, "who is here" counts every node, and a
// page whose node restarts gets what it missed on reconnecting.
//
// With `--redis-cluster URLS` and the pid of the master that holds the
// room, the nodes join a Redis Cluster instead, and that master is killed
// (SIGKILL) mid-chat: the chat goes on, in one order on every page.
//
// usage: node cluster.cjs HUBBUB_BINARY --redis URL SCREENSHOT.png
//        node cluster.cjs HUBBUB_BINARY --redis-cluster URLS SCREENSHOT.png MASTER_PID
const { chromium } = require('playwright-core');
const { spawn } = require('child_process');
const net = require('net');

const [binary, mode, redis, screenshot, victim] = process.argv.slice(2);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on('error', reject);
  });
}

function startNode(port) {
  const child = spawn(binary, ['serve', '--port', String(port), mode, redis], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => { if (String(d).includes('cluster member through')) resolve(child); });
    child.on('exit', (code) => reject(new Error(`hubbub exited with ${code}`)));
  });
}

function stopNode(child) {
  return new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); });
}

const messages = (page) => page.$$eval('.msg .text', (nodes) => nodes.map((n) => n.textContent));

async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

async function shows(page, text) {
  await page.waitForFunction((t) => [...document.querySelectorAll('.msg .text')].some((n) => n.textContent === t), text, { timeout: 15000 });
}

async function main() {
  const ports = [await freePort(), await freePort(), await freePort()];
  const nodes = [];
  for (const port of ports) nodes.push(await startNode(port));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 620 } });
    const pages = [];
    for (const port of ports) {
      const page = await context.newPage();
      await page.goto(`http://127.0.0.1:${port}/team`);
      await page.waitForSelector('#state.online');
      pages.push(page);
    }
    const [a, b, c] = pages;
    // Every node's heartbeat counts the others' members.
    for (const page of pages) {
      await page.waitForFunction(() => document.getElementById('who').textContent === '3 here', null, { timeout: 15000 });
    }
    await send(a, 'hello from node one');
    await send(b, 'and from node two');
    await send(c, 'node three here');
    for (const page of pages) {
      for (const text of ['hello from node one', 'and from node two', 'node three here']) await shows(page, text);
    }
    // One order for the room: every page shows the same sequence.
    const order = await messages(a);
    for (const page of [b, c]) {
      const theirs = await messages(page);
      if (JSON.stringify(theirs) !== JSON.stringify(order)) throw new Error(`orders differ: ${order} / ${theirs}`);
    }
    await a.screenshot({ path: screenshot });

    if (victim) {
      // The master holding the room dies; its replica takes over.
      process.kill(Number(victim), 'SIGKILL');
      await send(b, 'said as the master died');
      for (const page of pages) await shows(page, 'said as the master died');
      await send(c, 'after the failover');
      for (const page of pages) await shows(page, 'after the failover');
      const after = await messages(a);
      for (const page of [b, c]) {
        const theirs = await messages(page);
        if (JSON.stringify(theirs) !== JSON.stringify(after)) throw new Error(`orders differ: ${after} / ${theirs}`);
      }
      const shown = after.filter((t) => t === 'said as the master died').length;
      if (shown !== 1) throw new Error(`shown ${shown} times`);
      console.log('browser redis cluster: ok');
      return;
    }

    // Node two restarts; what is said meanwhile reaches its page afterwards.
    await stopNode(nodes[1]);
    await b.waitForSelector('#state.offline');
    await send(a, 'said while node two was down');
    await send(c, 'also while it was down');
    nodes[1] = await startNode(ports[1]);
    await b.waitForSelector('#state.online', { timeout: 20000 });
    await shows(b, 'said while node two was down');
    await shows(b, 'also while it was down');
    const once = (await messages(b)).filter((t) => t === 'said while node two was down').length;
    if (once !== 1) throw new Error(`resumed message shown ${once} times`);
    await send(b, 'back on node two');
    await shows(a, 'back on node two');
    await shows(c, 'back on node two');
    console.log('browser cluster: ok');
  } finally {
    await browser.close();
    for (const node of nodes) node.kill('SIGKILL');
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
