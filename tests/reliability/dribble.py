"""The slow clients of R22 (slowloris, slow POST), in their own process like `slowhttptest`, so
their work does not share the event loop or the core of the gateway they attack.

    python -m tests.reliability.dribble PORT EVERY SPEC...    SPEC = COUNT:FIRST:HEX_OF_RAW

Each of COUNT connections sends FIRST bytes of RAW at once, then one byte every EVERY seconds
until the gateway closes it. Prints `OPEN` once every connection is open, then one JSON list:
the seconds each connection lasted, in SPEC order.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson


async def dribble(port: int, raw: bytes, every: float, first: int = 0) -> float:
    """Send `raw` a byte every `every` s after its first `first` bytes; seconds until closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(raw[:first])
        for i in range(first, len(raw)):
            if reader.at_eof():
                break
            writer.write(raw[i:i + 1])
            try:
                await writer.drain()
                if await asyncio.wait_for(reader.read(65536), every) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        return time.monotonic() - started
    finally:
        writer.close()


async def main(port: int, every: float, specs: list[str]) -> None:
    attack = []
    for spec in specs:
        count, first, raw = spec.split(":")
        attack += [asyncio.ensure_future(dribble(port, bytes.fromhex(raw), every, int(first)))
                   for _ in range(int(count))]
    await asyncio.sleep(0)  # every connection is being opened
    print("OPEN", flush=True)
    print(orjson.dumps(await asyncio.gather(*attack)).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]))
