"""Deployment engine end to end, as the guide (docs/deployment.md) sets it up, on 127.0.0.1:
the coordinator's SuperLink on loopback behind an nginx proxy that gives silos the Fleet
API only (deploy/superlink.sh), TLS and SuperNode authentication with keys each silo
made itself (deploy/make_silo_key.sh), three SuperNodes that run only app bundles the
operator signed (deploy/supernode.sh), each with its own data folder and Flower home.
Checked: the app runs; an intruder holding ca.crt and the silo-facing address can neither
register a node, list or submit runs, nor unregister a silo, while the operator can; a
tampered or unsigned bundle is refused before it is installed; unregistered and
plain-HTTP SuperNodes are refused; no process the scripts start attempts telemetry (a
recording HTTPS proxy sees every outbound connection). Everything started here is
stopped here.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
SILOS = 3
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


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


class OutboundRecorder(socketserver.ThreadingTCPServer):
    """An HTTP(S) proxy that answers nobody and records the request line of every
    connection (`CONNECT telemetry.flower.ai:443 ...`): processes get it as HTTPS_PROXY."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                recorder.requests.append(self.rfile.readline(4096).decode(errors="replace").strip())

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Processes:
    """Background processes in their own sessions, stopped as whole groups."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        handle = open(log, "w")
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


class Federation:
    """What the tests need to know about the running federation."""

    def __init__(self, base: Path, public_port: int, recorder: OutboundRecorder, cli_env: dict[str, str]) -> None:
        self.base, self.public_port, self.recorder, self.cli_env = base, public_port, recorder, cli_env

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The `flwr` CLI as the operator's shell runs it (connections: operator, intruder)."""
        return subprocess.run([str(BIN / "flwr"), *args], env=self.cli_env, capture_output=True, text=True,
                              timeout=timeout)

    def silo_home(self, silo: int) -> Path:
        return self.base / f"silo-{silo}" / "flwr"

    def silo_log(self, silo: int) -> str:
        return (self.base / f"silo-{silo}.out").read_text()

    def node_ids(self) -> dict[str, str]:
        """Node id -> status, as the operator lists them."""
        listed = self.flwr("supernode", "list", "operator", "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        return {str(node["node-id"]): node["status"] for node in json.loads(listed.stdout)["nodes"]}


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    base = tmp_path_factory.mktemp("deployment")
    recorder = OutboundRecorder()
    # What the scripts get: no telemetry switches (they must set them), every outbound
    # HTTP(S) connection through the recorder, loopback direct.
    script_env = {key: value for key, value in os.environ.items() if key not in QUIET}
    script_env.update({"PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
                       "HTTPS_PROXY": recorder.address, "HTTP_PROXY": recorder.address,
                       "https_proxy": recorder.address, "http_proxy": recorder.address,
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    cli_env = {**script_env, **QUIET, "FLWR_HOME": str(base / "operator"),
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    run = lambda args, env=script_env: subprocess.run(args, env=env, capture_output=True, text=True, timeout=120,
                                                      check=True)
    public_port, control_port = _free_port(), _free_port()
    run([str(DEPLOY / "make_credentials.sh"), str(base / "creds"), "localhost"])
    for silo in [*(f"silo-{i}" for i in range(SILOS)), "intruder"]:
        run([str(DEPLOY / "make_silo_key.sh"), str(base / silo), silo])  # made "on the silo"
    run([sys.executable, "-m", "task.data", "export", "--orgs", str(SILOS), "--samples-per-org", "300",
         "--market-size", "200", "--seed", "0", "--out", str(base / "data")])
    (base / "operator").mkdir()
    (base / "operator" / "config.toml").write_text(
        f'[superlink]\ndefault = "operator"\n\n'
        f'[superlink.operator]\naddress = "127.0.0.1:{control_port}"\nroot-certificates = "{base / "creds" / "ca.crt"}"\n\n'
        f'[superlink.intruder]\naddress = "localhost:{public_port}"\nroot-certificates = "{base / "creds" / "ca.crt"}"\n')
    processes = Processes()
    federation = Federation(base, public_port, recorder, cli_env)
    try:
        processes.start([str(DEPLOY / "superlink.sh"), str(base / "creds"), str(base / "link"), "127.0.0.1",
                         str(public_port), str(control_port)], base / "superlink.out",
                        {**script_env, "FLWR_HOME": str(base / "link" / "flwr")})
        _wait_for_port(public_port, 60)
        _wait_for_port(control_port, 60)
        for i in range(SILOS):
            registered = federation.flwr("supernode", "register", str(base / f"silo-{i}" / f"silo-{i}.pub"), "operator")
            assert registered.returncode == 0, registered.stdout + registered.stderr
        for i in range(SILOS):
            node_config = f"partition-id={i} data-path='{base / 'data' / f'silo-{i}'}' cache-dir='{base / f'silo-{i}'}'"
            processes.start([str(DEPLOY / "supernode.sh"), str(base / "creds" / "ca.crt"),
                             str(base / f"silo-{i}" / f"silo-{i}.key"), str(base / "creds" / "trusted-entities.yaml"),
                             f"localhost:{public_port}", str(_free_port()), node_config], base / f"silo-{i}.out",
                            {**script_env, "FLWR_HOME": str(federation.silo_home(i))})
        deadline = time.monotonic() + 60
        while list(federation.node_ids().values()).count("online") < SILOS and time.monotonic() < deadline:
            time.sleep(2)
        yield federation
    finally:
        processes.stop_all()
        recorder.shutdown()


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
    base = federation.base
    code, output = _refused(["--root-certificates", str(base / "creds" / "ca.crt"), "--superlink",
                             f"localhost:{federation.public_port}", "--auth-supernode-private-key",
                             str(base / "intruder" / "intruder.key")], federation.cli_env, base / "intruder.out")
    assert code != 0
    assert "Failed to activate SuperNode" in output


def test_a_supernode_without_tls_is_refused(federation):
    code, output = _refused(["--insecure", "--superlink", f"127.0.0.1:{federation.public_port}"],
                            federation.cli_env, federation.base / "insecure.out")
    assert code != 0
    assert "could not establish a connection" in output


def _status(federation: Federation, path: str, method: str = "POST") -> int:
    """The HTTP status the silo-facing address answers for a raw request (path sent as is)."""
    context = ssl.create_default_context(cafile=str(federation.base / "creds" / "ca.crt"))
    connection = http.client.HTTPSConnection("localhost", federation.public_port, context=context, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.putheader("Content-Type", "application/protobuf")
        connection.putheader("Content-Length", "0")
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_an_intruder_holding_the_ca_certificate_cannot_use_the_control_plane(federation):
    base = federation.base
    nodes_before = federation.node_ids()
    assert list(nodes_before.values()) == ["online"] * SILOS
    victim = next(iter(nodes_before))
    attempts = {
        "register a node": federation.flwr("supernode", "register", str(base / "intruder" / "intruder.pub"),
                                           "intruder"),
        "list nodes": federation.flwr("supernode", "list", "intruder"),
        "list runs": federation.flwr("ls", "intruder"),
        "submit a run": federation.flwr("run", str(ROOT), "intruder"),
        "unregister a silo": federation.flwr("supernode", "unregister", victim, "intruder"),
    }
    for attempt, done in attempts.items():
        assert done.returncode != 0, attempt
        assert "403 Forbidden" in done.stdout + done.stderr, (attempt, done.stdout[-1000:])
    for path in ["/v1/control/list-runs", "/v1/runtime/pull-app-inputs", "/health",
                 "/v1/fleet/../control/list-runs", "/v1/fleet/x/..%2f..%2fcontrol%2flist-runs",
                 "/v1/fleet/%2e%2e/control/list-runs", "/v1/fleet//../control/list-runs"]:
        assert _status(federation, path) == 403, path
    assert _status(federation, "/v1/fleet/pull-messages", method="GET") == 403
    # The operator, on the coordinator, still can; the silos are untouched.
    assert federation.node_ids() == nodes_before
    assert federation.flwr("ls", "operator").returncode == 0


def _run_app(federation: Federation, app: Path, signature: str | None, stream: bool, timeout: float):
    base = federation.base
    overrides = (f"+experiment=tiny game.costs=measured calibration.pilot=false results_root={base / 'results'} "
                 f"cache_dir={base / 'server-cache'}")
    config = f'overrides="{overrides}"' + (f' fab-signature="{signature}"' if signature is not None else "")
    return federation.flwr("run", str(app), "operator", *(["--stream"] if stream else ["--format", "json"]),
                           "-c", config, timeout=timeout)


def _signature(federation: Federation, app: Path) -> str:
    signed = subprocess.run([sys.executable, "-m", "deploy.signing", "sign", str(app),
                             str(federation.base / "creds" / "app-signing.key")],
                            env=federation.cli_env, capture_output=True, text=True, timeout=120, check=True)
    return signed.stdout.strip()


def _installed_on_silos(federation: Federation, app: Path) -> list[bool]:
    """Whether each silo's Flower home holds this bundle installed (apps/<...>.<hash[:8]>)."""
    short_hash = hashlib.sha256(build_fab_from_disk(app)).hexdigest()[:8]
    return [any(path.name.endswith(short_hash) for path in (federation.silo_home(i) / "apps").glob("*"))
            for i in range(SILOS)]


def test_the_signed_app_runs_on_authenticated_supernodes_with_their_own_data(federation):
    base = federation.base
    done = _run_app(federation, ROOT, _signature(federation, ROOT), stream=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run] = list((base / "results").iterdir())
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
    assert _installed_on_silos(federation, ROOT) == [True] * SILOS
    for i in range(SILOS):
        assert "App bundle verified: signed by trusted key" in federation.silo_log(i)


def _refused_run(federation: Federation, app: Path, signature: str | None, reason: str) -> None:
    """Submit; every silo refuses the bundle (its log says why); the operator stops the run."""
    marks = [federation.silo_log(i).count("App bundle refused") for i in range(SILOS)]
    started = _run_app(federation, app, signature, stream=False, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = json.loads(started.stdout)["run-id"]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all(federation.silo_log(i).count("App bundle refused") > marks[i] for i in range(SILOS)):
                break
            time.sleep(2)
        for i in range(SILOS):
            refusals = federation.silo_log(i).split("App bundle refused")[1:]
            assert len(refusals) > marks[i], f"silo {i} did not refuse"
            assert reason in refusals[-1].splitlines()[0], refusals[-1].splitlines()[0]
    finally:
        federation.flwr("stop", run_id, "operator")
    assert _installed_on_silos(federation, app) == [False] * SILOS


def test_a_tampered_app_bundle_is_refused_by_every_supernode(federation, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(ROOT, tampered, ignore=shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*.png"))
    with open(tampered / "client_app" / "app.py", "a") as handle:
        handle.write("\nimport os  # a silo's data could leave from here\n")
    _refused_run(federation, tampered, _signature(federation, ROOT), "does not match this app bundle")


def test_an_unsigned_app_bundle_is_refused_by_every_supernode(federation):
    _refused_run(federation, ROOT, None, "the app bundle is unsigned")


def test_no_process_started_by_the_scripts_attempts_telemetry(federation):
    assert federation.recorder.requests == []
    # The recorder does see a Flower process whose telemetry is on.
    env = {key: value for key, value in federation.cli_env.items() if key not in QUIET}
    subprocess.run([sys.executable, "-c", "from flwr.supercore.telemetry import EventType, create_event; "
                    "create_event(EventType.PING, None)"], env=env, timeout=120, capture_output=True)
    assert any("telemetry.flower.ai" in line for line in federation.recorder.requests), federation.recorder.requests
