"""Whole messages: the records of each one, built by ``*_content`` and read by ``read_*``."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from strategy.protocol.codec import Part, ProtocolError, check_arrays, read, write
from strategy.protocol.names import ARRAYS, CONFIG, FORK, GENERATOR, METRICS, PROFILE, SETTINGS, TWIN
from strategy.protocol.parts import EvaluateOrder, EvaluateReport, Profile, SiloSettings, TrainOrder, TrainReport


def query_content(settings: SiloSettings, generator: ArrayRecord | None) -> RecordDict:
    """The parameter query: the run's silo settings and, when federated, the generator."""
    content = RecordDict({SETTINGS: write(settings)})
    if generator is not None:
        content[GENERATOR] = generator
    return content


def read_query(content: RecordDict) -> tuple[SiloSettings, ArrayRecord | None]:
    _expect_records(content, {SETTINGS}, optional={GENERATOR})
    generator = content.array_records[GENERATOR] if GENERATOR in content.array_records else None
    return read_settings(content), generator


def profile_content(profile: Profile) -> RecordDict:
    return RecordDict({PROFILE: write(profile)})


def read_profile(content: RecordDict) -> Profile:
    _expect_records(content, {PROFILE})
    return read(Profile, content.config_records[PROFILE], PROFILE)


def order_content(settings: SiloSettings, order: Any, arrays: ArrayRecord | None = None,
                  twin: ArrayRecord | None = None, fork: ArrayRecord | None = None) -> RecordDict:
    """An order (warm-up, pilot, train or evaluate) with the settings and the model(s) it is about."""
    content = RecordDict({SETTINGS: write(settings), CONFIG: write(order)})
    for name, models in ((ARRAYS, arrays), (TWIN, twin), (FORK, fork)):
        if models is not None:
            content[name] = models
    return content


def read_order(kind: type[Part], content: RecordDict) -> tuple[SiloSettings, Part]:
    """The settings and the order of kind ``kind``; the model is ``content[ARRAYS]`` (and,
    for a game round, the twin's is ``content[TWIN]``; an evaluation may carry the round's
    fork global model, ``content[FORK]``)."""
    _expect_records(content, {SETTINGS, CONFIG, ARRAYS} | ({TWIN} if kind is TrainOrder else set()),
                    optional={FORK} if kind is EvaluateOrder else set())
    return read_settings(content), read(kind, content.config_records[CONFIG], CONFIG)


def read_settings(content: RecordDict) -> SiloSettings:
    return read(SiloSettings, content.config_records[SETTINGS], SETTINGS)


def report_content(report: Any, arrays: ArrayRecord | None = None, twin: ArrayRecord | None = None,
                   fork: ArrayRecord | None = None) -> RecordDict:
    """A reply: the report as the one MetricRecord and, for training, the trained model(s)."""
    content = RecordDict({METRICS: write(report, MetricRecord)})
    for name, models in ((ARRAYS, arrays), (TWIN, twin), (FORK, fork)):
        if models is not None:
            content[name] = models
    return content


def read_report(kind: type[Part], content: RecordDict, reference: ArrayRecord | None = None) -> Part:
    """A reply's report; with ``reference``, its arrays (a train report's main, twin and fork,
    an evaluate report's two fine-tuned models) must match it in keys, shapes and dtypes,
    and be finite (what Flower's aggregation needs, checked before it can raise)."""
    models = set()
    if reference is not None:
        models = {TrainReport: {ARRAYS, TWIN, FORK}, EvaluateReport: {ARRAYS, FORK}}.get(kind, {ARRAYS})
    _expect_records(content, {METRICS} | models)
    report = read(kind, content.metric_records[METRICS], METRICS)
    for name in sorted(models):
        check_arrays(content.array_records[name], reference, name)
    return report


def _expect_records(content: RecordDict, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    names = set(content.keys())
    if not required <= names <= required | set(optional):
        raise ProtocolError("message", f"expected records {sorted(required)} (optional {sorted(optional)}), "
                                       f"got {sorted(names)}")
    kinds = {**{n: ArrayRecord for n in content.array_records}, **{n: ConfigRecord for n in content.config_records},
             **{n: MetricRecord for n in content.metric_records}}
    for name in names:
        wanted = _RECORD_TYPES[name]
        if kinds.get(name) is not wanted:
            raise ProtocolError(name, f"must be a {wanted.__name__}")


_RECORD_TYPES = {ARRAYS: ArrayRecord, GENERATOR: ArrayRecord, TWIN: ArrayRecord, FORK: ArrayRecord,
                 CONFIG: ConfigRecord, SETTINGS: ConfigRecord, PROFILE: ConfigRecord, METRICS: MetricRecord}
