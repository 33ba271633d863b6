// WebSockets over HTTP/2 (RFC 8441) from Node's own `http2` client:
// extended CONNECT streams with `:protocol: websocket` on one HTTP/2
// connection, speaking RFC 6455 frames on each (a small framer below).
//
//   node node_h2.cjs https://localhost:PORT chat
//     two sockets on one HTTP/2 connection and a third over HTTP/1.1
//     (Node's `ws`, from NODE_PATH) chat in the room "/room";
//   node node_h2.cjs https://localhost:PORT protocol
//     protocol cases against an echo server, each on its own stream of one
//     connection: text, binary, fragmentation, ping/pong, close codes,
//     invalid UTF-8, a message over the limit (65536 bytes).
//
// Prints "ok: <case>" per case and "all ok" at the end; exits 1 on the
// first failure.

'use strict';
const http2 = require('node:http2');
const crypto = require('node:crypto');
const assert = require('node:assert');

const [url, mode] = process.argv.slice(2);
let progress = 'start';
const timer = setTimeout(() => {
  console.error('timeout; so far:', progress);
  process.exit(1);
}, 15000);

/// A masked client frame.
function frame(opcode, payload, fin = true) {
  payload = Buffer.from(payload);
  const len = payload.length;
  let head;
  if (len < 126) {
    head = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | len]);
  } else if (len < 65536) {
    head = Buffer.alloc(4);
    head[0] = (fin ? 0x80 : 0) | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = (fin ? 0x80 : 0) | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = crypto.randomBytes(4);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

/// A WebSocket on one HTTP/2 stream: `next()` resolves with the server's
/// next frame ({fin, opcode, payload}), or null when the stream ends.
function socket(session, path, extra = {}) {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'https',
      ':path': path,
      ':authority': new URL(url).host,
      'sec-websocket-version': '13',
      ...extra,
    });
    let buffer = Buffer.alloc(0);
    const frames = [];
    const waiting = [];
    let ended = false;
    const deliver = () => {
      while (waiting.length && (frames.length || ended)) {
        waiting.shift()(frames.length ? frames.shift() : null);
      }
    };
    stream.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (buffer.length < 2) break;
        const fin = (buffer[0] & 0x80) !== 0;
        const opcode = buffer[0] & 0x0f;
        let len = buffer[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buffer.length < 4) break;
          len = buffer.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buffer.length < 10) break;
          len = Number(buffer.readBigUInt64BE(2));
          at = 10;
        }
        if (buffer.length < at + len) break;
        frames.push({ fin, opcode, payload: buffer.subarray(at, at + len) });
        buffer = buffer.subarray(at + len);
      }
      deliver();
    });
    stream.on('end', () => {
      ended = true;
      deliver();
    });
    stream.on('close', () => {
      ended = true;
      deliver();
    });
    stream.on('error', () => {});
    stream.on('response', (headers) => {
      const status = headers[':status'];
      resolve({
        status,
        headers,
        send: (opcode, payload, fin) => stream.write(frame(opcode, payload, fin)),
        next: () => new Promise((r) => { waiting.push(r); deliver(); }),
        end: () => stream.end(),
      });
    });
    stream.on('error', reject);
  });
}

/// The next text message (skipping nothing: the server sends only these).
async function text(ws) {
  const f = await ws.next();
  assert.ok(f, 'stream ended');
  assert.strictEqual(f.opcode, 1, `opcode ${f && f.opcode}`);
  return f.payload.toString('utf8');
}

/// The server's close frame: its code.
async function closeCode(ws) {
  for (;;) {
    const f = await ws.next();
    assert.ok(f, 'stream ended without a close frame');
    if (f.opcode === 8) return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { rejectUnauthorized: false });
    session.on('error', reject);
    session.on('remoteSettings', (settings) => {
      assert.ok(settings.enableConnectProtocol, 'the server did not enable the extended CONNECT');
      resolve(session);
      progress = 'settings';
    });
  });
}

async function chat() {
  const session = await connect();
  progress = 'connected';
  const a = await socket(session, '/room');
  const b = await socket(session, '/room');
  assert.strictEqual(a.status, 200);
  assert.strictEqual(b.status, 200);
  // A third over HTTP/1.1, with Node's `ws`.
  const WebSocket = require('ws');
  progress = 'two streams open';
  const c = new WebSocket(url.replace('https:', 'wss:') + '/room', { rejectUnauthorized: false });
  const cMessages = [];
  const cWaiting = [];
  c.on('message', (data) => {
    const t = data.toString();
    if (cWaiting.length) cWaiting.shift()(t); else cMessages.push(t);
  });
  const cText = () => new Promise((r) => (cMessages.length ? r(cMessages.shift()) : cWaiting.push(r)));
  await new Promise((r) => c.on('open', r));
  progress = 'h1 open';
  // The server says when all three are in the room.
  a.send(1, 'ready?');
  for (;;) {
    const t = await text(a);
    if (t === 'ready') break;
  }
  a.send(1, 'hello from a (h2)');
  assert.strictEqual(await text(b), 'hello from a (h2)');
  assert.strictEqual(await cText(), 'hello from a (h2)');
  console.log('ok: two HTTP/2 streams and one HTTP/1.1 socket chat in one room');
  c.send('hello from c (h1)');
  assert.strictEqual(await text(a), 'hello from a (h2)');
  assert.strictEqual(await text(a), 'hello from c (h1)');
  assert.strictEqual(await text(b), 'hello from c (h1)');
  console.log('ok: HTTP/1.1 to HTTP/2');
  a.send(8, Buffer.from([0x03, 0xe8]));
  assert.strictEqual(await closeCode(a), 1000);
  b.send(1, 'b after a left');
  assert.strictEqual(await text(b), 'b after a left');
  console.log('ok: closing one stream leaves the other');
  c.close();
  session.close();
}

async function protocol() {
  const session = await connect();
  progress = 'connected';
  const open = () => socket(session, '/echo');

  let ws = await open();
  progress = 'echo open';
  ws.send(1, 'héllo');
  assert.strictEqual(await text(ws), 'héllo');
  ws.send(2, Buffer.from([0, 1, 2, 255]));
  let f = await ws.next();
  assert.strictEqual(f.opcode, 2);
  assert.deepStrictEqual([...f.payload], [0, 1, 2, 255]);
  console.log('ok: text and binary echo');

  ws.send(1, 'frag', false);
  ws.send(9, 'in between');
  ws.send(0, 'mented', true);
  f = await ws.next();
  assert.strictEqual(f.opcode, 10, 'a pong for the ping between the fragments');
  assert.strictEqual(f.payload.toString(), 'in between');
  assert.strictEqual(await text(ws), 'fragmented');
  console.log('ok: fragmentation with a ping between the fragments');

  ws.send(8, Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from('bye')]));
  assert.strictEqual(await closeCode(ws), 4001);
  console.log('ok: the close code is echoed');

  ws = await open();
  ws.send(1, Buffer.from([0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]));
  assert.strictEqual(await closeCode(ws), 1007);
  console.log('ok: invalid UTF-8 closes with 1007');

  ws = await open();
  ws.send(2, Buffer.alloc(70000));
  assert.strictEqual(await closeCode(ws), 1009);
  console.log('ok: a message over the limit closes with 1009');

  ws = await open();
  ws.send(8, Buffer.from([0x03, 0xe7]));
  assert.strictEqual(await closeCode(ws), 1002);
  console.log('ok: an invalid close code closes with 1002');

  ws = await open();
  ws.send(0, 'no message to continue');
  assert.strictEqual(await closeCode(ws), 1002);
  console.log('ok: a stray continuation closes with 1002');

  // Refusals on the same connection, which keeps working.
  const refused = await socket(session, '/echo', { ':protocol': 'webtransport' });
  assert.strictEqual(refused.status, 501);
  ws = await open();
  ws.send(1, 'after the refusal');
  assert.strictEqual(await text(ws), 'after the refusal');
  console.log('ok: 501 for another :protocol, and the connection goes on');
  session.close();
}

(mode === 'chat' ? chat() : protocol())
  .then(() => {
    clearTimeout(timer);
    console.log('all ok');
    // Sockets left open keep the session (and node) alive.
    process.exit(0);
  })
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
