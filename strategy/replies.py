"""Screening of client replies before they reach aggregation.

Flower's aggregation raises on inconsistent replies (and a ServerApp crash ends the
run), so every reply is checked here first. A bad reply is dropped with a reason;
nothing a client sends can stop the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message

ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"


@dataclass(frozen=True)
class Screened:
    """Replies that passed, and a reason for every node whose reply did not."""

    valid: list[Message]
    dropped: dict[int, str]


def screen_replies(
    replies: Iterable[Message],
    required_metrics: Iterable[str],
    reference: ArrayRecord | None = None,
    counts: Iterable[str] = ("num-examples",),
) -> Screened:
    """Keep replies with the expected records, finite metrics and matching arrays.

    Args:
        replies: the messages returned by the grid.
        required_metrics: the exact keys of the reply's MetricRecord (named ``metrics``),
            each a finite number; Flower's aggregation needs identical keys in all replies.
        reference: when given, the reply must hold exactly one ArrayRecord (named
            ``arrays``) with the same keys, shapes and dtypes, and only finite values.
        counts: metrics that must also be non-negative (``num-examples`` > 0).
    """
    valid, dropped = [], {}
    required, count_keys = tuple(required_metrics), tuple(counts)
    for reply in replies:
        node = reply.metadata.src_node_id
        reason = _problem(reply, required, count_keys, reference)
        if reason is None:
            valid.append(reply)
        else:
            dropped[node] = reason
    return Screened(valid, dropped)


def _problem(reply: Message, required: tuple[str, ...], counts: tuple[str, ...],
             reference: ArrayRecord | None) -> str | None:
    if reply.has_error():
        return f"client error: {reply.error.reason}"
    content = reply.content
    if list(content.metric_records) != [METRICS_KEY]:
        return f"expected one MetricRecord named {METRICS_KEY!r}, got {list(content.metric_records)}"
    metrics = content.metric_records[METRICS_KEY]
    missing = [key for key in required if key not in metrics]
    if missing:
        return f"missing metrics {missing}"
    unexpected = sorted(set(metrics) - set(required))
    if unexpected:
        return f"unexpected metrics {unexpected}"
    for key in required:
        value = metrics[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"metric {key!r} is not a finite number ({value!r})"
    for key in counts:
        if metrics[key] < 0 or (key == "num-examples" and metrics[key] <= 0):
            return f"metric {key!r} must be positive ({metrics[key]!r})"
    if reference is not None:
        return _array_problem(content.array_records, reference)
    return None


def _array_problem(records: Mapping[str, ArrayRecord], reference: ArrayRecord) -> str | None:
    if list(records) != [ARRAYS_KEY]:
        return f"expected one ArrayRecord named {ARRAYS_KEY!r}, got {list(records)}"
    arrays = records[ARRAYS_KEY]
    if set(arrays.keys()) != set(reference.keys()):
        return "array keys differ from the global model's"
    for key, expected in reference.items():
        got = arrays[key]
        if tuple(got.shape) != tuple(expected.shape) or got.dtype != expected.dtype:
            return f"array {key!r} has shape {tuple(got.shape)} {got.dtype}, expected {tuple(expected.shape)} {expected.dtype}"
        if not np.all(np.isfinite(got.numpy())):
            return f"array {key!r} holds NaN or inf"
    return None
