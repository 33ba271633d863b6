"""A Python `websockets` client exchanging text, binary, fragmented and
1 MiB messages with an echo server, then closing with 4001 "bye"."""

import asyncio
import sys

from websockets.asyncio.client import connect


async def main(url: str) -> None:
    async with connect(url, max_size=None, compression=None) as ws:
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
    print("python websockets client: ok")


asyncio.run(main(sys.argv[1]))
