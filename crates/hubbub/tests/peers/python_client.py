"""A Python `websockets` client exchanging text, binary, fragmented and
1 MiB messages with an echo server, then closing with 4001 "bye".

usage: python_client.py URL [deflate|plain]"""

import asyncio
import os
import ssl
import sys

from websockets.asyncio.client import connect


async def main(url: str, mode: str) -> None:
    compression = "deflate" if mode == "deflate" else None
    # For wss:// URLs, HUBBUB_CA names the certificate to trust.
    context = None
    if url.startswith("wss://"):
        context = ssl.create_default_context(cafile=os.environ["HUBBUB_CA"])
    async with connect(url, max_size=None, compression=compression, ssl=context) as ws:
        names = [type(e).__name__ for e in ws.protocol.extensions]
        if mode == "deflate":
            assert names == ["PerMessageDeflate"], names
        else:
            assert names == [], names
        # Compressible text, so that compression shows on the wire.
        text = "all work and no play " * 200
        await ws.send(text)
        assert await ws.recv() == text
        await ws.send("hello, κόσμε")
        assert await ws.recv() == "hello, κόσμε"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        # An iterable is sent as one fragmented message.
        await ws.send(["frag", "mented ", "text"])
        assert await ws.recv() == "fragmented text"
        big = bytes(range(256)) * 4096
        await ws.send(big)
        assert await ws.recv() == big
        await ws.close(code=4001, reason="bye")
    assert ws.close_code == 4001, ws.close_code
    print(f"python websockets client ({mode}): ok")


asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "plain"))
