"""Signed app bundles (deploy.signing): what a silo accepts and what it refuses.

The end-to-end refusal by a running SuperNode is in tests/test_deployment.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from deploy.signing import (
    DAY,
    MAX_VALIDITY_DAYS,
    PRIVATE_KEY_FILE,
    REVOCATIONS_KEY,
    SIGNATURE_KEY,
    TRUSTED_ENTITIES_FILE,
    Revocations,
    UntrustedBundle,
    bundle_run_config,
    claim_signature,
    current_revocations,
    generate_signing_key,
    load_trusted_entities,
    main,
    sign_revocations,
    sign_run,
    verify_run,
)
from deploy.verified_clientapp import (
    FEDERATION_ENV,
    REVOCATIONS_ENV,
    SIGNED_RUNS_ENV,
    TRUSTED_ENTITIES_ENV,
    verify_pulled,
)

ROOT = Path(__file__).resolve().parent.parent
FAB = b"PK\x03\x04 a stand-in for a bundle's bytes"
CONFIG = {"overrides": "+experiment=tiny", "seed": "", SIGNATURE_KEY: "", REVOCATIONS_KEY: ""}
FEDERATION = "hospitals"
NOW = 1_800_000_000


@pytest.fixture
def operator(tmp_path):
    identity = generate_signing_key(tmp_path / "operator")
    return identity, tmp_path / "operator" / PRIVATE_KEY_FILE, load_trusted_entities(
        tmp_path / "operator" / TRUSTED_ENTITIES_FILE)


def signed(key: Path, config: dict = CONFIG, federation: str = FEDERATION, **how) -> dict:
    """The run config with its signature, as the operator submits it."""
    return config | {SIGNATURE_KEY: sign_run(FAB, config, federation, key, signed_at=how.pop("signed_at", NOW),
                                             **how)}


def test_a_run_signed_by_a_trusted_key_verifies(operator):
    identity, key, trusted = operator
    assert verify_run(FAB, signed(key), FEDERATION, trusted, now=NOW + 60) == identity


@pytest.mark.parametrize("change", [
    lambda fab: fab + b"\n# one more line",
    lambda fab: fab[:-1] + bytes([fab[-1] ^ 1]),
    lambda fab: b"",
])
def test_a_tampered_bundle_is_refused(operator, change):
    _, key, trusted = operator
    with pytest.raises(UntrustedBundle, match="does not match this app bundle"):
        verify_run(change(FAB), signed(key), FEDERATION, trusted, now=NOW)


def test_the_signature_binds_the_run_config_and_the_federation(operator):
    _, key, trusted = operator
    run = signed(key)
    with pytest.raises(UntrustedBundle, match="another run config"):
        verify_run(FAB, run | {"overrides": "+experiment=tiny federation.max_update_norm=null unsafe=true"},
                   FEDERATION, trusted, now=NOW)
    with pytest.raises(UntrustedBundle, match="signed for federation 'hospitals'; this silo is in 'banks'"):
        verify_run(FAB, run, "banks", trusted, now=NOW)
    # the revocation list travels in the run config without being signed with it
    assert verify_run(FAB, run | {REVOCATIONS_KEY: ""}, FEDERATION, trusted, now=NOW)


@pytest.mark.parametrize("field, value", [(2, str(NOW + 1)), (3, str(NOW + 10 * DAY)), (4, "banks"),
                                          (5, "0" * 16)])
def test_a_changed_date_federation_or_digest_breaks_the_signature(operator, field, value):
    _, key, trusted = operator
    run = signed(key)
    parts = run[SIGNATURE_KEY].split(".")
    parts[field] = value
    with pytest.raises(UntrustedBundle, match="does not match|signed for|another run config"):
        verify_run(FAB, run | {SIGNATURE_KEY: ".".join(parts)}, "banks" if field == 4 else FEDERATION, trusted,
                   now=NOW)


def test_expired_future_and_overlong_signatures_are_refused(operator):
    _, key, trusted = operator
    with pytest.raises(UntrustedBundle, match="expired at 2027-01-"):
        verify_run(FAB, signed(key, valid_days=7), FEDERATION, trusted, now=NOW + 7 * DAY + 1)
    assert verify_run(FAB, signed(key, valid_days=7), FEDERATION, trusted, now=NOW + 7 * DAY)
    with pytest.raises(UntrustedBundle, match="in the future"):  # dated 2200
        verify_run(FAB, signed(key, signed_at=7_258_118_400), FEDERATION, trusted, now=NOW)
    with pytest.raises(UntrustedBundle, match="expired"):  # dated 1970
        verify_run(FAB, signed(key, signed_at=0), FEDERATION, trusted, now=NOW)
    with pytest.raises(ValueError, match="valid days"):
        signed(key, valid_days=MAX_VALIDITY_DAYS + 1)


@pytest.mark.parametrize("date", ["1" + "0" * 30, "99999999999999999999", "-5", "1e9", ""])
def test_a_date_that_overflows_or_is_not_a_number_is_refused_with_a_reason(operator, date):
    _, key, trusted = operator
    run = signed(key)
    parts = run[SIGNATURE_KEY].split(".")
    parts[2] = date
    with pytest.raises(UntrustedBundle, match="is not a date this silo accepts|is not 'v2"):
        verify_run(FAB, run | {SIGNATURE_KEY: ".".join(parts)}, FEDERATION, trusted, now=NOW)


def test_a_key_the_silo_does_not_trust_is_refused(operator, tmp_path):
    _, _, trusted = operator
    generate_signing_key(tmp_path / "stranger")
    with pytest.raises(UntrustedBundle, match="does not trust"):
        verify_run(FAB, signed(tmp_path / "stranger" / PRIVATE_KEY_FILE), FEDERATION, trusted, now=NOW)


def test_a_trusted_key_id_with_a_strangers_signature_is_refused(operator, tmp_path):
    identity, _, trusted = operator
    generate_signing_key(tmp_path / "stranger")
    parts = signed(tmp_path / "stranger" / PRIVATE_KEY_FILE)[SIGNATURE_KEY].split(".")
    parts[1] = identity
    with pytest.raises(UntrustedBundle, match="does not match"):
        verify_run(FAB, CONFIG | {SIGNATURE_KEY: ".".join(parts)}, FEDERATION, trusted, now=NOW)


@pytest.mark.parametrize("signature, reason", [
    ("", "unsigned"),
    ("just-one-part", "is not 'v2"),
    ("a.1.c", "is not 'v2"),
    ("v1.a.1.2.f.d.s", "is not 'v2"),
    ("v2.a.1.2.f.d.s!", "is not base64url|does not trust"),
])
def test_malformed_signatures_are_refused(operator, signature, reason):
    _, _, trusted = operator
    with pytest.raises(UntrustedBundle, match=reason):
        verify_run(FAB, CONFIG | {SIGNATURE_KEY: signature}, FEDERATION, trusted, now=NOW)


def test_revoked_keys_and_bundles_are_refused_and_an_older_list_cannot_roll_back(operator, tmp_path):
    identity, key, trusted = operator
    stored = tmp_path / "silo" / "revocations.json"
    stored.parent.mkdir()

    def carried(revocations: Revocations) -> str:
        return base64.urlsafe_b64encode(sign_revocations(revocations, key).encode()).decode().rstrip("=")

    first = Revocations(1, NOW, bundles=frozenset({hashlib.sha256(FAB).hexdigest()}))
    revoked = current_revocations(stored, carried(first), trusted)
    assert revoked == first and stored.is_file()  # kept by the silo
    with pytest.raises(UntrustedBundle, match="is revoked"):
        verify_run(FAB, signed(key), FEDERATION, trusted, revoked, now=NOW)
    assert current_revocations(stored, "", trusted) == first  # a run without a list: the silo's own
    second = Revocations(2, NOW, keys=frozenset({"0123456789abcdef"}))
    assert current_revocations(stored, carried(second), trusted) == second
    with pytest.raises(UntrustedBundle, match="older than this silo's 2"):
        current_revocations(stored, carried(first), trusted)
    assert verify_run(FAB, signed(key), FEDERATION, trusted, second, now=NOW) == identity
    own = Revocations(3, NOW, keys=frozenset({identity}))
    with pytest.raises(UntrustedBundle, match="does not trust"):  # a list revoking its own signer
        current_revocations(stored, carried(own), trusted)


def test_a_revoked_key_cannot_sign_its_way_back(tmp_path):
    keys = {name: generate_signing_key(tmp_path / name) for name in ("old", "new")}
    trusted = {**load_trusted_entities(tmp_path / "old" / TRUSTED_ENTITIES_FILE),
               **load_trusted_entities(tmp_path / "new" / TRUSTED_ENTITIES_FILE)}
    stored = tmp_path / "revocations.json"

    def carried(revocations: Revocations, signer: str) -> str:
        text = sign_revocations(revocations, tmp_path / signer / PRIVATE_KEY_FILE)
        return base64.urlsafe_b64encode(text.encode()).decode()

    current_revocations(stored, carried(Revocations(1, NOW, keys=frozenset({keys["old"]})), "new"), trusted)
    with pytest.raises(UntrustedBundle, match="which this silo's list 1 revokes"):
        current_revocations(stored, carried(Revocations(2, NOW), "old"), trusted)
    with pytest.raises(UntrustedBundle, match="is revoked"):
        verify_run(FAB, signed(tmp_path / "old" / PRIVATE_KEY_FILE), FEDERATION, trusted,
                   current_revocations(stored, "", trusted), now=NOW)


def test_a_forged_or_malformed_revocation_list_is_refused(operator, tmp_path):
    _, key, trusted = operator
    text = sign_revocations(Revocations(4, NOW, keys=frozenset({"aa"})), key)
    forged = json.loads(text)
    forged["revocations"]["keys"] = []
    for body, reason in ((json.dumps(forged), "does not match"), ("{}", "malformed"), ("[1]", "malformed"),
                         ("{not json", "malformed"),
                         (text.replace('"sequence": 4', '"sequence": 1e999'), "malformed")):
        encoded = base64.urlsafe_b64encode(body.encode()).decode()
        with pytest.raises(UntrustedBundle, match=reason):
            current_revocations(None, encoded, trusted)


def test_a_trusted_entities_file_must_hold_ed25519_keys(tmp_path):
    rsa = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    trusted = tmp_path / TRUSTED_ENTITIES_FILE
    trusted.write_text(f"someone: \"{(tmp_path / 'rsa.pub').read_text().strip()}\"\n")
    with pytest.raises(ValueError, match="not Ed25519"):
        load_trusted_entities(trusted)
    trusted.write_text("[]\n")
    with pytest.raises(ValueError, match="non-empty map"):
        load_trusted_entities(trusted)


def test_the_signed_run_is_the_bundle_and_run_config_flwr_run_submits(operator, tmp_path, capsys):
    """`flwr run DIR -c ...` builds the same bytes every time and the silo sees the bundle's
    defaults with the overrides: the CLI's signature made beforehand holds; any edit of a
    shipped file or of the run config breaks it."""
    _, key, trusted = operator
    app = tmp_path / "app"
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*.png",
                                                             ".flwr", ".cache"))
    overrides = ['overrides="+experiment=tiny"', "seed=3"]
    assert main(["sign", str(app), str(key), "--federation", FEDERATION, *sum((["-c", o] for o in overrides), [])]) == 0
    signature = capsys.readouterr().out.strip()
    fab = build_fab_from_disk(app)
    run_config = bundle_run_config(fab, [*overrides, f'{SIGNATURE_KEY}="{signature}"'])
    assert run_config["seed"] == 3 and run_config["overrides"] == "+experiment=tiny"
    assert verify_run(fab, run_config, FEDERATION, trusted)
    with pytest.raises(UntrustedBundle, match="another run config"):
        verify_run(fab, run_config | {"seed": 4}, FEDERATION, trusted)
    with open(app / "client_app" / "app.py", "a") as handle:
        handle.write("# an edit\n")
    with pytest.raises(UntrustedBundle, match="does not match"):
        verify_run(build_fab_from_disk(app), run_config, FEDERATION, trusted)


def test_the_cli_exits_2_with_one_line_on_a_bad_input(tmp_path, capsys):
    for argv in (["sign", str(tmp_path / "no-such-app"), str(tmp_path / "no-such.key"), "--federation", "f"],
                 ["sign", str(ROOT), str(tmp_path / "no-such.key"), "--federation", "no spaces"],
                 ["revoke", str(tmp_path / "no-such.key"), str(tmp_path / "list.json"), "--sequence", "-1"]):
        assert main(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_signature_starts_one_run(operator, tmp_path):
    _, key, trusted = operator
    ledger = tmp_path / "signed-runs.json"
    run = signed(key)
    claim_signature(ledger, run, 11, now=NOW)
    claim_signature(ledger, run, 11, now=NOW + 60)  # the same run's next message
    with pytest.raises(UntrustedBundle, match="already started run 11: sign the run again"):
        claim_signature(ledger, run, 12, now=NOW + 60)
    other = signed(key, signed_at=NOW + 1)  # signed again: another signature, another run
    claim_signature(ledger, other, 12, now=NOW + 60)
    assert len(json.loads(ledger.read_text())) == 2
    claim_signature(ledger, signed(key, signed_at=NOW + 9 * DAY), 13, now=NOW + 8 * DAY)  # the others expired
    assert [entry[0] for entry in json.loads(ledger.read_text()).values()] == [13]
    ledger.write_text("not json")
    with pytest.raises(UntrustedBundle, match="is not JSON"):
        claim_signature(ledger, run, 11, now=NOW)


def test_the_silos_verifier_checks_the_run_then_claims_its_signature(operator, tmp_path, monkeypatch):
    _, key, _ = operator
    monkeypatch.setenv(TRUSTED_ENTITIES_ENV, str(tmp_path / "operator" / TRUSTED_ENTITIES_FILE))
    monkeypatch.setenv(FEDERATION_ENV, FEDERATION)
    monkeypatch.setenv(REVOCATIONS_ENV, str(tmp_path / "revocations.json"))
    monkeypatch.delenv(SIGNED_RUNS_ENV, raising=False)
    run = CONFIG | {SIGNATURE_KEY: sign_run(FAB, CONFIG, FEDERATION, key)}
    with pytest.raises(UntrustedBundle, match="names no record of signed runs"):
        verify_pulled(FAB, run, 1)
    monkeypatch.setenv(SIGNED_RUNS_ENV, str(tmp_path / "signed-runs.json"))
    assert verify_pulled(FAB, run, 1) == verify_pulled(FAB, run, 1)
    with pytest.raises(UntrustedBundle, match="already started run 1"):
        verify_pulled(FAB, run, 2)
    monkeypatch.setenv(FEDERATION_ENV, "banks")
    with pytest.raises(UntrustedBundle, match="this silo is in 'banks'"):
        verify_pulled(FAB, run, 1)
