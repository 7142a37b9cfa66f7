"""Lying silos against the consortium's terms, through the real strategy on the fake grid:
a silo's report of a term (value, capacity, price, seconds per image), the seconds it
says it spent and the partition id it names change no quota, transfer, cost or aggregate;
they are flagged. And the manipulation audit of what stays reported."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from client_app.app import train_silo
from strategy import protocol
from strategy.fedgame import GameFedAvg
from strategy.game.audit import GOAL, Game, Limits, audit, max_share
from strategy.game.mechanism import MechanismConfig
from strategy.game.scenario import LossCurve, build_scenario
from strategy.ledger import Ledger
from strategy.protocol import array_digest
from strategy.terms import Terms, key_fingerprint

from fake_grid import GAME, HONEST, HONEST_TERMS, MODEL, SAFEGUARDS, SETTINGS, HostileGrid, judge

pytestmark = pytest.mark.usefixtures("task_identity")
ROOT = Path(__file__).resolve().parents[1]
# costly images, so quotas are interior and a lie could move them
PRICED = Terms((replace(HONEST_TERMS, seconds_per_image=0.1),) * 6)


class LyingGrid(HostileGrid):
    """Honest fake silos, except for the profile fields and train-report metrics ``lies``
    sets, by node; every honest silo reports ``terms``."""

    def __init__(self, lies: dict[int, dict[str, object]], terms: Terms = PRICED) -> None:
        super().__init__([HONEST] * 6, [HONEST] * 6, seed=11)
        self.lies, self.terms = lies, terms

    def _profile(self, node, attack):
        record = dict(super()._profile(node, attack).config_records[protocol.PROFILE])
        record[protocol.wire_key("seconds_per_image")] = self.terms.of(self.partition[node]).seconds_per_image
        lies = {k: v for k, v in self.lies.get(node, {}).items() if not k.startswith("reply ")}
        record.update({protocol.wire_key(k): v for k, v in lies.items()})
        return RecordDict({protocol.PROFILE: ConfigRecord(record)})

    def _reply(self, message, attack):
        content = super()._reply(message, attack)
        lies = {k[6:]: v for k, v in self.lies.get(message.metadata.dst_node_id, {}).items() if k.startswith("reply ")}
        if lies and message.metadata.message_type == "train":
            metrics = dict(content.metric_records[protocol.METRICS])
            metrics.update({protocol.wire_key(k): v(metrics) if callable(v) else v for k, v in lies.items()})
            content[protocol.METRICS] = MetricRecord(metrics)
        return content


def _run(tmp_path: Path, grid: HostileGrid, terms: Terms = PRICED) -> tuple[dict, GameFedAvg]:
    game = replace(GAME, gamma=2.0, mechanism=MechanismConfig(rate=0.5, mix=0.5))
    directory = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    digests = []
    strategy = GameFedAvg(game, SETTINGS, Ledger(directory), judge, SAFEGUARDS, terms, min_orgs=1)
    strategy.refresh_profiles(grid)
    strategy.start(grid, MODEL, num_rounds=1, timeout=1.0,
                   evaluate_fn=lambda r, arrays: digests.append(array_digest(arrays)))
    [row] = json.loads((directory / "ledger.json").read_text())
    return {**row, "global": digests[-1]}, strategy


def _books(row: dict) -> dict:
    """What money and models follow: quotas, transfers, costs, utilities, the global model."""
    return {key: row[key] for key in ("quotas", "transfers", "realised_utilities", "global")} | {
        "realised_cost": row["calibration"]["realised_cost"]}


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> dict:
    row, _ = _run(tmp_path_factory.mktemp("honest"), LyingGrid({}))
    assert 0 < sum(row["quotas"]) < 6 * HONEST_TERMS.capacity  # interior: a lie could move the quotas
    return row


@pytest.mark.parametrize("lies", [
    {101: {"value": 2000.0}},
    {101: {"value": 8000.0}},  # inside the plausibility limit
    {101: {"value": 1e4}, 102: {"value": 1e4}},  # collusion
    {101: {"seconds_per_image": 1e-9, "capacity": 1e4}, 102: {"seconds_per_image": 1e-9, "capacity": 1e4}},
    {101: {"price_per_second": 1e-3}},
], ids=["value x2", "value x8", "collusion value 1e4", "collusion cost 1e-9 capacity 1e4", "price"])
def test_manipulation_of_a_term_changes_no_quota_transfer_cost_or_model_and_is_flagged(tmp_path, honest, lies):
    row, _ = _run(tmp_path, LyingGrid(lies))
    assert _books(row) == _books(honest)
    liars = sorted(node - 101 for node in lies)
    assert sorted(int(k) for k in row["flags"]) == liars
    for org in liars:
        assert all("the terms say" in flag for flag in row["flags"][str(org)])
        assert row["profiles"][org]["value"] == HONEST_TERMS.value  # the game used the terms


def test_manipulation_of_seconds_spent_changes_no_cost(tmp_path, honest):
    """Images are priced at the terms' seconds per image: the seconds a silo says it spent are kept, never priced."""
    row, _ = _run(tmp_path, LyingGrid({101: {"reply generation_seconds": 0.0}}))
    assert _books(row) == _books(honest)
    assert row["generation_seconds"][0] == 0.0 and row["images"][0] > 0
    terms = PRICED.of(0)
    assert row["calibration"]["realised_cost"][0] == pytest.approx(row["images"][0] * terms.cost)


def test_manipulation_of_a_declared_n_is_refused_above_and_flagged_below(tmp_path):
    """Where the terms declare data sizes, they are the organisations' ``n`` (the game's and
    the aggregation weights'): a reported ``n`` above is refused, below it is flagged and not used."""
    declared = Terms(tuple(replace(t, data_size=200) for t in PRICED.organisations))
    _, strategy = _run(tmp_path, LyingGrid({101: {"n": 400, "label_counts": [40] * 10}}), declared)
    assert 101 not in strategy.profiles
    assert sorted(p.partition_id for p in strategy.profiles.values()) == [1, 2, 3, 4, 5]
    fewer = {"n": 20, "label_counts": [2] * 10,
             "reply num_examples": lambda metrics: 20 + metrics[protocol.wire_key("images_generated")]}
    row, _ = _run(tmp_path, LyingGrid({101: fewer}), declared)
    assert row["flags"] == {"0": ["reported n 20, the terms declare 200"]} and row["profiles"][0]["n"] == 200
    assert row["responders"] == list(range(6))  # its replies, true to its own 20 rows, are not refused


def test_the_main_models_are_weighted_by_admitted_n_plus_the_quota_never_by_the_reply(tmp_path, honest):
    """A silo that says it made one image fewer than ordered (its examples agreeing) moves no
    aggregation weight: the weight is its admitted n plus its quota."""
    def one_fewer_of(name: str):
        return lambda metrics: metrics[protocol.wire_key(name)] - 1

    one_fewer = {f"reply {name}": one_fewer_of(name) for name in ("images_generated", "num_examples")}
    fewer, _ = _run(tmp_path, LyingGrid({101: one_fewer}))
    assert fewer["responders"] == list(range(6)) and fewer["images"][0] == honest["images"][0] - 1
    assert fewer["global"] == honest["global"]


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_collusion_on_a_partition_id_cannot_evict_its_keyed_holder(tmp_path):
    """With node keys in the terms, a node's organisation is its key's: an intruder naming
    partition 0 first (a lower node id) is refused, and a member naming another member's
    partition is admitted as its own, flagged."""
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(8)]
    keyed = Terms(tuple(replace(t, node_key=key_fingerprint(_pem(k))) for t, k in zip(PRICED.organisations, keys)))
    grid = LyingGrid({})
    grid.keys = {node: _pem(key) for node, key in zip(grid.nodes, keys)}
    grid.partition[104] = 0  # the member holding organisation 3's key names partition 0
    grid.nodes.insert(0, 50)  # an intruder with its own key names partition 0 too
    grid.partition[50], grid.keys[50] = 0, _pem(keys[7])
    grid.profile_attack[50] = grid.reply_attack[50] = HONEST
    row, strategy = _run(tmp_path, grid, keyed)
    held = {p.partition_id: node for node, p in strategy.profiles.items()}
    assert held == {i: 101 + i for i in range(6)} and 50 not in strategy.profiles
    assert row["flags"] == {"3": ["named partition id 0, its node key is organisation 3's"]}


def test_key_fingerprints_match_across_openssh_and_pem():
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert key_fingerprint(openssh) == key_fingerprint(_pem_of(key)) != key_fingerprint(
        _pem_of(ec.generate_private_key(ec.SECP384R1()).public_key()))
    with pytest.raises(ValueError, match="not an OpenSSH or PEM public key"):
        key_fingerprint("ssh-rsa nonsense")


def _pem_of(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- the manipulation audit ---------------------------------------------------------

def _game(n, skew, cost, value, capacity, gamma=0.5, rate=0.5, mix=0.5) -> Game:
    scenario = build_scenario(n=n, skew=skew, cost=cost, value=value, capacity=capacity, gamma=gamma,
                              loss=LossCurve(), eta=1.0, omega=0.5)
    return Game(scenario, "cocogen_plus", MechanismConfig(rate=rate, mix=mix), seed=0)


def test_manipulation_audit_finds_what_a_claimed_value_would_pay_and_that_terms_pay_nothing():
    game = _game([1200, 800, 1500], [0.2, 0.5, 0.1], [0.02] * 3, [100.0] * 3, [3000.0] * 3, gamma=2.0, mix=0.0)
    found = {(m.organisation, m.field): m for m in audit(game, Limits(declared=True))}
    assert found[(0, "value")].gain > 1.0 and found[(0, "value")].report > 100.0  # as a claim, inflating pays
    truthful = game.utilities(game.scenario)
    doubled = replace(game.scenario, value=np.array([200.0, 100.0, 100.0]))
    assert game.utilities(doubled, value_paid=True)[0] > truthful[0]  # a claim paid at the claimed value
    for i in range(3):
        assert found[(i, "images")].gain == 0.0  # reporting fewer images than made never pays


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(200, 3000), st.floats(0.0, 0.8), st.floats(0.005, 0.2)), min_size=3, max_size=3),
       st.sampled_from([0.0, 0.5, 1.0]))
def test_truthful_images_are_a_best_response(orgs, mix):
    """Images are paid as reported but bounded by the quota: reporting fewer never pays."""
    n, skew, cost = (list(x) for x in zip(*orgs))
    game = _game(n, skew, cost, [100.0] * 3, [2000.0] * 3, mix=mix)
    assert max_share(audit(game, Limits(declared=True), fields=("images",))) == 0.0


def test_an_undeclared_n_is_a_lever_a_declared_one_is_a_term():
    """Understating ``n`` makes data look scarce, so the others generate more: where the
    terms declare data sizes, ``n`` is theirs and the lie pays nothing."""
    game = _game([200, 200, 200], [0.0, 0.0, 0.0], [0.125, 0.125, 0.03125], [100.0] * 3, [2000.0] * 3, mix=0.0)
    undeclared = audit(game, Limits(declared=False), fields=("n",))
    assert max_share(undeclared) > GOAL and undeclared[0].report < 200
    assert max_share(audit(game, Limits(declared=True), fields=("n",))) == 0.0


def test_the_audit_cli_prints_a_table_then_the_largest_share(tmp_path):
    spec = {"n": [1200, 800, 1500], "skew": [0.2, 0.5, 0.1], "cost": [0.02] * 3, "value": [100] * 3,
            "capacity": [3000] * 3, "gamma": 0.5, "mechanism": {"rho": 0.5, "lambda": 0.5}, "declared": True}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "strategy", "audit", str(path)], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["org", "field", "kind"] and len(lines) == 1 + 3 * 6 + 2
    assert lines[-1].startswith("max_manipulation_gain_share=") and float(lines[-1].split("=")[1]) >= 0
    bad = subprocess.run([sys.executable, "-m", "strategy", "audit", "-"], input=json.dumps({**spec, "declared": 1}),
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: declared: must be true or false")


def test_a_silo_whose_numbers_leave_the_games_domain_is_refused_and_the_run_goes_on(tmp_path):
    """``n = 2e12`` with label counts summing to it passes the profile's own checks; where no
    size is declared it would reach the game: that silo is refused, the others play."""
    huge = {101: {"n": 2 * 10**12, "label_counts": [2 * 10**11] * 10}}
    row, strategy = _run(tmp_path, LyingGrid(huge), PRICED)
    assert 101 not in strategy.profiles and row["orgs"] == [1, 2, 3, 4, 5]


def test_a_silo_refuses_a_quota_above_its_own_capacity():
    capacity = int(SETTINGS.capacity[-1])  # by partition id, the last entry repeating
    order = protocol.TrainOrder(server_round=1, quota=capacity + 1, target=(0.1,) * 10)
    message = Message(protocol.order_content(SETTINGS, order, MODEL, MODEL), dst_node_id=101, message_type="train")
    context = Context(run_id=1, node_id=101, state=RecordDict(), run_config={},
                      node_config={protocol.NODE_PARTITION_ID: 5})
    with pytest.raises(ValueError, match=f"quota {capacity + 1} is above this organisation's capacity"):
        train_silo(message, context)
