"""Flower's floor in deployment: each round the ServerApp sends one message to every
node and the ClientApp answers at once, so a round costs polling, one ClientApp process
start (Python + flwr) and the transfers, nothing of ours. Round wall times go to the
JSON file named by the run config's ``out``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


@client.query()
def answer(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"reply": MetricRecord({"ok": 1})}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    nodes_wanted = int(context.run_config["nodes"])
    deadline = time.monotonic() + 120
    while len(nodes := list(grid.get_node_ids())) < nodes_wanted and time.monotonic() < deadline:
        time.sleep(1)
    seconds = []
    for _ in range(int(context.run_config["rounds"])):
        started = time.perf_counter()
        messages = [Message(RecordDict(), dst_node_id=node, message_type="query") for node in nodes]
        replies = list(grid.send_and_receive(messages, timeout=300))
        if len(replies) != len(nodes) or any(reply.has_error() for reply in replies):
            raise RuntimeError(f"{len(replies)} replies for {len(nodes)} nodes, errors: "
                               f"{[reply.error for reply in replies if reply.has_error()]}")
        seconds.append(time.perf_counter() - started)
    Path(str(context.run_config["out"])).write_text(json.dumps({"round_seconds": seconds}))
