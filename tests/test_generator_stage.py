"""The generator warm-up stage: the server's side (server_app/generator_stage.py) on a fake
grid (what it ships is packed, the averaged generator does not depend on reply order, a
poisoned reply is screened and a refused generator never cached), and a silo's step
(client_app/app.py), which trains the weights it was shipped."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from client_app.app import train_generator_step
from client_app.silo import generator_config
from generation import build_unet, load_generator
from server_app.compute import ComputeProfile, compute_profile
from server_app.config import load_settings
from server_app.generator_stage import GeneratorRefused, generator_problem, prepare_generator, warmup_checkpoint
from strategy import protocol
from strategy.aggregation import Aggregation
from strategy.protocol import NODE_CACHE_DIR, NODE_PARTITION_ID, WarmupOrder, WarmupReport
from task.model import Net

SETTINGS = load_settings(["+experiment=tiny"]).silo
SCREEN = Aggregation("fedavg", clip_multiple=3.0)
"""The default warm-up screening: FedAvg over updates clipped to 3x the round's median norm."""


def finite(unet, cfg):
    """The tiny preset's check (``min_label_fidelity`` 0): finite weights and samples."""
    return generator_problem(unet, cfg, Net(), 0.0, seed=0)


def warm_up(grid, nodes, cache, check=finite, weights=None):
    return prepare_generator(grid, nodes, SETTINGS, cache, 1.0, check, SCREEN, weights)

pytestmark = pytest.mark.usefixtures("task_identity")


class WarmupGrid:
    """Silos that each return the shipped generator plus their own noise, weighted by
    their own example counts; ``reverse``: the replies come back in reverse order."""

    def __init__(self, reverse: bool, silent: frozenset[int] = frozenset(),
                 poison: frozenset[int] = frozenset()) -> None:
        self.reverse = reverse
        self.silent = silent
        """Nodes that never answer."""
        self.poison = poison
        """Nodes that return the shipped weights x1e4 and claim 1e9 examples."""
        self.shipped: list[ArrayRecord] = []

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            _, order = protocol.read_order(WarmupOrder, message.content)
            shipped = message.content.array_records[protocol.ARRAYS]
            self.shipped.append(shipped)
            node = message.metadata.dst_node_id
            if node in self.silent:
                continue
            noise = np.random.default_rng([node, order.server_round])
            trained = {key: Array(array.numpy() + noise.normal(0, 0.01, array.shape).astype(array.numpy().dtype))
                       for key, array in shipped.items()}
            report = WarmupReport(num_examples=100 + 37 * node, loss=0.5)
            if node in self.poison:
                trained = {key: Array(array.numpy() * np.float32(1e4)) for key, array in shipped.items()}
                report = WarmupReport(num_examples=10**9, loss=0.5)
            replies.append(Message(protocol.report_content(report, ArrayRecord(trained)), reply_to=message))
        return replies[::-1] if self.reverse else replies


def test_a_generator_is_cached_only_when_every_organisation_trained_it(tmp_path):
    """The cache key holds the run's organisations (``num_orgs``); a warm-up that fewer
    trained (a silo silent in a round, or fewer nodes) is used by its run and never cached."""
    assert warmup_checkpoint(SETTINGS, tmp_path) != warmup_checkpoint(replace(SETTINGS, num_orgs=2), tmp_path)
    for nodes, silent in (([1, 2, 3], {2}), ([1, 2], set())):
        generator = warm_up(WarmupGrid(False, frozenset(silent)), nodes, tmp_path)
        assert generator is not None and load_generator(warmup_checkpoint(SETTINGS, tmp_path)) is None
    warm_up(WarmupGrid(False), [1, 2, 3], tmp_path)
    assert load_generator(warmup_checkpoint(SETTINGS, tmp_path)) is not None


def test_the_warmed_up_generator_is_packed_and_does_not_depend_on_reply_order(tmp_path):
    digests = []
    for reverse in (False, True):
        grid = WarmupGrid(reverse)
        generator = warm_up(grid, [3, 1, 2], tmp_path / f"reverse-{reverse}")
        assert [set(shipped) for shipped in grid.shipped] == [{"packed.float32"}] * len(grid.shipped)
        digests.append(protocol.array_digest(generator))
    assert digests[0] == digests[1]


def _distance(a: ArrayRecord, b: ArrayRecord) -> float:
    return float(np.sqrt(sum(np.sum((a[k].numpy().astype(np.float64) - b[k].numpy()) ** 2) for k in a.keys())))


def test_a_poisoned_warmup_reply_is_clipped_and_weighs_what_the_terms_say(tmp_path):
    """One silo of three returns the shipped weights x1e4 with 1e9 examples. Plain FedAvg
    (the warm-up's former rule) takes it almost alone, and that generator samples NaN; the
    screened warm-up clips its update to 3x the median and weighs every silo alike (or by the
    terms' weights), so the generator stays near the honest silos' and samples finite images.
    A node without a weight in the terms is left out."""
    honest = warm_up(WarmupGrid(False), [1, 2], tmp_path / "honest")
    poisoned = warm_up(WarmupGrid(False, poison=frozenset({3})), [1, 2, 3], tmp_path / "screened")
    unet = protocol.load_packed(build_unet(generator_config(SETTINGS)), poisoned, protocol.GENERATOR)
    assert finite(unet, generator_config(SETTINGS)) is None

    grid, shipped = WarmupGrid(False, poison=frozenset({3})), protocol.packed(
        ArrayRecord(build_unet(generator_config(SETTINGS)).state_dict()))
    content = protocol.order_content(SETTINGS, WarmupOrder(server_round=1), shipped)
    replies = grid.send_and_receive([Message(content, dst_node_id=n, message_type=protocol.WARMUP) for n in (1, 2, 3)])
    fedavg = FedAvg(weighted_by_key=protocol.NUM_EXAMPLES, arrayrecord_key=protocol.ARRAYS)
    plain, _ = fedavg.aggregate_train(1, replies)
    unscreened = protocol.load_packed(build_unet(generator_config(SETTINGS)), plain, protocol.GENERATOR)
    assert finite(unscreened, generator_config(SETTINGS)) is not None  # what the screening prevents
    assert _distance(poisoned, honest) < 1e-3 * _distance(plain, honest)

    weighed = warm_up(WarmupGrid(False, poison=frozenset({3})), [1, 2, 3], tmp_path / "weighed",
                      weights={1: 900.0, 2: 900.0})
    assert protocol.array_digest(weighed) == protocol.array_digest(honest)  # node 3 has no terms: left out


def test_a_refused_generator_ends_the_warmup_and_is_never_cached(tmp_path):
    """A check that fails (here: a label-fidelity floor no tiny generator reaches) refuses the
    generator with the reason, and nothing is cached."""

    def strict(unet, cfg):
        return generator_problem(unet, cfg, Net(), 0.99, seed=0)

    with pytest.raises(GeneratorRefused, match="label fidelity .* below generator.min_label_fidelity 0.99"):
        warm_up(WarmupGrid(False), [1, 2, 3], tmp_path, check=strict)
    assert load_generator(warmup_checkpoint(SETTINGS, tmp_path)) is None


def test_a_generator_with_nan_weights_or_samples_is_refused():
    cfg = generator_config(SETTINGS)
    unet = build_unet(cfg)
    with torch.no_grad():
        next(iter(unet.parameters())).fill_(float("nan"))
    assert generator_problem(unet, cfg, Net(), 0.0, seed=0) == "its weights hold NaN or inf"


@pytest.mark.e2e  # a silo's warm-up step: loads its data and trains the generator, three times
def test_a_silo_trains_the_shipped_generator_whatever_its_process_trained_before(tmp_path):
    """Simulated silos share ClientApp processes: a silo's warm-up step must start from the
    weights shipped to it, never from another silo's result left in the process."""
    shipped = protocol.packed(ArrayRecord(build_unet(generator_config(SETTINGS)).state_dict()))

    def step(partition: int) -> str:
        content = protocol.order_content(SETTINGS, WarmupOrder(server_round=1), shipped)
        message = Message(content, dst_node_id=partition, message_type=protocol.WARMUP)
        context = Context(run_id=1, node_id=partition, state=RecordDict(), run_config={},
                          node_config={NODE_PARTITION_ID: partition, NODE_CACHE_DIR: str(tmp_path)})
        reply = train_generator_step(message, context)
        return protocol.array_digest(reply.content[protocol.ARRAYS])

    alone = step(1)
    assert step(0) != alone
    assert step(1) == alone


def test_the_compute_profile_states_the_organisations_seconds_and_times_the_host_only_for_null(tmp_path):
    """The organisations' seconds per image are configured, times their speed factors (the
    last repeats), and no timing runs; with null the base is this host's, timed once and
    cached; with ``costs=measured`` silos are told nothing and time themselves."""
    run = load_settings(["+experiment=tiny", "economics.seconds_per_image=0.3", "economics.speed_factor=[1.0,2.0]"])
    settings = run.silo
    generator = protocol.packed(ArrayRecord(build_unet(generator_config(settings)).state_dict()))
    given = compute_profile(run.costs, settings, generator, tmp_path)
    assert given == ComputeProfile((0.3, 0.6, 0.6), (0.3, 0.6, 0.6))
    assert not (tmp_path / "compute").exists()
    own = compute_profile(replace(run.costs, seconds_per_image=None), settings, generator, tmp_path)
    [timing] = (tmp_path / "compute").glob("*.json")
    host = json.loads(timing.read_text())["seconds_per_image"]
    assert 0 < host < 1
    assert own.seconds_per_image == pytest.approx((host, 2 * host, 2 * host))
    measured = compute_profile(replace(run.costs, costs="measured"), settings, generator, tmp_path)
    assert measured == ComputeProfile((0.3, 0.6, 0.6), ())


def test_without_a_generator_to_time_null_seconds_per_image_is_refused_with_what_to_set(tmp_path):
    """A local generator lives on the silos only: the server cannot time it, so the
    organisations' seconds per image must be configured."""
    run = load_settings(["+experiment=tiny", "generator.source=local", "economics.seconds_per_image=0.3"])
    assert compute_profile(run.costs, run.silo, None, tmp_path) == ComputeProfile((0.3,) * 3, (0.3,) * 3)
    with pytest.raises(ValueError, match="set economics.seconds_per_image"):
        compute_profile(replace(run.costs, seconds_per_image=None), run.silo, None, tmp_path)
    assert not (tmp_path / "compute").exists()
