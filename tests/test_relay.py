"""The coordinator's relays (deploy/relay.py): bytes both ways, half-closes kept, sockets
born private, and a loopback brought up in a fresh network namespace."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def echo_server() -> tuple[socket.socket, int]:
    """A TCP server that sends back what it got, upper-cased, once the client half-closes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            connection, _ = server.accept()
            with connection:
                data = b""
                while chunk := connection.recv(65536):
                    data += chunk
                connection.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def started(args: list[str]) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "deploy.relay", *args], stdout=subprocess.PIPE, text=True,
                               env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert "relay ready" in process.stdout.readline()
    return process


def exchange(connection: socket.socket, payload: bytes) -> bytes:
    with connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_a_unix_socket_relays_to_a_tcp_port_and_back_and_is_born_private(tmp_path):
    _, port = echo_server()
    path = tmp_path / "control.sock"
    relay = started(["unix-to-tcp", str(path), f"127.0.0.1:{port}"])
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        payload = os.urandom(300_000)
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(path))
            assert exchange(connection, payload) == payload.upper()
    finally:
        relay.terminate()
        relay.wait()


def test_a_tcp_port_relays_to_a_unix_socket(tmp_path):
    _, port = echo_server()
    path = tmp_path / "fleet.sock"
    inner = started(["unix-to-tcp", str(path), f"127.0.0.1:{port}"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        outer_port = probe.getsockname()[1]
    outer = started(["tcp-to-unix", f"127.0.0.1:{outer_port}", str(path)])
    try:
        assert exchange(socket.create_connection(("127.0.0.1", outer_port)), b"two hops") == b"TWO HOPS"
    finally:
        for process in (outer, inner):
            process.terminate()
            process.wait()


def test_bad_arguments_exit_2():
    for args in (["unix-to-tcp", "a.sock", "no-port"], ["tcp-to-unix", "x"], []):
        done = subprocess.run([sys.executable, "-m", "deploy.relay", *args], capture_output=True, text=True,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=60)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0,
                    reason="cannot make a network namespace here")
def test_a_fresh_network_namespace_gets_its_loopback_up(tmp_path):
    script = ("import socket, subprocess, sys\n"
              "try:\n"
              "    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
              "    socket.create_connection(s.getsockname(), timeout=2); sys.exit(3)  # lo was up already\n"
              "except OSError:\n    pass\n"
              "subprocess.run([sys.executable, '-m', 'deploy.relay', 'loopback-up'], check=True)\n"
              "t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()\n"
              "socket.create_connection(t.getsockname(), timeout=2)\n")
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", script], capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
