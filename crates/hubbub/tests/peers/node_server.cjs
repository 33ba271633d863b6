// A Node `ws` echo server for hubbub's client: it reports the extensions
// it agreed to, sends a fragmented message, pings and waits for the pong,
// then echoes every message, and closes with 4003 "as asked" when told
// "close-me".
//
// usage: node node_server.cjs [deflate|plain]
// Prints "listening on PORT" once it accepts connections.
const { WebSocketServer } = require('ws');

const mode = process.argv[2] || 'plain';
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: mode === 'deflate' });
wss.on('listening', () => console.log(`listening on ${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.send(`ext: ${Object.keys(ws._extensions).join(',') || 'none'}`);
  // A fragmented text message: two frames.
  ws.send('frag', { fin: false });
  ws.send('mented', { fin: true });
  ws.once('pong', () => {
    ws.send('pong ok');
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'close-me') {
        ws.close(4003, 'as asked');
      } else {
        ws.send(data, { binary: isBinary });
      }
    });
  });
  ws.ping(Buffer.from('are you there'));
});
