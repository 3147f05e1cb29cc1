"""The reference mesh's two TCP apps, one process per server pod, run as the app user:

    python -m tcp_servers tcp-echo|banner PORT

- tcp-echo: client-first; every line it receives goes back as "<ECHO_PREFIX> <line>", as Istio's
  samples/tcp-echo answers (the kube backend runs that sample with this prefix): bytes that are not a line
  protocol, such as a ClientHello, get an answer that is not TLS either.
- banner: server-first, as SMTP or MySQL: it greets on accept (GREETING) before reading anything, then echoes
  each line unchanged.

Standard library only, and imports nothing of meshproof: cluster/local/runtime.py stages this file as the
top-level module `tcp_servers` of the run's runtime, so the app user never reads the checkout.
"""

from __future__ import annotations

import asyncio
import sys

GREETING = b"220 meshproof-banner ready\r\n"
ECHO_PREFIX = b"meshproof-echo"
APPS = ("tcp-echo", "banner")
MAX_LINE = 64 * 1024  # a longer line is echoed in pieces


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, banner: bool) -> None:
    prefix = b"" if banner else ECHO_PREFIX + b" "
    try:
        if banner:
            writer.write(GREETING)
            await writer.drain()
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as partial:  # the peer closed: echo what came, then close
                line = partial.partial
            except asyncio.LimitOverrunError as over:
                line = await reader.readexactly(over.consumed)
            if not line:
                break
            writer.write(prefix + line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(app: str, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: _echo(r, w, banner=app == "banner"), "0.0.0.0", port,
                                        limit=MAX_LINE, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in APPS or not argv[1].isdigit():
        print(f"usage: python -m tcp_servers {'|'.join(APPS)} PORT", file=sys.stderr)
        return 2
    asyncio.run(serve(argv[0], int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
