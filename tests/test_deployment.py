"""Deployment engine end to end, as the guide (docs/deployment.md) sets it up, on 127.0.0.1:
the coordinator's SuperLink on loopback behind an nginx proxy that gives silos the Fleet
API only (deploy/superlink.sh), TLS and SuperNode authentication with keys each silo
made itself (deploy/make_silo_key.sh), three SuperNodes that run only app bundles the
operator signed on its workstation (deploy/supernode.sh), each with its own data folder
and Flower home. Checked: the app runs; an intruder holding ca.crt and the silo-facing
address can neither register a node, list or submit runs, nor unregister a silo, while
the operator can; a run not signed as submitted (tampered, unsigned, another run config,
expired, another federation, revoked, a signature that already started a run) is refused
before it is installed; no key on the
coordinator signs a run a silo accepts; unregistered and
plain-HTTP SuperNodes are refused; an oversized body and hundreds of half-open
connections harm neither the SuperLink nor the silos; no process the scripts start
attempts telemetry (a recording HTTPS proxy sees every outbound connection). Everything started here is
stopped here.
"""

from __future__ import annotations

import base64
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
import tempfile
import threading
import time
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.primitives.asymmetric_ed25519 import load_private_key

from deploy.local import BIN, FEDERATION, QUIET, WORKSTATION, LocalFederation, Processes, free_port, start_federation
from deploy.signing import (
    DAY,
    PRIVATE_KEY_FILE,
    REVOCATIONS_KEY,
    SIGNATURE_KEY,
    TRUSTED_ENTITIES_FILE,
    Revocations,
    bundle_run_config,
    key_id,
    load_trusted_entities,
    sign_revocations,
    sign_run,
)
from server_app.terms import keygen, sign

# Every test shares the module's federation: a SuperLink behind nginx and three SuperNodes.
pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parent.parent
SILOS = 3


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


@pytest.fixture(scope="module")
def recorder():
    recording = OutboundRecorder()
    yield recording
    recording.shutdown()


def _namespaces_allowed() -> bool:
    """Whether this host lets the coordinator's script make its SuperLink's network namespace."""
    isolate = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*isolate, "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def federation(tmp_path_factory, recorder):
    if not _namespaces_allowed():
        pytest.skip("this host allows no network namespace, which deploy/superlink.sh needs (it refuses to start)")
    base = tmp_path_factory.mktemp("deployment")
    # What the scripts get: no telemetry switches (they must set them), every outbound
    # HTTP(S) connection through the recorder, loopback direct.
    script_env = {key: value for key, value in os.environ.items() if key not in QUIET}
    script_env.update({"PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
                       "HTTPS_PROXY": recorder.address, "HTTP_PROXY": recorder.address,
                       "https_proxy": recorder.address, "http_proxy": recorder.address,
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    processes = Processes()
    try:
        yield start_federation(base, SILOS, script_env, processes)
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """The app as `flwr run` bundles it, copied without the virtual environment, caches and
    results: Flower walks every file under the app before applying .gitignore, and a
    bundle built from the checkout itself walks the ~50,000 installed files (7 s a build)."""
    return _copy_app(ROOT, tmp_path_factory.mktemp("app") / "app")


def _copy_app(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".flwr", ".cache", ".hypothesis", ".pytest_cache", "results", "__pycache__", "*.png"))
    return destination


def _refused(args: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run a SuperNode that should not get in; its exit code and output."""
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(BIN / "flower-supernode"), *args, "--max-retries", "2", "--max-wait-time", "20",
             "--port", str(free_port()), "--node-config", "partition-id=0"],
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


def _status(federation: LocalFederation, path: str, method: str = "POST") -> int:
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


SYSTEM_PYTHON = Path("/usr/bin/python3")
PROBE = """import socket, sys
kind, where = sys.argv[1], sys.argv[2]
family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
target = where if kind == "unix" else ("127.0.0.1", int(where))
try:
    socket.socket(family).connect(target)
except OSError as error:
    print(type(error).__name__)
    sys.exit(1)
print("connected")
"""


def _as_nobody(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args],
                          capture_output=True, text=True, timeout=120, cwd="/")


@pytest.mark.skipif(os.geteuid() != 0 or not SYSTEM_PYTHON.exists() or not shutil.which("setpriv"),
                    reason="acting as another local user needs root, setpriv and a system Python")
def test_the_control_api_is_the_coordinator_accounts_alone(federation):
    """Another local user (nobody) reaches the silo-facing proxy, as anyone may, but neither
    the SuperLink's port (it lives in a network namespace of its own) nor its control
    socket; the operator's `flwr ls` goes through that socket. With the socket's folder
    opened to all, the same user would connect: the permissions are what refuses it."""
    sockets = federation.control_socket.parent
    opened = [p for p in [sockets.parent, *sockets.parent.parents] if p.is_relative_to(Path(tempfile.gettempdir()))
              and p != Path(tempfile.gettempdir())]
    modes = {p: p.stat().st_mode for p in opened}
    try:
        for path in opened:  # let nobody walk up to the state folder: only sockets/ stops it
            path.chmod(modes[path] | 0o005)
        probe = [str(SYSTEM_PYTHON), "-c", PROBE]
        assert _as_nobody(*probe, "tcp", str(federation.public_port)).stdout.strip() == "connected"
        assert _as_nobody(*probe, "tcp", str(federation.control_port)).stdout.strip() == "ConnectionRefusedError"
        assert _as_nobody(*probe, "unix", str(federation.control_socket)).stdout.strip() == "PermissionError"
        refused = _as_nobody(str(ROOT / "deploy" / "control.sh"), str(federation.control_socket), "true")
        assert refused.returncode == 2 and "only the coordinator's account" in refused.stderr, refused.stderr
        sockets.chmod(0o755)
        federation.control_socket.chmod(0o666)
        assert _as_nobody(*probe, "unix", str(federation.control_socket)).stdout.strip() == "connected"
    finally:
        sockets.chmod(0o700)
        federation.control_socket.chmod(0o600)
        for path, mode in modes.items():
            path.chmod(mode)
    listed = federation.flwr("ls", "operator")
    assert listed.returncode == 0, listed.stdout[-500:] + listed.stderr[-500:]


def test_make_credentials_checks_every_host_and_leaves_nothing_on_failure(tmp_path):
    """A bad host exits 2 naming it, before any key is made; the CA's key lands apart from the
    coordinator's keys, and no app-signing key is made there."""
    env = {**os.environ, "COCOGEN_PYTHON": sys.executable}
    script = str(ROOT / "deploy" / "make_credentials.sh")
    for hosts in ("10.0.0", "coordinator.example.org bad_name!", "-leading.example.org"):
        done = subprocess.run([script, str(tmp_path / "creds"), hosts], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and "not an IP address or a DNS name" in done.stderr, (hosts, done.stderr)
        assert not (tmp_path / "creds").exists() and not (tmp_path / "creds-ca").exists()
    done = subprocess.run([script, str(tmp_path / "creds"), "coordinator.example.org 10.0.0.5 ::1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "creds-ca").iterdir()) == ["ca.key"]
    # the coordinator's folder: its TLS credentials and the CA's certificate, no signing key
    assert sorted(p.name for p in (tmp_path / "creds").iterdir()) == ["ca.crt", "server.key", "server.pem"]


def _superlink_rss_mib(federation: LocalFederation) -> float:
    """The resident memory of the federation's SuperLink process, in MiB."""
    found = subprocess.run(["pgrep", "-f", f"flower-superlink.*--port {federation.control_port}"],
                           capture_output=True, text=True).stdout.split()
    [pid] = [p for p in found if Path(f"/proc/{p}/status").exists()][:1]
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def test_a_huge_body_and_many_half_open_connections_harm_neither_the_superlink_nor_the_silos(federation):
    """Through the silo-facing address, an unauthenticated 300 MiB body is refused (413) before
    a byte of it reaches the SuperLink, whose memory stays where it was; 600 connections that
    never finish their TLS handshake leave the proxy answering new ones and the silos online,
    and are closed by the proxy within its 10 s header timeout."""
    before = _superlink_rss_mib(federation)
    context = ssl.create_default_context(cafile=str(federation.base / "creds" / "ca.crt"))
    connection = http.client.HTTPSConnection("localhost", federation.public_port, context=context, timeout=30)
    try:
        connection.putrequest("POST", "/v1/fleet/push-messages", skip_accept_encoding=True)
        connection.putheader("Content-Type", "application/protobuf")
        connection.putheader("Content-Length", str(300 * 2**20))
        connection.endheaders()
        try:
            connection.send(b"\0" * 2**20)  # the first MiB of it; the proxy may answer and close first
        except OSError:
            pass
        assert connection.getresponse().status == 413
    finally:
        connection.close()
    assert _superlink_rss_mib(federation) < before + 50
    half_open = [socket.create_connection(("127.0.0.1", federation.public_port), timeout=10) for _ in range(600)]
    try:
        assert _status(federation, "/health") == 403  # a new connection is still answered
        assert list(federation.node_ids().values()) == ["online"] * SILOS
        time.sleep(12)
        closed = 0
        for held in half_open:
            held.settimeout(1)
            try:
                closed += held.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(half_open)
    finally:
        for held in half_open:
            held.close()


def test_an_intruder_holding_the_ca_certificate_cannot_use_the_control_plane(federation, app):
    base = federation.base
    nodes_before = federation.node_ids()
    assert list(nodes_before.values()) == ["online"] * SILOS
    victim = next(iter(nodes_before))
    attempts = {
        "register a node": federation.flwr("supernode", "register", str(base / "intruder" / "intruder.pub"),
                                           "intruder"),
        "list nodes": federation.flwr("supernode", "list", "intruder"),
        "list runs": federation.flwr("ls", "intruder"),
        "submit a run": federation.flwr("run", str(app), "intruder"),
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


def _run_config(federation: LocalFederation, terms: Path | None = None) -> str:
    """The operator's run config, unsigned."""
    base = federation.base
    overrides = (f"+experiment=tiny economics.costs=measured economics.data_size=null calibration.pilot=false "
                 f"results_root={base / 'results'} "
                 f"cache_dir={base / 'server-cache'}")
    if terms is not None:
        overrides += f" economics.terms_file={terms} economics.terms_key={terms.parent / 'terms-signing.key.pub'}"
    return f'overrides="{overrides}"'


def _signed_terms(federation: LocalFederation) -> tuple[Path, list[int]]:
    """The consortium's terms as the operator signs them: each silo's declared data size (its
    exported training rows) and the key its SuperNode registered with; returns the file and
    the sizes."""
    base = federation.base
    keys = base / "operator-keys"
    keygen(keys)
    sizes = [sum(json.loads((base / "data" / f"silo-{i}" / "silo.json").read_text())["label_counts"])
             for i in range(SILOS)]
    organisations = [{"value": 1200.0, "capacity": 150.0, "price_per_second": 5.0, "seconds_per_image": 0.1,
                      "data_size": size, "node_key": (base / f"silo-{i}" / f"silo-{i}.pub").read_text().strip()}
                     for i, size in enumerate(sizes)]
    terms = keys / "terms.json"
    terms.write_text(json.dumps({"sequence": 1, "gamma": 0.5, "organisations": organisations}, indent=1))
    sign(terms, keys / "terms-signing.key")
    return terms, sizes


def _installed_on_silos(federation: LocalFederation, app: Path) -> list[bool]:
    """Whether each silo's Flower home holds this bundle installed (apps/<...>.<hash[:8]>)."""
    short_hash = hashlib.sha256(build_fab_from_disk(app)).hexdigest()[:8]
    return [any(path.name.endswith(short_hash) for path in (federation.silo_home(i) / "apps").glob("*"))
            for i in range(SILOS)]


def test_the_signed_app_runs_on_authenticated_supernodes_with_their_own_data(federation, app):
    """Under the operator's signed terms: each node is the organisation its key belongs to,
    and its declared size is the game's n."""
    base = federation.base
    terms, sizes = _signed_terms(federation)
    signed = federation.signed(app, _run_config(federation, terms))
    done = federation.run(app, signed)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run] = list((base / "results").iterdir())
    rows = json.loads((run / "ledger.json").read_text())
    assert [row["round"] for row in rows] == [1, 2]
    for row in rows:
        assert row["responders"] == [0, 1, 2] and not row["dropped"]
        assert row["received_quotas"] == row["quotas"] == row["images"]
        assert abs(row["transfer_sum"]) <= 1e-9
        reported = {r["partition_id"]: r for r in row["profiles"]}
        for i in range(SILOS):
            exported = json.loads((base / "data" / f"silo-{i}" / "silo.json").read_text())
            assert reported[i]["label_counts"] == exported["label_counts"]  # each silo read its own folder
            assert reported[i]["n"] == sizes[i] and reported[i]["seconds_per_image"] == 0.1  # the terms'
        # the silos report the terms they were told; only their own timing may differ from the terms'
        assert all("seconds_per_image" in flag for flags in row["flags"].values() for flag in flags)
    assert json.loads((run / "terms.json").read_text())["sequence"] == 1  # the run folder keeps its terms
    summary = json.loads((run / "summary.json").read_text())
    print(f"deployment round seconds: {[round(r['round_seconds'], 1) for r in rows]}, "
          f"wall {summary['wall_seconds']:.0f} s")
    assert summary["final_accuracy"] > 0.2
    assert _installed_on_silos(federation, app) == [True] * SILOS
    for i in range(SILOS):
        log = federation.silo_log(i)
        assert "App bundle verified: signed by trusted key" in log
        # ClientApps were forked from the silo's long-lived launcher (deploy/zygote.py)
        assert "ClientApp launcher ready" in log and "forked by the launcher" in log
    # The same signed run submitted again: each silo recorded the run its signature started.
    _refused_runs(federation, {"this signature already started run": (app, signed)})


def _refused_runs(federation: LocalFederation, bundles: dict[str, tuple[Path, str]]) -> None:
    """Submit every bundle (reason -> app folder, run config) at once; every silo refuses each
    one, its log saying why; the operator stops the runs; nothing new is installed."""
    marks = [len(federation.silo_log(i).split("App bundle refused")) for i in range(SILOS)]

    def reasons(silo: int) -> list[str]:
        refusals = federation.silo_log(silo).split("App bundle refused")[marks[silo]:]
        return [refusal.splitlines()[0] for refusal in refusals]

    installed = {app: _installed_on_silos(federation, app) for app, _ in bundles.values()}
    run_ids = []
    try:
        for app, run_config in bundles.values():
            started = federation.run(app, run_config, stream=False, timeout=120)
            assert started.returncode == 0, started.stdout + started.stderr
            run_ids.append(json.loads(started.stdout)["run-id"])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and any(len(reasons(i)) < len(bundles) for i in range(SILOS)):
            time.sleep(2)
        for i in range(SILOS):
            for reason in bundles:
                assert any(reason in line for line in reasons(i)), (f"silo {i}: no refusal for {reason!r}", reasons(i))
    finally:
        for run_id in run_ids:
            federation.flwr("stop", run_id, "operator")
    for app, before in installed.items():  # a refused run installs nothing (the signed app ran before)
        assert _installed_on_silos(federation, app) == before


def _edited_copy(app: Path, folder: Path, line: str) -> Path:
    """A copy of the app with one line added to client_app/app.py: a bundle no silo has seen."""
    copy = _copy_app(app, folder)
    with open(copy / "client_app" / "app.py", "a") as handle:
        handle.write(f"\n{line}\n")
    return copy


def test_runs_not_signed_as_they_are_submitted_are_refused_by_every_supernode(federation, app, tmp_path):
    """A tampered bundle, an unsigned one, a signed bundle with another run config, an expired
    signature, one for another federation, and a bundle the operator's revocation list names."""
    plain = _run_config(federation)
    signed = federation.signed(app, plain)
    tampered = _edited_copy(app, tmp_path / "tampered", "import os  # a silo's data could leave from here")
    unsigned = _edited_copy(app, tmp_path / "unsigned", "# an unsigned edit")
    changed = signed.replace("calibration.pilot=false", "calibration.pilot=false seed=1")
    workstation = federation.base / WORKSTATION
    config = bundle_run_config(build_fab_from_disk(app), [plain])
    expired = sign_run(build_fab_from_disk(app), config, FEDERATION, workstation / PRIVATE_KEY_FILE, valid_days=1,
                       signed_at=int(time.time()) - 2 * DAY)
    elsewhere = sign_run(build_fab_from_disk(app), config, "another-federation", workstation / PRIVATE_KEY_FILE)
    revoked = _edited_copy(app, tmp_path / "revoked", "# a bundle signed, then revoked")
    listed = sign_revocations(Revocations(1, int(time.time()), bundles=frozenset(
        {hashlib.sha256(build_fab_from_disk(revoked)).hexdigest()})), workstation / PRIVATE_KEY_FILE)
    carried = base64.urlsafe_b64encode(listed.encode()).decode().rstrip("=")
    assert not any(any(_installed_on_silos(federation, copy)) for copy in (tampered, unsigned, revoked))
    _refused_runs(federation, {
        "does not match this app bundle": (tampered, signed),
        "the app bundle is unsigned": (unsigned, plain),
        "signed for another run config": (app, changed),
        "the signature expired": (app, f'{plain} {SIGNATURE_KEY}="{expired}"'),
        "signed for federation 'another-federation'": (app, f'{plain} {SIGNATURE_KEY}="{elsewhere}"'),
        "is revoked (revocation list 1)": (revoked,
                                           f'{federation.signed(revoked, plain)} {REVOCATIONS_KEY}="{carried}"'),
    })
    for i in range(SILOS):  # each silo keeps the newest list it saw
        kept = json.loads((federation.base / f"silo-{i}" / "revocations.json").read_text())
        assert kept["revocations"]["sequence"] == 1


def test_no_key_on_the_coordinator_can_sign_a_run_a_silo_accepts(federation):
    """The threat model's claim (docs/deployment.md): the coordinator holds no private key that
    any silo trusts, so a compromised coordinator cannot make a run silos accept."""
    trusted = {f"silo-{i}": load_trusted_entities(federation.base / f"silo-{i}" / TRUSTED_ENTITIES_FILE)
               for i in range(SILOS)}
    coordinator = [federation.base / "creds", federation.base / "link"]
    private = [path for folder in coordinator for path in folder.rglob("*") if path.is_file()
               and b"PRIVATE KEY" in path.read_bytes()[:100]]
    assert {p.name for p in private} >= {"server.key"}  # TLS, not signing
    for path in private:
        try:
            key = load_private_key(path)
        except (ValueError, TypeError):
            continue  # not an Ed25519 key at all
        assert all(key_id(key.public_key()) not in keys for keys in trusted.values()), path


def test_no_process_started_by_the_scripts_attempts_telemetry(federation, recorder):
    assert recorder.requests == []
    # The recorder does see a Flower process whose telemetry is on.
    env = {key: value for key, value in federation.cli_env.items() if key not in QUIET}
    subprocess.run([sys.executable, "-c", "from flwr.supercore.telemetry import EventType, create_event; "
                    "create_event(EventType.PING, None)"], env=env, timeout=120, capture_output=True)
    assert any("telemetry.flower.ai" in line for line in recorder.requests), recorder.requests
