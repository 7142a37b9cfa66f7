"""The ledger's records: JSON in, the same JSON out, typed in between."""

from __future__ import annotations

import json

import pytest

from strategy.ledger import Ledger
from strategy.records import CalibrationRecord, MeasuredRecord, RoundRecord, read_ledger


def _order(server_round: int = 1) -> RoundRecord:
    return RoundRecord(round=server_round, policy="cocogen", orgs=[0, 2], node_ids=[7, 9], profiles=[], solution={},
                       quotas=[3, 0], quota_total=3, target=[0.5, 0.5], dropped={2: "no reply before the timeout"},
                       nash_gap=None, rho=None, mix=None, predicted_welfare=1.5)


def _measured() -> MeasuredRecord:
    one = [0.1]
    calibration = CalibrationRecord(curve={"a": 1.0}, prior={}, scales_used={"shared": 1.0}, eta_used=0.5,
                                    validation_accuracy=one, twin_validation_accuracy=one, twin_market_accuracy=one,
                                    predicted_quality=one, realised_quality=one, predicted_transfers=one,
                                    predicted_cost=one, realised_cost=one, predicted_ir=[True], realised_ir=[False],
                                    welfare_gap=0.2, predicted_welfare_sd={"scales": 1.0, "draw": 0.0, "total": 1.0})
    return MeasuredRecord(responders=[0], received_quotas=[3], images=[3.0], images_generated=3.0,
                          generation_seconds=one, organisation_seconds=one, market_accuracy=one,
                          mean_market_accuracy=0.1, accuracy_disagreements={0: {"reported": [0.2, 0.1]}},
                          predicted_utilities=one, realised_utilities=one, utility_gap=[0.0], transfers=[0.0],
                          transfer_sum=0.0, realised_welfare=0.1, responder_predicted_welfare=0.1,
                          realised_ir_count=1, calibration=calibration)


def test_a_record_is_its_json_with_ids_as_string_keys_lambda_spelled_and_unknowns_left_out():
    record = _order()
    plain = record.to_json()
    assert list(plain)[-3:] == ["rho", "lambda", "predicted_welfare"] and "responders" not in plain
    assert plain["dropped"] == {"2": "no reply before the timeout"} and "round_seconds" not in plain
    record.measured, record.round_seconds = _measured(), 4.0
    full = json.loads(json.dumps(record.to_json()))
    assert list(full).index("responders") == list(full).index("predicted_welfare") + 1
    assert list(full)[-1] == "round_seconds" and full["calibration"]["welfare_z"] is None
    assert full["accuracy_disagreements"] == {"0": {"reported": [0.2, 0.1]}}
    again = RoundRecord.from_json(full)
    assert again == record and again.dropped == {2: "no reply before the timeout"}
    assert again.to_json() == full and list(again.to_json()) == list(full)


def test_the_ledger_writes_and_reads_records_and_annotates_only_known_facts(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(_order(1))
    ledger.annotate(1, global_test_accuracy=0.5, global_digest="ab")
    with pytest.raises(TypeError, match="global_accuracy"):
        ledger.annotate(1, global_accuracy=0.5)
    [row] = read_ledger(tmp_path / "ledger.json")
    assert row.global_test_accuracy == 0.5 and row.measured is None and row == ledger.rows[0]
    assert Ledger(tmp_path, keep_through=1).rows == [row] and Ledger(tmp_path, keep_through=0).rows == []
