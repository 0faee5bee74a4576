#!/usr/bin/env python
"""A loopback TCP front: accepts connections on one port and relays them to another.

The local stack's S3 endpoint is this front in front of moto's server. moto keeps objects in
memory, so stopping moto itself would lose the bucket (a real S3 outage does not lose data).
Stopping the front is what an S3 outage looks like to a client: new connections are refused
and open ones are reset, while the objects stay where they are.

usage: tcpfront.py --listen 127.0.0.1:PORT --target 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise argparse.ArgumentTypeError(f"{text!r}: the front binds and relays on loopback only")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        for w in (client_w, up_w):
            w.close()

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"front {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_hostport, required=True)
    parser.add_argument("--target", type=_hostport, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.listen, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
