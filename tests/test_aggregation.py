"""The aggregation rules read (model, weight) pairs and give what Flower's own strategies give
on the same models sent as replies (to the bit, the trimmed mean to a float sum's order),
without touching the models; the fork arm follows the main arm's choices."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedMedian, FedTrimmedAvg, Krum

from strategy import protocol
from strategy.aggregation import AGGREGATIONS, Aggregation

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower's replies need a run id

KEYS = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1,
        "weighted_by_key": protocol.NUM_EXAMPLES, "arrayrecord_key": protocol.ARRAYS,
        "configrecord_key": protocol.CONFIG}
FLOWER = {
    "fedavg": lambda: FedAvg(**KEYS),
    "fedmedian": lambda: FedMedian(**KEYS),
    "trimmed_mean": lambda: FedTrimmedAvg(beta=0.25, **KEYS),
    "krum": lambda: Krum(num_malicious_nodes=1, **KEYS),
}


def _model(rng: np.random.Generator, scale: float = 1.0) -> ArrayRecord:
    return ArrayRecord({"conv.weight": Array((scale * rng.normal(size=(4, 1, 3, 3))).astype(np.float32)),
                        "conv.bias": Array((scale * rng.normal(size=4)).astype(np.float32)),
                        "fc.weight": Array((scale * rng.normal(size=(3, 5))).astype(np.float32))})


def _reply(model: ArrayRecord, weight: int) -> Message:
    metrics = MetricRecord({protocol.NUM_EXAMPLES: weight})
    content = RecordDict({protocol.ARRAYS: _copy(model), protocol.METRICS: metrics})
    return Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)


def _copy(model: ArrayRecord) -> ArrayRecord:
    return ArrayRecord({key: Array(array.numpy().copy()) for key, array in model.items()})


def _flower(name: str, clip_norm: float | None, models: list[ArrayRecord], weights: list[int],
            sent: ArrayRecord) -> ArrayRecord:
    """What Flower's strategy (behind its server-side clipping wrapper with no noise) aggregates."""
    rule = FLOWER[name]()
    replies = [_reply(model, weight) for model, weight in zip(models, weights)]
    if clip_norm is None:
        return rule.aggregate_train(1, replies)[0]
    clipping = DifferentialPrivacyServerSideFixedClipping(rule, noise_multiplier=0.0, clipping_norm=clip_norm,
                                                          num_sampled_clients=len(replies))
    clipping.current_arrays = sent
    return clipping.aggregate_train(1, replies)[0]


@pytest.mark.parametrize("clip_norm", [None, 0.5])
@pytest.mark.parametrize("name", AGGREGATIONS)
def test_each_rule_is_flowers_own_to_the_bit_and_leaves_the_models_alone(name, clip_norm):
    rng = np.random.default_rng(7)
    sent = _model(rng)
    for members in (1, 2, 5):
        models = [_model(rng, scale=1.0 + k) for k in range(members)]
        weights = [int(w) for w in rng.integers(10, 300, size=members)]
        before = [protocol.array_digest(model) for model in models]
        rule = Aggregation(name, trim_beta=0.25, krum_malicious=1, clip_norm=clip_norm)
        got = rule(list(zip(models, weights)), sent)
        expected = _flower(name, clip_norm, models, weights, sent)
        assert list(got.arrays.keys()) == list(expected.keys())
        for key in expected.keys():
            mine, theirs = got.arrays[key].numpy(), expected[key].numpy()
            assert mine.dtype == theirs.dtype, (name, key)
            if name == "trimmed_mean":  # summed in ascending order; Flower sums in np.partition's order
                assert np.allclose(mine, theirs, rtol=1e-6, atol=1e-6), (name, clip_norm, members, key)
            else:
                assert np.array_equal(mine, theirs), (name, clip_norm, members, key)
        assert [protocol.array_digest(model) for model in models] == before
        assert len(got.used) == 1 if name == "krum" else got.used == list(range(members))


def test_krum_names_the_member_it_kept():
    rng = np.random.default_rng(3)
    models = [_model(rng) for _ in range(4)]
    models[2] = _model(rng, scale=1e3)
    got = Aggregation("krum", krum_malicious=1)([(model, 1.0) for model in models], _model(rng))
    assert got.used != [2] and protocol.array_digest(got.arrays) == protocol.array_digest(models[got.used[0]])


def test_an_unknown_rule_or_a_non_positive_clip_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        Aggregation("mean")
    with pytest.raises(ValueError, match="clip_norm"):
        Aggregation(clip_norm=0.0)
    with pytest.raises(ValueError, match="clip_multiple"):
        Aggregation(clip_multiple=0.5)
    with pytest.raises(ValueError, match="min_agreement"):
        Aggregation(min_agreement=1.0)


def _moved(model: ArrayRecord, rng: np.random.Generator, scale: float) -> ArrayRecord:
    return ArrayRecord({key: Array((array.numpy() + scale * rng.normal(size=array.numpy().shape)).astype(np.float32))
                        for key, array in model.items()})


@pytest.mark.parametrize("clip_norm", [None, 0.5])
@pytest.mark.parametrize("name", AGGREGATIONS)
def test_forks_equal_to_their_mains_aggregate_to_the_main_global_bit_for_bit(name, clip_norm):
    """A round where nobody generated: every fork is its main model and weighs the same, so
    the fork global is the main global exactly (the round's total effect is 0)."""
    rule = Aggregation(name, trim_beta=0.25, krum_malicious=1, clip_norm=clip_norm)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        sent = _model(rng)
        members = int(rng.integers(1, 8))
        mains = [_moved(sent, rng, scale=1.0 + k) for k in range(members)]
        weights = [float(w) for w in rng.integers(10, 300, size=members)]
        main, fork = rule.paired(list(zip(mains, weights)), list(zip([_copy(m) for m in mains], weights)), sent)
        assert protocol.array_digest(fork) == protocol.array_digest(main.arrays), (name, clip_norm, seed)


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_the_fork_arm_follows_the_main_arms_choices(name):
    """Each fork is its main model plus a small offset: the fork global is the main global
    plus the offsets of the members the rule kept, weighted as the rule weighs them."""
    rng = np.random.default_rng(11)
    sent = _model(rng)
    mains = [_moved(sent, rng, scale=1.0 + k) for k in range(5)]
    mains[3] = _moved(sent, rng, scale=50.0)  # an outlier the robust rules leave out
    offset = [0.001 * (k + 1) for k in range(5)]
    forks = [ArrayRecord({key: Array(array.numpy() + np.float32(d)) for key, array in m.items()})
             for m, d in zip(mains, offset)]
    rule = Aggregation(name, trim_beta=0.2, krum_malicious=1)
    main, fork = rule.paired([(m, 1.0) for m in mains], [(f, 1.0) for f in forks], sent)
    shift = np.concatenate([(fork[k].numpy() - main.arrays[k].numpy()).ravel() for k in fork.keys()])
    if name == "fedavg":
        assert np.allclose(shift, np.mean(offset), atol=1e-5)
    elif name == "krum":
        assert np.allclose(shift, offset[main.used[0]], atol=1e-5) and main.used != [3]
    else:  # at each coordinate, the mean offset of the members whose main values rank in the middle
        stacked = np.stack([np.concatenate([m[k].numpy().ravel() for k in fork.keys()]) for m in mains])
        ranked = np.asarray(offset)[np.argsort(stacked, axis=0)]
        kept = ranked[2:3] if name == "fedmedian" else ranked[1:4]
        assert np.allclose(shift, kept.mean(axis=0), atol=1e-4)
        assert np.ptp(shift) > 0  # not one member's offset everywhere


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_an_update_of_norm_zero_is_clipped_to_itself(name):
    """A silo that returns the model as sent: its update has norm 0 and a clip factor of 1
    (Flower's clipping divides by the norm)."""
    rng = np.random.default_rng(5)
    sent = _model(rng)
    mains = [_copy(sent), *(_moved(sent, rng, scale=1.0) for _ in range(3))]
    rule = Aggregation(name, trim_beta=0.25, krum_malicious=1, clip_norm=0.5)
    main, fork = rule.paired([(m, 1.0) for m in mains], [(_copy(m), 1.0) for m in mains], sent)
    assert protocol.array_digest(fork) == protocol.array_digest(main.arrays)
    assert all(np.isfinite(array.numpy()).all() for array in main.arrays.values())


def _update(sent: ArrayRecord, direction: ArrayRecord, scale: float) -> ArrayRecord:
    return ArrayRecord({k: Array((sent[k].numpy() + np.float32(scale) * direction[k].numpy()).astype(np.float32))
                        for k in sent.keys()})


def _norm(model: ArrayRecord, sent: ArrayRecord) -> float:
    squares = (np.sum((model[k].numpy().astype(np.float64) - sent[k].numpy()) ** 2) for k in sent.keys())
    return float(np.sqrt(sum(squares)))


def test_the_bound_is_a_multiple_of_the_lower_median_update_norm_and_the_smaller_of_two_bounds():
    """Updates of norms 1, 2, 3, 4 and 1000: the bound is 3 x 3 (the median); with four
    members 1, 2, 3, 1000 it is 3 x 2 (the lower median: the long one never sets it); with
    ``clip_norm`` 5 as well, 5. Only the members above it are clipped, to it exactly."""
    rng = np.random.default_rng(11)
    sent, direction = _model(rng), _model(rng)
    unit = _norm(_update(sent, direction, 1.0), sent)
    for norms, clip_norm, bound in (((1, 2, 3, 4, 1000), None, 9.0), ((1, 2, 3, 1000), None, 6.0),
                                    ((1, 2, 3, 1000), 5.0, 5.0)):
        members = [(_update(sent, direction, n / unit), 1.0) for n in norms]
        got = Aggregation("fedavg", clip_multiple=3.0, clip_norm=clip_norm)(members, sent)
        assert got.bound == pytest.approx(bound, rel=1e-5)
        assert sorted(got.clipped) == [k for k, n in enumerate(norms) if n > bound]
        expected = np.mean([min(n, bound) for n in norms])
        assert _norm(got.arrays, sent) == pytest.approx(expected, rel=1e-4)


def test_members_pointing_away_from_the_servers_update_are_left_out_of_both_arms():
    """Against the server's own update: a member whose update points the other way is left out
    of the main arm and of the fork arm, whatever its number of look-alikes; without a
    reference, or where every member points away, nobody is."""
    rng = np.random.default_rng(12)
    sent, direction = _model(rng), _model(rng)
    reference = _update(sent, direction, 1.0)
    honest = [_moved(_update(sent, direction, 1.0), rng, 0.3) for _ in range(3)]
    colluders = [_update(sent, direction, -1.0)] * 3  # as many as the honest members, one model
    members = [(m, 1.0) for m in honest + colluders]
    rule = Aggregation("fedavg", min_agreement=0.0)
    main, fork = rule.paired(members, [(m, 1.0) for m in honest + colluders], sent, reference)
    assert sorted(main.excluded) == [3, 4, 5] and all(s < 0 for s in main.excluded.values())
    assert main.used == [0, 1, 2]
    expected = Aggregation("fedavg")([(m, 1.0) for m in honest], sent).arrays
    assert protocol.array_digest(main.arrays) == protocol.array_digest(expected)
    assert protocol.array_digest(fork) == protocol.array_digest(expected)
    assert rule(members, sent).excluded == {}  # no reference: no screening
    assert rule([(m, 1.0) for m in colluders], sent, reference).excluded == {}  # all would go: none does
