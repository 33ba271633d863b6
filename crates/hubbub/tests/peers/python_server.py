"""A Python `websockets` echo server for hubbub's client: it reports the
extensions it agreed to, sends a fragmented message, pings and waits for
the pong, then echoes every message, and closes with 4003 "as asked" when
told "close-me".

usage: python_server.py [deflate|plain] [CERT KEY]
Prints "listening on PORT" once it accepts connections."""

import asyncio
import ssl
import sys

from websockets.asyncio.server import serve


async def handler(ws):
    names = [type(e).__name__ for e in ws.protocol.extensions]
    await ws.send("ext: " + (",".join(names) or "none"))
    await ws.send(["frag", "mented"])
    pong = await ws.ping(b"are you there")
    await asyncio.wait_for(pong, 5)
    await ws.send("pong ok")
    async for message in ws:
        if message == "close-me":
            await ws.close(4003, "as asked")
            return
        await ws.send(message)


async def main(mode: str, tls: list[str]) -> None:
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls[0], tls[1])
    compression = "deflate" if mode == "deflate" else None
    async with serve(handler, "127.0.0.1", 0, compression=compression, max_size=None, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "plain", sys.argv[2:4]))
