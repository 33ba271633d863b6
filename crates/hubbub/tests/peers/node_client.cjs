// A Node `ws` client exchanging text, binary, fragmented and 1 MiB messages
// with an echo server, then closing with 4001 "bye".
// usage: node node_client.cjs URL [deflate|plain]
const WebSocket = require('ws');
const assert = require('assert');

const deflate = process.argv[3] === 'deflate';
const ws = new WebSocket(process.argv[2], { perMessageDeflate: deflate, maxPayload: 0 });
const big = Buffer.alloc(1 << 20);
for (let i = 0; i < big.length; i++) big[i] = i % 251;

const steps = [
  () => {
    assert.strictEqual(ws.extensions.includes('permessage-deflate'), deflate, `extensions: ${ws.extensions}`);
    ws.send('hello, κόσμε');
  },
  (data, isBinary) => { assert.strictEqual(isBinary, false); assert.strictEqual(data.toString(), 'hello, κόσμε'); ws.send(Buffer.from([0, 1, 255])); },
  (data, isBinary) => {
    assert.strictEqual(isBinary, true); assert.deepStrictEqual([...data], [0, 1, 255]);
    ws.send('frag', { fin: false }); ws.send('mented ', { fin: false }); ws.send('text', { fin: true });
  },
  (data) => { assert.strictEqual(data.toString(), 'fragmented text'); ws.send(big); },
  (data) => { assert.ok(Buffer.compare(data, big) === 0, '1 MiB echo differs'); ws.close(4001, 'bye'); },
];
let step = 0;
ws.on('open', () => steps[step++]());
ws.on('message', (data, isBinary) => steps[step++](data, isBinary));
ws.on('close', (code) => {
  assert.strictEqual(step, steps.length, `closed after ${step} steps`);
  assert.strictEqual(code, 4001);
  console.log(`node ws client (${deflate ? 'deflate' : 'plain'}): ok`);
  process.exit(0);
});
ws.on('error', (e) => { console.error(e); process.exit(1); });
setTimeout(() => { console.error('node client timed out'); process.exit(1); }, 15000);
