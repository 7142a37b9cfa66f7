"""Screening of client replies before they reach aggregation.

Flower's aggregation raises on inconsistent replies (and a ServerApp crash ends the
run), so every reply is read with its :mod:`strategy.protocol` reader first. A bad
reply is dropped with a reason; nothing a client sends can stop the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flwr.app import Message, RecordDict

from strategy.protocol import ProtocolError

Report = TypeVar("Report")


@dataclass(frozen=True)
class Screened(Generic[Report]):
    """Replies that passed with their reports (by node), and a reason for every node that did not."""

    valid: list[Message]
    reports: dict[int, Report]
    dropped: dict[int, str]


def screen_replies(replies: Iterable[Message], reader: Callable[[RecordDict], Report]) -> Screened[Report]:
    """Keep the replies that ``reader`` accepts; drop error replies and those it rejects."""
    valid, reports, dropped = [], {}, {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            dropped[node] = f"client error: {reply.error.reason}"
            continue
        try:
            reports[node] = reader(reply.content)
        except ProtocolError as err:
            dropped[node] = str(err)
            continue
        valid.append(reply)
    return Screened(valid, reports, dropped)
