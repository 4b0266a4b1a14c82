#!/usr/bin/env python3
"""Counts the bytes a sender puts on the wire to a receiver.

A TCP relay on 127.0.0.1: every connection accepted on LISTEN_PORT is joined to
127.0.0.1:UPSTREAM_PORT and both directions are copied unchanged. The bytes from the sender to
the receiver (request lines, headers and bodies: what a metered link carries, less TCP/IP
framing) are counted, and the running total is written to COUNT_FILE every half second and at
exit, as one integer. The benchmark scripts read it after the senders have stopped.

Usage: count_proxy.py LISTEN_PORT UPSTREAM_PORT COUNT_FILE
"""

import asyncio
import os
import signal
import sys

sent = 0


async def pipe(reader, writer, count):
    global sent
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            if count:
                sent += len(chunk)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def handle(client_reader, client_writer, upstream_port):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        pipe(client_reader, up_writer, True),
        pipe(up_reader, client_writer, False),
    )


def write_count(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{sent}\n")
    os.replace(tmp, path)


async def main():
    listen_port, upstream_port, count_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream_port), "127.0.0.1", listen_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            write_count(count_file)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    write_count(count_file)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main())
