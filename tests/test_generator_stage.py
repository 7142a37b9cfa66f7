"""The server's generator warm-up stage (server_app/generator_stage.py) on a fake grid:
what it ships is packed, and the averaged generator does not depend on reply order."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message

from server_app.config import compose_config, silo_settings
from server_app.generator_stage import prepare_generator
from strategy import protocol
from strategy.protocol import WarmupOrder, WarmupReport

SETTINGS = silo_settings(compose_config(["+experiment=tiny"]))

pytestmark = pytest.mark.usefixtures("task_identity")


class WarmupGrid:
    """Silos that each return the shipped generator plus their own noise, weighted by
    their own example counts; ``reverse``: the replies come back in reverse order."""

    def __init__(self, reverse: bool) -> None:
        self.reverse = reverse
        self.shipped: list[ArrayRecord] = []

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            _, order = protocol.read_order(WarmupOrder, message.content)
            shipped = message.content.array_records[protocol.ARRAYS]
            self.shipped.append(shipped)
            node = message.metadata.dst_node_id
            noise = np.random.default_rng([node, order.server_round])
            trained = {key: Array(array.numpy() + noise.normal(0, 0.01, array.shape).astype(array.numpy().dtype))
                       for key, array in shipped.items()}
            report = WarmupReport(num_examples=100 + 37 * node, loss=0.5)
            replies.append(Message(protocol.report_content(report, ArrayRecord(trained)), reply_to=message))
        return replies[::-1] if self.reverse else replies


def test_the_warmed_up_generator_is_packed_and_does_not_depend_on_reply_order(tmp_path):
    digests = []
    for reverse in (False, True):
        grid = WarmupGrid(reverse)
        generator = prepare_generator(grid, [3, 1, 2], SETTINGS, tmp_path / f"reverse-{reverse}", timeout=1.0)
        assert [set(shipped) for shipped in grid.shipped] == [{"packed.float32"}] * len(grid.shipped)
        digests.append(protocol.array_digest(generator))
    assert digests[0] == digests[1]
