"""The consortium's terms: read and checked (every field named on error), settled on a
reported profile, and in deployment a signed terms file that an older or altered copy
cannot replace."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from server_app.config import load_settings
from server_app.settings import SettingsError
from server_app.terms import ACCEPTED_FILE, consortium_terms, keygen, sign, verified_terms
from strategy.protocol import Profile
from strategy.terms import OrganisationTerms, Terms, TermsError, terms_from_dict

ROOT = Path(__file__).resolve().parents[1]
ORG = {"value": 1200.0, "capacity": 600.0, "price_per_second": 5.0, "seconds_per_image": 0.1}


def _profile(**changes) -> Profile:
    fields = dict(partition_id=0, n=100, label_counts=(50, 50), seconds_per_image=0.1, price_per_second=5.0,
                  value=1200.0, capacity=600.0)
    return Profile(**{**fields, **changes})


def test_settling_takes_every_term_from_the_terms_and_flags_what_was_reported_otherwise():
    terms = Terms((OrganisationTerms(**ORG, data_size=120),))
    settled = terms.settle(_profile(value=9000.0, capacity=1e4, seconds_per_image=0.15, n=100))
    assert (settled.profile.value, settled.profile.capacity, settled.profile.n) == (1200.0, 600.0, 120)
    assert settled.profile.seconds_per_image == 0.1  # the terms' timing, though 0.15 is within the tolerance
    assert settled.flags == ("reported n 100, the terms declare 120", "reported value 9000, the terms say 1200",
                             "reported capacity 10000, the terms say 600")
    timing = terms.settle(_profile(seconds_per_image=0.3, n=120))
    assert timing.flags == ("reported seconds_per_image 0.3, the terms say 0.1",)
    assert terms.problem(_profile(n=121)) == "n 121 is above the terms' declared data size 120"
    assert terms.problem(_profile(partition_id=1)) == "partition id 1 is outside the terms' 0..0"


@pytest.mark.parametrize(("spec", "error"), [
    ([], "terms: must be a JSON object"),
    ({"sequence": -1, "organisations": [ORG]}, "sequence: must be an integer >= 0"),
    ({"sequence": True, "organisations": [ORG]}, "sequence: must be an integer >= 0"),
    ({"sequence": 1, "organisations": []}, "organisations: must be a non-empty list"),
    ({"sequence": 1, "organisations": [{**ORG, "value": 0}]}, "organisations[0].value: must be a number > 0"),
    ({"sequence": 1, "organisations": [ORG, {**ORG, "capacity": float("nan")}]}, "organisations[1].capacity"),
    ({"sequence": 1, "organisations": [{**ORG, "data_size": 0}]}, "organisations[0].data_size: must be an integer"),
    ({"sequence": 1, "organisations": [{**ORG, "bonus": 1}]}, "organisations[0].bonus: unknown key"),
    ({"sequence": 1, "organisations": [{**ORG, "node_key": "ssh-ed25519 AAAA"}]}, "organisations[0].node_key: not an"),
    ({"sequence": 1, "organisations": [{**ORG, "node_key": "SHA256:x"}] * 2}, "two organisations have the same"),
    ({"sequence": 1, "organisations": [ORG], "extra": 1}, "extra: unknown key"),
    ({"sequence": 1, "organisations": [ORG], "gamma": -0.5}, "gamma: must be a number >= 0"),
])
def test_invalid_terms_are_refused_naming_the_field(spec, error):
    with pytest.raises(TermsError, match=error.replace("[", r"\[").replace("]", r"\]")):
        terms_from_dict(spec)


def _signed(directory: Path, sequence: int, value: float = 1200.0) -> Path:
    path = directory / f"terms-{sequence}-{value}.json"
    path.write_text(json.dumps({"sequence": sequence, "gamma": 0.8, "organisations": [{**ORG, "value": value}] * 3}))
    sign(path, directory / "terms-signing.key")
    return path


def test_a_signed_terms_file_is_accepted_and_an_older_altered_or_foreign_one_refused(tmp_path):
    public = keygen(tmp_path).read_text()
    state = tmp_path / "state"
    settings = load_settings(["+experiment=tiny"]).terms

    def run_with(path: Path) -> Terms:
        (tmp_path / "operator.pub").write_text(public)
        return consortium_terms(replace(settings, file=path, public_key=tmp_path / "operator.pub"), (0.1,) * 3, 3,
                                state)

    second = _signed(tmp_path, 2)
    accepted = run_with(second)
    assert (accepted.of(2).value, accepted.gamma) == (1200.0, 0.8)
    assert json.loads((state / ACCEPTED_FILE).read_text())["sequence"] == 2
    assert run_with(second).sequence == 2  # the same file again
    with pytest.raises(TermsError, match="terms sequence 1 is older than the last accepted, 2"):
        run_with(_signed(tmp_path, 1))
    with pytest.raises(TermsError, match="terms sequence 2 was accepted before with other contents"):
        run_with(_signed(tmp_path, 2, value=9000.0))
    third = _signed(tmp_path, 3)
    third.write_text(third.read_text().replace("1200.0", "1300.0"))  # altered after signing
    with pytest.raises(TermsError, match="the signature does not verify"):
        run_with(third)
    other = tmp_path / "other"
    keygen(other)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"sequence": 9, "organisations": [ORG] * 3}))
    sign(foreign, other / "terms-signing.key")
    with pytest.raises(TermsError, match="the signature does not verify"):
        run_with(foreign)
    (tmp_path / "unsigned.json").write_text(foreign.read_text())
    with pytest.raises(TermsError, match=r"no signature \(unsigned.json.sig\)"):
        run_with(tmp_path / "unsigned.json")
    with pytest.raises(TermsError, match="terms for 3 organisations, the run has 5"):
        consortium_terms(replace(settings, file=second, public_key=tmp_path / "operator.pub"), (0.1,) * 5, 5, state)
    assert json.loads((state / ACCEPTED_FILE).read_text())["sequence"] == 2  # nothing refused was recorded


def test_the_terms_cli_signs_and_verifies_and_refuses_with_one_line(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "server_app.terms", *args], capture_output=True, text=True,
                              cwd=ROOT)

    assert cli("keygen", str(tmp_path)).returncode == 0
    path = tmp_path / "terms.json"
    path.write_text(json.dumps({"sequence": 1, "organisations": [ORG]}))
    assert cli("sign", str(path), str(tmp_path / "terms-signing.key")).returncode == 0
    shown = cli("verify", str(path), str(tmp_path / "terms-signing.key.pub"))
    assert shown.returncode == 0 and json.loads(shown.stdout)["organisations"][0]["value"] == 1200.0
    assert verified_terms(path, (tmp_path / "terms-signing.key.pub").read_text()).sequence == 1
    path.write_text(json.dumps({"sequence": 1, "organisations": [{**ORG, "value": -1}]}))
    refused = cli("sign", str(path), str(tmp_path / "terms-signing.key"))
    assert refused.returncode == 2 and refused.stderr.startswith("error: organisations[0].value: must be a number > 0")


def test_the_config_names_the_terms_once_and_a_terms_file_needs_its_key():
    run = load_settings(["+experiment=tiny", "economics.value=[1000.0,2000.0]", "economics.data_size=[300]"])
    assert run.terms.value == (1000.0, 2000.0) and run.terms.data_size == (300,)
    assert run.silo.value == run.terms.value  # silos are told the same lists
    with pytest.raises(SettingsError, match="economics.terms_key must name"):
        load_settings(["+experiment=tiny", "economics.terms_file=/tmp/terms.json"])
    with pytest.raises(SettingsError, match="economics.data_size must be null"):
        load_settings(["+experiment=tiny", "economics.data_size=[0]"])
