"""A whole federation on 127.0.0.1, set up with the guide's scripts (docs/deployment.md):
coordinator credentials, a key pair made per silo, the SuperLink behind its Fleet-only
proxy, silos registered by the operator, one SuperNode per silo with its own exported
data folder and Flower home, and the operator's `flwr` CLI configured for the control
socket (`operator`, through deploy/control.sh) and, for attack tests, for the
silo-facing port (`intruder`).

Used by tests/test_deployment.py and benchmarks/deployment.py; every process it starts
runs in its own session and is stopped by :meth:`Processes.stop_all`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.signing import PRIVATE_KEY_FILE, SIGNATURE_KEY, TRUSTED_ENTITIES_FILE

DEPLOY = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
"""What every script sets; the operator's own CLI calls set it too."""
FEDERATION = "cocogen-local"
"""The federation's name: every silo's, and what the operator signs runs for."""
WORKSTATION = "workstation"
"""The operator's own machine (a folder here): the app-signing key lives there, never on the coordinator."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


def wait_for_socket(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as sock:
            if path.exists() and sock.connect_ex(str(path)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {path} after {seconds} s")


class Processes:
    """Background processes in their own sessions, stopped as whole groups."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "w") as handle:
            process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class LocalFederation:
    """The running federation: its folder, ports and the operator's CLI environment."""

    base: Path
    silos: int
    public_port: int
    control_port: int
    cli_env: dict[str, str]

    @property
    def control_socket(self) -> Path:
        return self.base / "link" / "sockets" / "control.sock"

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The `flwr` CLI as the operator's shell runs it on the coordinator, through the
        control socket (deploy/control.sh), or with the connection `intruder` as anyone
        who reaches the silo-facing port runs it."""
        command = [str(BIN / "flwr"), *args]
        if "intruder" not in args:
            command = [str(DEPLOY / "control.sh"), str(self.control_socket), *command]
        return subprocess.run(command, env=self.cli_env, capture_output=True, text=True, timeout=timeout)

    def silo_home(self, silo: int) -> Path:
        return self.base / f"silo-{silo}" / "flwr"

    def silo_log(self, silo: int) -> str:
        return (self.base / f"silo-{silo}.out").read_text()

    def node_ids(self) -> dict[str, str]:
        """Node id -> status, as the operator lists them."""
        listed = self.flwr("supernode", "list", "operator", "--format", "json")
        if listed.returncode != 0:
            raise RuntimeError(f"flwr supernode list failed: {listed.stdout[-500:]}{listed.stderr[-500:]}")
        return {str(node["node-id"]): node["status"] for node in json.loads(listed.stdout)["nodes"]}

    def signature(self, app: Path, run_config: str) -> str:
        """The operator's signature, made on the workstation, of the bundle `flwr run app`
        builds with ``run_config``, for this federation (deploy.signing)."""
        signed = subprocess.run([sys.executable, "-m", "deploy.signing", "sign", str(app),
                                 str(self.base / WORKSTATION / PRIVATE_KEY_FILE), "--federation", FEDERATION,
                                 "-c", run_config], env=self.cli_env, capture_output=True, text=True, timeout=120,
                                check=True)
        return signed.stdout.strip()

    def signed(self, app: Path, run_config: str) -> str:
        """``run_config`` with the operator's signature of it and of the bundle of ``app``."""
        return f'{run_config} {SIGNATURE_KEY}="{self.signature(app, run_config)}"'

    def run(self, app: Path, run_config: str, stream: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """`flwr run app operator -c run_config` (streamed, or json with the run id)."""
        return self.flwr("run", str(app), "operator", *(["--stream"] if stream else ["--format", "json"]),
                         "-c", run_config, timeout=timeout)


def start_federation(base: Path, silos: int, script_env: dict[str, str], processes: Processes,
                     samples_per_org: int = 300, market_size: int = 200, seed: int = 0) -> LocalFederation:
    """Set up and start everything (see the module docstring); wait until all silos are online."""
    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=script_env, capture_output=True, text=True, timeout=120, check=True)

    public_port, control_port = free_port(), free_port()
    cli_env = {**script_env, **QUIET, "FLWR_HOME": str(base / "operator"),
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "COCOGEN_CONTROL_PORT": str(control_port)}
    federation = LocalFederation(base, silos, public_port, control_port, cli_env)
    run([str(DEPLOY / "make_credentials.sh"), str(base / "creds"), "localhost"])
    run([sys.executable, "-m", "deploy.signing", "keygen", str(base / WORKSTATION)])  # on the operator's workstation
    for silo in [*(f"silo-{i}" for i in range(silos)), "intruder"]:
        run([str(DEPLOY / "make_silo_key.sh"), str(base / silo), silo])  # made "on the silo"
    run([sys.executable, "-m", "task.data", "export", "--orgs", str(silos), "--samples-per-org", str(samples_per_org),
         "--market-size", str(market_size), "--seed", str(seed), "--out", str(base / "data")])
    ca = base / "creds" / "ca.crt"
    (base / "operator").mkdir()
    (base / "operator" / "config.toml").write_text(
        f'[superlink]\ndefault = "operator"\n\n'
        f'[superlink.operator]\naddress = "127.0.0.1:{control_port}"\nroot-certificates = "{ca}"\n\n'
        f'[superlink.intruder]\naddress = "localhost:{public_port}"\nroot-certificates = "{ca}"\n')
    processes.start([str(DEPLOY / "superlink.sh"), str(base / "creds"), str(base / "link"), "127.0.0.1",
                     str(public_port), str(control_port)], base / "superlink.out",
                    {**script_env, "FLWR_HOME": str(base / "link" / "flwr")})
    wait_for_port(public_port, 60)
    wait_for_socket(federation.control_socket, 60)
    for i in range(silos):
        registered = federation.flwr("supernode", "register", str(base / f"silo-{i}" / f"silo-{i}.pub"), "operator")
        if registered.returncode != 0:
            raise RuntimeError(f"registering silo {i} failed: {registered.stdout[-500:]}{registered.stderr[-500:]}")
    for i in range(silos):  # each silo keeps its copy of the operator's public key (and its revocation list)
        shutil.copy(base / WORKSTATION / TRUSTED_ENTITIES_FILE, base / f"silo-{i}" / TRUSTED_ENTITIES_FILE)
    for i in range(silos):
        node_config = f"partition-id={i} data-path='{base / 'data' / f'silo-{i}'}' cache-dir='{base / f'silo-{i}'}'"
        processes.start([str(DEPLOY / "supernode.sh"), str(ca), str(base / f"silo-{i}" / f"silo-{i}.key"),
                         str(base / f"silo-{i}" / TRUSTED_ENTITIES_FILE), f"localhost:{public_port}", str(free_port()),
                         node_config], base / f"silo-{i}.out",
                        {**script_env, "FLWR_HOME": str(federation.silo_home(i)), "COCOGEN_FEDERATION": FEDERATION})
    deadline = time.monotonic() + 60
    while list(federation.node_ids().values()).count("online") < silos:
        if time.monotonic() > deadline:
            raise TimeoutError(f"silos not online after 60 s: {federation.node_ids()}")
        time.sleep(2)
    return federation
