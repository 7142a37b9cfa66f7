"""Byte relays between a Unix socket and a loopback TCP port: how the coordinator's private
SuperLink is reached (deploy/superlink.sh, deploy/control.sh).

Flower 1.42 serves its Fleet, Control and runtime APIs on one TCP port and authenticates
nobody on the Control API. `deploy/superlink.sh` therefore runs the SuperLink in a network
namespace of its own, where no other process of the machine can open a connection to
it, and this relay offers that port as Unix sockets in a folder only the coordinator's
account can enter:

- ``fleet.sock``, which nginx forwards the Fleet API to;
- ``control.sock``, which the operator reaches through ``deploy/control.sh`` on the
  coordinator or ``ssh -L 9094:<state>/sockets/control.sock`` from its workstation.

A file's permissions decide who may connect (mode 0600, folder 0700); TLS passes through
untouched.

    python -m deploy.relay unix-to-tcp SOCKET HOST:PORT [SOCKET HOST:PORT ...]
    python -m deploy.relay tcp-to-unix HOST:PORT SOCKET
    python -m deploy.relay loopback-up     # in a new network namespace: bring up its lo
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import sys
from contextlib import suppress
from pathlib import Path

CHUNK = 1 << 16
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Bring up ``lo`` (a new network namespace starts with it down), as ``ip link set lo up``
    does, without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as handle:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(handle, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(handle, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with suppress(OSError, RuntimeError):
            writer.write_eof()


async def _joined(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  target: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Both directions until both ends are done; then both connections are closed."""
    try:
        await asyncio.gather(_pipe(client[0], target[1]), _pipe(target[0], client[1]))
    finally:
        for _, writer in (client, target):
            writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def unix_to_tcp(pairs: list[tuple[Path, tuple[str, int]]]) -> None:
    """Serve each Unix socket (mode 0600), relaying every connection to its TCP address."""
    servers = []
    for path, (host, port) in pairs:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host=host, port=port) -> None:
            try:
                target = await asyncio.open_connection(host, port)
            except OSError:
                writer.close()
                return
            await _joined((reader, writer), target)

        path.unlink(missing_ok=True)
        previous = os.umask(0o177)  # the socket file is born 0600: no moment where others may connect
        try:
            servers.append(await asyncio.start_unix_server(relay, path=str(path)))
        finally:
            os.umask(previous)
    print(f"relay ready: {', '.join(str(path) for path, _ in pairs)}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


async def tcp_to_unix(address: tuple[str, int], path: Path) -> None:
    """Serve a TCP address, relaying every connection to a Unix socket."""
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = await asyncio.open_unix_connection(str(path))
        except OSError as error:
            print(f"relay: cannot reach {path}: {error}", file=sys.stderr, flush=True)
            writer.close()
            return
        await _joined((reader, writer), target)

    server = await asyncio.start_server(relay, *address)
    print(f"relay ready: {address[0]}:{address[1]} -> {path}", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> int:
    try:
        if argv == ["loopback-up"]:
            loopback_up()
            return 0
        if len(argv) >= 3 and len(argv) % 2 == 1 and argv[0] == "unix-to-tcp":
            pairs = [(Path(argv[k]), _address(argv[k + 1])) for k in range(1, len(argv), 2)]
            asyncio.run(unix_to_tcp(pairs))
            return 0
        if len(argv) == 3 and argv[0] == "tcp-to-unix":
            asyncio.run(tcp_to_unix(_address(argv[1]), Path(argv[2])))
            return 0
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("usage: python -m deploy.relay unix-to-tcp SOCKET HOST:PORT [SOCKET HOST:PORT ...] | "
          "tcp-to-unix HOST:PORT SOCKET | loopback-up", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
