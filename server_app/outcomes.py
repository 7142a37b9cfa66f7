"""What one finished run measured, as tidy rows for experiment grids (docs/results.md).

``job_outcome`` condenses a results directory (``ledger.json``, ``summary.json``) into
one row; ``utility_rows`` lists every organisation's predicted and realised utility per
round (the calibration figure's points). Both read only what the run wrote.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from strategy.game.calibration import GainScales, calibrated_curve
from strategy.game.learning_curve import CurveFit
from strategy.game.scenario import LossCurve
from strategy.records import MeasuredRecord, RoundRecord, read_ledger

OUTCOME_COLUMNS = (
    "final_accuracy", "twin_final_accuracy", "gain_over_twin", "mean_realised_quality", "images_generated",
    "realised_welfare", "profiled_welfare", "predicted_welfare", "welfare_gap", "ir_fraction", "min_org_utility",
    "mean_rho", "rounds_completed", "wall_seconds", "warmup_seconds", "pilot_seconds", "cost", "value", "capacity",
    "first_a", "first_b", "first_kappa", "first_eta", "curve_a", "curve_b", "curve_kappa", "eta",
)
"""The measured columns of a grid row, in order (docs/results.md defines each)."""

UTILITY_COLUMNS = ("round", "organisation", "predicted_utility", "realised_utility")


def realised_rows(results_dir: Path) -> list[RoundRecord]:
    """The run's ledger records that realised (a round whose every reply was dropped has no
    measured side and is left out)."""
    rows = [row for row in read_ledger(results_dir / "ledger.json") if row.measured is not None]
    if not rows:
        raise ValueError(f"{results_dir}: no round has a realised side")
    return rows


def job_outcome(results_dir: Path, rows: list[RoundRecord]) -> dict[str, Any]:
    """One run's measured outcomes (:data:`OUTCOME_COLUMNS`) from its summary and its
    :func:`realised_rows`.

    - ``gain_over_twin``: final global test accuracy minus the no-generation twin's;
    - ``mean_realised_quality``: mean over rounds and organisations of the realised gain
      ``Q_i``, deployed main over deployed fork on the validation set (model.md section 8);
    - ``realised_welfare``: sum over rounds of measured utilities, generation priced at the
      seconds it took; ``profiled_welfare``: the same with generation priced at the game's
      cost ``c_i`` per image (timing noise from neighbouring jobs removed);
    - ``predicted_welfare``: the game's prediction for the organisations that answered;
      ``welfare_gap``: ``(predicted - realised) / |realised|`` (None when realised is 0);
    - ``ir_fraction``: realised ``u_i >= 0`` over all (round, answering organisation) pairs;
    - ``min_org_utility``: the worst organisation's realised utility summed over the rounds it answered;
    - ``cost``, ``value``, ``capacity``: the organisations' median game inputs (last round);
    - ``first_*``: the curve and ``eta`` the first round was solved with (the pilot's fit);
      ``curve_*``, ``eta``: the calibrated curve after the last round (model.md section 9).
    """
    summary = json.loads((results_dir / "summary.json").read_text())
    last = rows[-1]
    measured = [_measured(row) for row in rows]
    predicted = sum(m.responder_predicted_welfare for m in measured)
    realised = sum(m.realised_welfare for m in measured)
    qualities = [q for m in measured for q in m.calibration.realised_quality]
    per_org: dict[int, float] = {}
    for m in measured:
        for org, utility in zip(m.responders, m.realised_utilities):
            per_org[org] = per_org.get(org, 0.0) + utility
    rhos = [row.rho for row in rows if row.rho is not None]
    first, first_eta = _curve(measured[0], measured[0].calibration.scales_used)
    curve, eta = _curve(measured[-1], measured[-1].calibration.scales_next)
    profiles = last.profiles
    return {
        "final_accuracy": summary["final_accuracy"],
        "twin_final_accuracy": last.twin_global_test_accuracy,
        "gain_over_twin": summary["final_accuracy"] - last.twin_global_test_accuracy,
        "mean_realised_quality": sum(qualities) / len(qualities),
        "images_generated": sum(m.images_generated for m in measured),
        "realised_welfare": realised,
        "profiled_welfare": realised + sum(_timing_excess(row) for row in rows),
        "predicted_welfare": predicted,
        "welfare_gap": (predicted - realised) / abs(realised) if realised else None,
        "ir_fraction": sum(m.realised_ir_count for m in measured) / sum(len(m.responders) for m in measured),
        "min_org_utility": min(per_org.values()),
        "mean_rho": sum(rhos) / len(rhos) if rhos else None,
        "rounds_completed": summary["rounds_completed"],
        "wall_seconds": summary["wall_seconds"],
        "warmup_seconds": summary["generator_warmup_seconds"],
        "pilot_seconds": summary.get("pilot_seconds"),  # None for runs from before it was recorded
        **{key: statistics.median(org[key] for org in profiles) for key in ("cost", "value", "capacity")},
        "first_a": first.a, "first_b": first.b, "first_kappa": first.kappa, "first_eta": first_eta,
        "curve_a": curve.a, "curve_b": curve.b, "curve_kappa": curve.kappa, "eta": eta,
    }


def _measured(row: RoundRecord) -> MeasuredRecord:
    """The measured side of one of :func:`realised_rows`."""
    if row.measured is None:
        raise ValueError(f"round {row.round} has no measured side")
    return row.measured


def _curve(measured: MeasuredRecord, scales: dict[str, Any]) -> tuple[LossCurve, float]:
    """A round's curve and ``eta``: the pilot's fit scaled by ``scales`` (its ``scales_used`` or ``scales_next``)."""
    return calibrated_curve(CurveFit.from_json(measured.calibration.curve), GainScales(**scales))


def _timing_excess(row: RoundRecord) -> float:
    """Money the round's generation cost beyond the game's price ``c_i`` per image: timed spend minus
    ``c_i x images_i`` over the answering organisations."""
    measured = _measured(row)
    cost = {org["partition_id"]: org["cost"] for org in row.profiles}
    profiled = sum(cost[org] * images for org, images in zip(measured.responders, measured.images))
    return sum(measured.calibration.realised_cost) - profiled


def utility_rows(rows: list[RoundRecord]) -> list[dict[str, Any]]:
    """Every (round, organisation) of :func:`realised_rows`: predicted and realised utility
    (:data:`UTILITY_COLUMNS`)."""
    return [
        {"round": row.round, "organisation": org, "predicted_utility": predicted, "realised_utility": realised}
        for row in rows
        for org, predicted, realised in zip(_measured(row).responders, _measured(row).predicted_utilities,
                                            _measured(row).realised_utilities)
    ]
