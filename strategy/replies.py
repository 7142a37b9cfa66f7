"""Screening of client replies before they reach aggregation.

Flower's aggregation raises on inconsistent replies (and a ServerApp crash ends the
run), so every reply is read first: with its :mod:`strategy.protocol` reader, and by
the strategy's cross-checks. A bad reply is dropped with a reason; whatever goes wrong
while reading one silo's reply (an exception of any kind) drops that silo, never the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flwr.app import Message

from strategy.protocol import ProtocolError

Report = TypeVar("Report")


@dataclass(frozen=True)
class Screened(Generic[Report]):
    """Replies that passed with their reports (by node), and a reason for every node that did not."""

    valid: list[Message]
    reports: dict[int, Report]
    dropped: dict[int, str]


def screen_replies(replies: Iterable[Message], reader: Callable[[Message], Report]) -> Screened[Report]:
    """Keep the replies that ``reader`` accepts; drop error replies, those it rejects
    (:class:`ProtocolError`), and those it fails on (any other exception)."""
    valid, reports, dropped = [], {}, {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if node in reports or node in dropped:
            dropped[node] = "sent more than one reply"
            reports.pop(node, None)
            valid = [r for r in valid if r.metadata.src_node_id != node]
            continue
        if reply.has_error():
            dropped[node] = f"client error: {reply.error.reason}"
            continue
        try:
            reports[node] = reader(reply)
        except ProtocolError as err:
            dropped[node] = str(err)
            continue
        except Exception as err:  # noqa: BLE001 - one silo's reply must not end the run
            dropped[node] = f"unusable reply ({type(err).__name__}: {err})"
            continue
        valid.append(reply)
    return Screened(valid, reports, dropped)
