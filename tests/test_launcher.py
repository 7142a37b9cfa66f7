"""The silo's ClientApp entry points as a local user could attack them: the verifier's import
path (deploy/bin/flwr-clientapp) and the long-lived launcher's socket (deploy/zygote.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.zygote import MAX_REQUEST

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "deploy" / "bin" / "flwr-clientapp"
SHADOW = "import pathlib; pathlib.Path(__file__).with_name('SHADOWED').write_text('ran'); from yaml import *\n"


def test_a_module_in_the_working_directory_cannot_shadow_what_the_verifier_imports(tmp_path):
    """A world-writable starting directory holding yaml.py: the wrapper never imports it;
    the same start without -P does (so the check can fail)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    (shared / "yaml.py").write_text(SHADOW)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COCOGEN_CLIENTAPP_LAUNCHER")} | {
        "COCOGEN_PYTHON": sys.executable}
    wrapped = subprocess.run([str(WRAPPER), "--help"], cwd=shared, env=env, capture_output=True, text=True,
                             timeout=120)
    assert wrapped.returncode == 0 and "--runtime-api-address" in wrapped.stdout, wrapped.stderr[-2000:]
    assert not (shared / "SHADOWED").exists()
    unsafe = subprocess.run([sys.executable, "-m", "deploy.verified_clientapp", "--help"], cwd=shared,
                            env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert unsafe.returncode == 0 and (shared / "SHADOWED").exists()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """``python -m deploy.zygote serve`` as deploy/supernode.sh starts it."""
    folder = tmp_path_factory.mktemp("launcher")
    path = folder / "clientapp.sock"
    log = open(folder / "launcher.log", "w")
    process = subprocess.Popen([sys.executable, "-P", "-m", "deploy.zygote", "serve", str(path)], stdout=log,
                               stderr=subprocess.STDOUT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                               start_new_session=True)
    deadline = time.monotonic() + 180
    while "launcher ready" not in (folder / "launcher.log").read_text():
        assert process.poll() is None and time.monotonic() < deadline, (folder / "launcher.log").read_text()
        time.sleep(0.5)
    yield path
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()


def connected(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(30)
    connection.connect(str(path))
    return connection


def answer(connection: socket.socket) -> bytes:
    """Everything the launcher sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("request_line", [b"not json\n", b'{"argv": "--help", "cwd": "/"}\n', b"[1, 2]\n",
                                          b'{"argv": [1], "cwd": "/"}\n', b"\xff\xfe\n"])
def test_a_malformed_request_is_answered_and_closed(launcher, request_line):
    with connected(launcher) as connection:
        connection.sendall(request_line)
        reply = answer(connection)
    assert reply.startswith(b"error: ") and reply.count(b"\n") == 1


def test_a_request_line_is_read_only_up_to_its_bound(launcher):
    """The launcher answers and closes at the bound; the sender may see its unread rest reset
    the connection instead of the answer. Either way the launcher serves the next request."""
    with connected(launcher) as connection:
        try:
            connection.sendall(b"x" * (MAX_REQUEST + 65536))  # no newline, ever
            reply = answer(connection)
        except (BrokenPipeError, ConnectionResetError):
            reply = None
    assert reply in (None, f"error: request line longer than {MAX_REQUEST} bytes\n".encode())
    with connected(launcher) as connection:
        connection.sendall(b"next\n")
        assert answer(connection).startswith(b"error: not JSON")


def test_a_forked_clientapp_dies_with_its_forwarder(launcher, tmp_path):
    """A ClientApp that keeps retrying a SuperNode that is not there, forked for a forwarder
    that then goes away (its connection closes): the launcher stops it."""
    connection = connected(launcher)
    request = {"argv": ["--insecure", "--token", "t", "--runtime-api-address", "127.0.0.1:1"], "cwd": str(tmp_path)}
    connection.sendall((json.dumps(request) + "\n").encode())
    child = int(connection.makefile("r").readline())
    time.sleep(2)
    os.kill(child, 0)  # running (retrying)
    connection.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"the ClientApp {child} outlived its forwarder by 30 s")
