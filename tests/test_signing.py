"""Signed app bundles (deploy.signing): what a silo accepts and what it refuses.

The end-to-end refusal by a running SuperNode is in tests/test_deployment.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from deploy.signing import (
    PRIVATE_KEY_FILE,
    TRUSTED_ENTITIES_FILE,
    UntrustedBundle,
    generate_signing_key,
    load_trusted_entities,
    main,
    sign_fab,
    verify_fab,
)

ROOT = Path(__file__).resolve().parent.parent
FAB = b"PK\x03\x04 a stand-in for a bundle's bytes"


@pytest.fixture
def operator(tmp_path):
    identity = generate_signing_key(tmp_path / "operator")
    return identity, tmp_path / "operator" / PRIVATE_KEY_FILE, load_trusted_entities(
        tmp_path / "operator" / TRUSTED_ENTITIES_FILE)


def test_a_signature_by_a_trusted_key_verifies(operator):
    identity, key, trusted = operator
    assert verify_fab(FAB, sign_fab(FAB, key), trusted) == identity


@pytest.mark.parametrize("change", [
    lambda fab: fab + b"\n# one more line",
    lambda fab: fab[:-1] + bytes([fab[-1] ^ 1]),
    lambda fab: b"",
])
def test_a_tampered_bundle_is_refused(operator, change):
    _, key, trusted = operator
    with pytest.raises(UntrustedBundle, match="does not match this app bundle"):
        verify_fab(change(FAB), sign_fab(FAB, key), trusted)


def test_a_changed_timestamp_breaks_the_signature(operator):
    _, key, trusted = operator
    identity, signed_at, signature = sign_fab(FAB, key, signed_at=1_000).split(".")
    with pytest.raises(UntrustedBundle, match="does not match"):
        verify_fab(FAB, f"{identity}.1001.{signature}", trusted)


def test_a_key_the_silo_does_not_trust_is_refused(operator, tmp_path):
    _, _, trusted = operator
    generate_signing_key(tmp_path / "stranger")
    with pytest.raises(UntrustedBundle, match="does not trust"):
        verify_fab(FAB, sign_fab(FAB, tmp_path / "stranger" / PRIVATE_KEY_FILE), trusted)


def test_a_trusted_key_id_with_a_strangers_signature_is_refused(operator, tmp_path):
    identity, _, trusted = operator
    generate_signing_key(tmp_path / "stranger")
    _, signed_at, signature = sign_fab(FAB, tmp_path / "stranger" / PRIVATE_KEY_FILE).split(".")
    with pytest.raises(UntrustedBundle, match="does not match"):
        verify_fab(FAB, f"{identity}.{signed_at}.{signature}", trusted)


@pytest.mark.parametrize("signature, reason", [
    ("", "unsigned"),
    ("just-one-part", "is not '<key id>.<signed_at>.<signature>'"),
    ("a.b.c", "is not '<key id>.<signed_at>.<signature>'"),
    ("a.1.c.d", "is not '<key id>.<signed_at>.<signature>'"),
])
def test_malformed_signatures_are_refused(operator, signature, reason):
    _, _, trusted = operator
    with pytest.raises(UntrustedBundle, match=reason.replace("<", ".").replace(">", ".")):
        verify_fab(FAB, signature, trusted)


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


def test_the_signed_bundle_is_the_one_flwr_run_builds(operator, tmp_path):
    """`flwr run DIR` builds the same bytes every time, so a signature made beforehand holds;
    any edit of a shipped file changes them."""
    _, key, trusted = operator
    app = tmp_path / "app"
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*.png"))
    signature = sign_fab(build_fab_from_disk(app), key)
    verify_fab(build_fab_from_disk(app), signature, trusted)
    with open(app / "client_app" / "app.py", "a") as handle:
        handle.write("# an edit\n")
    with pytest.raises(UntrustedBundle, match="does not match"):
        verify_fab(build_fab_from_disk(app), signature, trusted)


def test_the_cli_exits_2_with_one_line_on_a_bad_input(tmp_path, capsys):
    assert main(["sign", str(tmp_path / "no-such-app"), str(tmp_path / "no-such.key")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
