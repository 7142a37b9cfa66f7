"""Reply screening: every malformed reply is dropped with a reason, good ones pass."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from strategy.replies import screen_replies

REFERENCE = ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32))})
GOOD_METRICS = {"num-examples": 10, "accuracy": 0.5}


def _reply(content: RecordDict | None = None, error: Error | None = None):
    """A reply from node 7, as the grid would hand it to the strategy."""
    metadata = Metadata(run_id=1, message_id="m", src_node_id=7, dst_node_id=1, reply_to_message_id="r",
                        group_id="1", created_at=time.time(), ttl=60.0, message_type="train")
    return make_message(metadata, content=content, error=error)


def _content(arrays=None, metrics=None, array_key="arrays", metric_key="metrics") -> RecordDict:
    w = np.ones((2, 3), dtype=np.float32) if arrays is None else arrays
    return RecordDict({array_key: ArrayRecord({"w": Array(w)}),
                       metric_key: MetricRecord(GOOD_METRICS if metrics is None else metrics)})


BAD = [
    (_content(metrics={"num-examples": 10}), "missing metrics"),
    (_content(metrics={**GOOD_METRICS, "extra": 1.0}), "unexpected metrics"),
    (_content(metrics={"num-examples": 10, "accuracy": float("nan")}), "not a finite number"),
    (_content(metrics={"num-examples": -1, "accuracy": 0.5}), "must be positive"),
    (_content(arrays=np.ones((3, 2), dtype=np.float32)), "has shape"),
    (_content(arrays=np.ones((2, 3), dtype=np.float64)), "has shape"),
    (_content(arrays=np.full((2, 3), np.inf, dtype=np.float32)), "NaN or inf"),
    (_content(array_key="weights"), "ArrayRecord named"),
    (_content(metric_key="m"), "MetricRecord named"),
]


@pytest.mark.parametrize(("content", "reason"), BAD)
def test_malformed_replies_are_dropped_with_a_reason(content, reason):
    screened = screen_replies([_reply(content)], ("num-examples", "accuracy"), REFERENCE)
    assert screened.valid == []
    assert reason in screened.dropped[7]


def test_error_replies_are_dropped_and_good_ones_kept():
    failed = _reply(error=Error(code=0, reason="boom"))
    good = _reply(_content())
    assert "boom" in screen_replies([failed], ("num-examples", "accuracy"), REFERENCE).dropped[7]
    assert screen_replies([good], ("num-examples", "accuracy"), REFERENCE).valid == [good]
