"""A long-lived ClientApp launcher per silo: heavy imports once, one fork per message.

Flower 1.42 starts a new `flwr-clientapp` process for every message a SuperNode gets,
so each message pays Python, torch, diffusers and Flower's imports again (seconds on a
small CPU, more when several silos share it). `deploy/supernode.sh` therefore starts
this server next to the SuperNode: it imports the third-party packages a ClientApp
needs (never the app's own modules, which must come from the signed bundle), then
listens on a Unix socket in a private folder. `deploy/bin/flwr-clientapp`, which the
SuperNode still starts per message, forwards its arguments there (:func:`forward`);
the server forks, and the child runs :func:`deploy.verified_clientapp.main` exactly as
the process the SuperNode would have started, then exits with its status, which the
launcher relays. Signals sent to the launcher reach the child.

Run: ``python -m deploy.zygote serve SOCKET`` / ``python -m deploy.zygote forward SOCKET ARGS...``
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from contextlib import suppress
from logging import INFO
from pathlib import Path

PRELOAD = (
    "numpy", "torch", "torch.nn.functional", "diffusers", "diffusers.models.unets.unet_2d",
    "diffusers.schedulers.scheduling_dpmsolver_multistep", "diffusers.schedulers.scheduling_ddpm",
    "diffusers.training_utils", "flwr.app", "flwr.clientapp", "flwr.cli.install",
    "flwr.supernode.runtime.run_clientapp", "deploy.verified_clientapp",
)
"""Imported once by the server; the app's own packages are deliberately absent."""


MAX_REQUEST = 256 * 1024
"""The longest request line read (a ClientApp's arguments and working directory take < 1 KiB)."""
GRACE_SECONDS = 5.0
"""How long a ClientApp whose forwarder went away has to stop after SIGTERM, before SIGKILL."""


class BadRequest(ValueError):
    """A request that is not one JSON line of ``{"argv": [str...], "cwd": str}``."""


def _receive_line(connection: socket.socket) -> bytes:
    """One request line, at most :data:`MAX_REQUEST` bytes."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("launcher closed the connection")
        data += chunk
        if len(data) > MAX_REQUEST:
            raise BadRequest(f"request line longer than {MAX_REQUEST} bytes")
    return data


def _request(line: bytes) -> tuple[list[str], str]:
    """The ClientApp's arguments and working directory, checked."""
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"not JSON ({error})") from None
    argv, cwd = (request.get("argv"), request.get("cwd")) if isinstance(request, dict) else (None, None)
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not isinstance(cwd, str):
        raise BadRequest('expected {"argv": [strings], "cwd": string}')
    return argv, cwd


def _run_child(argv: list[str]) -> int:
    """In the forked child: the verifying ClientApp with ``argv``; its exit status."""
    from flwr.supercore import log

    from deploy import verified_clientapp

    log(INFO, "ClientApp forked by the launcher (pid %d)", os.getpid())
    sys.argv = ["flwr-clientapp", *argv]
    try:
        verified_clientapp.main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def _serve_one(connection: socket.socket, listener: socket.socket) -> None:
    """Fork a ClientApp for one forwarder's request and relay its exit status; a bad request
    is answered with one error line and closed; if the forwarder goes away first, the
    ClientApp is stopped (SIGTERM, then SIGKILL after :data:`GRACE_SECONDS`)."""
    with connection:
        try:
            argv, cwd = _request(_receive_line(connection))
        except (BadRequest, ConnectionError, OSError) as error:
            with suppress(OSError):
                connection.sendall(f"error: {error}\n".encode())
            return
        child = os.fork()
        if child == 0:
            listener.close()
            connection.close()
            os.setsid()  # its own session, like a process the SuperExec starts
            code = 1
            try:
                os.chdir(cwd)
                code = _run_child(argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        with suppress(OSError):
            connection.sendall(f"{child}\n".encode())
        status = _wait_or_stop(child, connection)
        with suppress(OSError):
            connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())


def _wait_or_stop(child: int, connection: socket.socket) -> int:
    """The child's wait status; stops it first where the forwarder's connection closes."""
    deadline = None
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return status
        if deadline is not None and time.monotonic() > deadline:
            _signal_child(child, signal.SIGKILL)
            return os.waitpid(child, 0)[1]
        readable, _, _ = select.select([connection], [], [], 0.2)
        if readable and deadline is None and not _peek_alive(connection):
            _signal_child(child, signal.SIGTERM)
            deadline = time.monotonic() + GRACE_SECONDS


def _peek_alive(connection: socket.socket) -> bool:
    """Whether the forwarder still holds its end (it sends nothing after its request)."""
    try:
        return connection.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def _signal_child(child: int, number: int) -> None:
    """Signal the child's session (its process group), or the child alone before it made one."""
    try:
        os.killpg(child, number)
    except (ProcessLookupError, PermissionError):
        with suppress(ProcessLookupError):
            os.kill(child, number)


def serve(path: Path) -> None:
    """Preload, then fork a ClientApp per connection until stopped."""
    for module in PRELOAD:
        importlib.import_module(module)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    print(f"ClientApp launcher ready on {path} (preloaded {len(PRELOAD)} modules)", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(connection, listener), daemon=True).start()


def forward(path: Path, argv: list[str]) -> int:
    """Launcher side: have the server run a ClientApp with ``argv``; its exit status. If
    the server is gone, start the ClientApp in this process instead (from scratch)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(str(path))
        except OSError:
            os.execv(sys.executable, [sys.executable, "-P", "-m", "deploy.verified_clientapp", *argv])
        connection.sendall((json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n").encode())
        reader = connection.makefile("r")
        answer = reader.readline()
        if not answer.strip().isdigit():
            print(f"ClientApp launcher refused the request: {answer.strip()}", file=sys.stderr)
            return 1
        child = int(answer)
        for received in (signal.SIGTERM, signal.SIGINT):
            signal.signal(received, lambda number, _frame: os.kill(child, number))
        status = reader.readline()
    return int(status) if status.strip() else 1


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        serve(Path(argv[1]))
        return 0
    if len(argv) >= 2 and argv[0] == "forward":
        return forward(Path(argv[1]), argv[2:])
    print("usage: python -m deploy.zygote serve SOCKET | forward SOCKET ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
