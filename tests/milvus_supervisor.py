"""Runs one Milvus server for the tests and stops it when told to, or when the test run that owns it ends.

    python tests/milvus_supervisor.py --owner PID --ready FILE --log FILE [--isolate INNER_PORT] -- CMD...

Without --isolate, CMD is a server that binds the loopback address it is given (the Milvus Lite server);
`--port` tells the tests where it listens. With --isolate, CMD is the Milvus standalone server
(`milvus-server` of the `milvus` package), whose Go services listen on every interface with fixed ports
(etcd 2379, metrics 9091, coordinators ...). It is run in a network namespace of its own, holding only
a loopback device, and this process relays one loopback port of the host (127.0.0.1:P, opened before the
namespace is entered) to the server's gRPC port inside it. Nothing of the server is reachable from any
other interface, and two servers never compete for a port.

Once the server answers, FILE receives {"port": P, "pid": this process} (written whole, then renamed).
SIGTERM, or the end of the owner process (the pytest process that started the run), stops the server:
SIGTERM to its process group, SIGKILL after STOP_WAIT_S. This file imports nothing from recindex.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
START_WAIT_S = 240.0  # the standalone server is up in 15 s on an idle machine, 40 s or more on a busy one
STOP_WAIT_S = 20.0  # a graceful stop flushes what it holds; a longer one is killed
HEALTH = "http://127.0.0.1:9091/healthz"  # the standalone server's health page (inside its namespace)


def enter_network_namespace() -> None:
    """A network namespace holding only `lo`, brought up (a user namespace too where we are not root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET if uid == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(network namespace): {os.strerror(error)}")
    if uid != 0:  # map ourselves to root inside, so that we may bring the loopback device up
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags_now = struct.unpack("16sH14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags_now | IFF_UP))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def answers(port: int, isolated: bool) -> bool:
    """Whether the server takes connections on `port` (and, isolated, reports itself healthy)."""
    if isolated:
        try:
            with urllib.request.urlopen(HEALTH, timeout=2) as page:
                if b"OK" not in page.read():
                    return False
        except OSError:
            return False
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def relay(listener: socket.socket, inner_port: int, running) -> None:
    """Each connection accepted on the host's loopback port, joined to the server's port inside."""

    async def join(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", inner_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(join, sock=listener)
    async with server:
        while running():
            await asyncio.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # what the server started in its group and left
        os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="the loopback port the tests use")
    parser.add_argument("--isolate", type=int, default=0, help="the server's gRPC port inside its namespace")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    listener = None
    if args.isolate:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", args.port))
        listener.listen(64)
        port = listener.getsockname()[1]
        enter_network_namespace()
    else:
        port = args.port
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    with args.log.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def running() -> bool:
        return not stopping and process.poll() is None and alive(args.owner)

    try:
        deadline = time.monotonic() + START_WAIT_S
        while not answers(args.isolate or port, bool(args.isolate)):
            if not running() or time.monotonic() > deadline:
                return 1
            time.sleep(0.2)
        partial = args.ready.with_suffix(".partial")
        partial.write_text(json.dumps({"port": port, "pid": os.getpid()}))
        partial.rename(args.ready)
        if listener is not None:
            asyncio.run(relay(listener, args.isolate, running))
        else:
            while running():
                time.sleep(0.5)
    finally:
        stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
