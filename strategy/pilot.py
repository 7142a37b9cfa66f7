"""The calibration pilot: learning-curve points from every silo, then the curve's fit.

Before round 1 each silo trains the initial model on nested subsets of its real data
and on all of it plus synthetic images, and reports each model's market error with
its training set's label counts (docs/model.md section 9). Points are fitted in
partition-id order, whatever order the replies arrive in, so the same run gives the
same fit to the last bit. The server turns the counts
into sizes ``M`` and skew masses ``H`` (relative to the round's target mix, with the
game's own skew formula) and fits ``e(M, H)`` by bounded least squares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.common import log
from flwr.serverapp import Grid

from strategy import protocol
from strategy.game.learning_curve import CurveFit, fit_learning_curve
from strategy.game.scenario import LossCurve, label_skew
from strategy.protocol import PilotOrder, PilotReport, Profile, ProtocolError, SiloSettings
from strategy.replies import screen_replies


@dataclass(frozen=True)
class Pilot:
    """The pilot's points (one per trained model), who made them, and the fit."""

    owners: list[int]
    sizes: np.ndarray
    skew_masses: np.ndarray
    errors: np.ndarray
    fit: CurveFit
    dropped: dict[int, str]

    def to_json(self) -> dict[str, Any]:
        return {"points": [{"partition_id": o, "size": float(m), "skew_mass": float(h), "error": float(e)}
                           for o, m, h, e in zip(self.owners, self.sizes, self.skew_masses, self.errors)],
                "fit": self.fit.to_json(), "dropped": self.dropped}


def run_pilot(grid: Grid, profiles: Mapping[int, Profile], settings: SiloSettings, order: PilotOrder,
              arrays: ArrayRecord, prior: LossCurve, timeout: float) -> Pilot:
    """Ask every node in ``profiles`` for its points and fit the curve (``prior`` if it cannot)."""
    content = protocol.order_content(settings, order, arrays)
    messages = [Message(content, dst_node_id=node, message_type=protocol.PILOT) for node in profiles]
    screened = screen_replies(grid.send_and_receive(messages, timeout=timeout),
                              lambda reply: protocol.read_report(PilotReport, reply.content))
    asked = {node: profile.partition_id for node, profile in profiles.items()}
    reports = {asked[node]: report for node, report in screened.reports.items() if node in asked}
    dropped = {asked[node]: reason for node, reason in screened.dropped.items() if node in asked}
    return fit_pilot(reports, order, prior, dropped)


def fit_pilot(reports: Mapping[int, PilotReport], order: PilotOrder, prior: LossCurve,
              dropped: Mapping[int, str] | None = None) -> Pilot:
    """The curve fitted to the silos' points (``reports`` by partition id, fitted in that
    order), or ``prior`` if it cannot be; a report whose points do not parse is dropped."""
    dropped = dict(dropped or {})
    owners, counts, errors = [], [], []
    width = len(order.target)
    for partition_id, report in sorted(reports.items()):
        try:
            rows = report.points(width)
        except ProtocolError as err:
            dropped[partition_id] = str(err)
            continue
        owners += [partition_id] * len(rows)
        counts += rows
        errors += list(report.errors)
    for partition_id, reason in dropped.items():
        log(WARNING, "Pilot: dropped organisation %d: %s", partition_id, reason)
    matrix = np.array(counts, dtype=float).reshape(-1, width)
    sizes = matrix.sum(axis=1)
    usable = sizes > 0
    skew_masses = np.zeros_like(sizes)
    if usable.any():
        skew_masses[usable] = sizes[usable] * label_skew(matrix[usable], np.array(order.target))[1]
    fit = fit_learning_curve(sizes[usable], skew_masses[usable], np.array(errors)[usable], prior)
    log(INFO, "Pilot: %d points from %d silos; curve %s (floor %.3g, R^2 %s)%s", int(usable.sum()),
        len(set(owners)), fit.curve, fit.floor, fit.r2, "" if fit.fitted else f"; prior kept: {fit.reason}")
    return Pilot([o for o, u in zip(owners, usable) if u], sizes[usable], skew_masses[usable],
                 np.array(errors)[usable], fit, dropped)
