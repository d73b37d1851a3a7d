#!/usr/bin/env python
"""A fast webhook receiver for bench/webhooks.py: asyncio, HTTP/1.1 keep-alive, answers 200.

    python bench/webhook_receiver.py PORT LOG

Appends ``<webhook-id or -> <unix time of receipt>`` per request to LOG (flushed every 50 ms),
so the benchmark can tell when each message arrived. Requests without a ``webhook-id`` (the bare
POST baseline) are logged with ``-``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def main(port: int, log_path: str) -> None:
    lines: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = time.time()
                length = 0
                msg_id = "-"
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value.strip())
                    elif name == b"webhook-id":
                        msg_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                lines.append(f"{msg_id} {received:.6f}\n")
                writer.write(RESPONSE)
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    with open(log_path, "a", buffering=1 << 16) as log:
        print("ready", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
            if lines:
                batch, lines[:] = lines[:], []
                log.writelines(batch)
                log.flush()
        server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
