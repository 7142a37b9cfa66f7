"""Deployment engine end to end: a SuperLink with TLS and SuperNode authentication and
three authenticated SuperNodes on 127.0.0.1, each with its own exported data folder,
running the app with the tiny configuration. An unregistered SuperNode and one
without TLS are refused. Everything started here is stopped here.
"""

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

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
SILOS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


class Processes:
    """Background processes in their own sessions, stopped as whole groups."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen:
        handle = open(log, "w")
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=self.env,
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


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    base = tmp_path_factory.mktemp("deployment")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "FLWR_HOME": str(base / "flwr"),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1"}
    run = lambda args: subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=True)
    silos = [f"silo-{i}" for i in range(SILOS)]
    run([str(DEPLOY / "make_credentials.sh"), str(base / "creds"), "localhost", *silos, "intruder"])
    run([sys.executable, "-m", "task.data", "export", "--orgs", str(SILOS), "--samples-per-org", "300",
         "--market-size", "200", "--seed", "0", "--out", str(base / "data")])
    port = _free_port()
    processes = Processes(env)
    try:
        processes.start([str(DEPLOY / "superlink.sh"), str(base / "creds"), str(base / "link"), "127.0.0.1",
                         str(port)], base / "superlink.out")
        _wait_for_port(port, 60)
        (base / "flwr").mkdir(exist_ok=True)
        (base / "flwr" / "config.toml").write_text(
            f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{port}"\n'
            f'root-certificates = "{base / "creds" / "ca.crt"}"\n')
        for silo in silos:
            run([str(BIN / "flwr"), "supernode", "register", str(base / "creds" / f"{silo}.pub"), "deploy"])
        for i, silo in enumerate(silos):
            node_config = f"partition-id={i} data-path='{base / 'data' / silo}' cache-dir='{base / silo}'"
            processes.start([str(DEPLOY / "supernode.sh"), str(base / "creds" / "ca.crt"),
                             str(base / "creds" / f"{silo}.key"), f"127.0.0.1:{port}", str(_free_port()),
                             node_config], base / f"{silo}.out")
        yield base, port, env
    finally:
        processes.stop_all()


def _refused(args: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run a SuperNode that should not get in; its exit code and output."""
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(BIN / "flower-supernode"), *args, "--max-retries", "2", "--max-wait-time", "20",
             "--port", str(_free_port()), "--node-config", "partition-id=0"],
            stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = process.wait(timeout=90)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its SuperExec child, if still there
            except ProcessLookupError:
                pass
    return code, log.read_text()


def test_an_unregistered_supernode_is_refused(federation):
    base, port, env = federation
    code, output = _refused(["--root-certificates", str(base / "creds" / "ca.crt"), "--superlink",
                             f"127.0.0.1:{port}", "--auth-supernode-private-key", str(base / "creds" / "intruder.key")],
                            env, base / "intruder.out")
    assert code != 0
    assert "Failed to activate SuperNode" in output


def test_a_supernode_without_tls_is_refused(federation):
    base, port, env = federation
    code, output = _refused(["--insecure", "--superlink", f"127.0.0.1:{port}"], env, base / "insecure.out")
    assert code != 0
    assert "could not establish a connection" in output


def test_the_app_runs_on_authenticated_supernodes_with_their_own_data(federation):
    base, _, env = federation
    results, cache = base / "results", base / "server-cache"
    overrides = f"+experiment=tiny game.costs=measured calibration.pilot=false results_root={results} cache_dir={cache}"
    done = subprocess.run([str(BIN / "flwr"), "run", str(ROOT), "deploy", "--stream", "-c",
                           f'overrides="{overrides}"'], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run] = list(results.iterdir())
    rows = json.loads((run / "ledger.json").read_text())
    assert [row["round"] for row in rows] == [1, 2]
    for row in rows:
        assert row["responders"] == [0, 1, 2] and not row["dropped"]
        assert row["received_quotas"] == row["quotas"] == row["images"]
        assert abs(row["transfer_sum"]) <= 1e-9
        reported = {r["partition_id"]: r for r in row["reported"]}
        for i in range(SILOS):
            exported = json.loads((base / "data" / f"silo-{i}" / "silo.json").read_text())
            assert reported[i]["label_counts"] == exported["label_counts"]  # each silo read its own folder
    summary = json.loads((run / "summary.json").read_text())
    print(f"deployment round seconds: {[round(r['round_seconds'], 1) for r in rows]}, wall {summary['wall_seconds']:.0f} s")
    assert summary["final_accuracy"] > 0.2
