"""Signed app bundles: a silo runs only a Flower app bundle (FAB) its operator signed.

Flower 1.42's own check (`flower-supernode --trusted-entities`) accepts only bundles
whose signatures the SuperLink fetched from Flower Hub: a bundle submitted with
`flwr run .` carries no verification record, so a SuperNode started with that flag
refuses every local bundle ("App verification is not supported by the connected
SuperLink"), and Flower Hub is not reachable from a closed consortium network. This
module does the same check with the same parts, one step later, on the silo:

- keys: Ed25519 in OpenSSH format (Flower's `load_private_key`), trusted entities as a
  YAML map `{key id: "ssh-ed25519 ..."}` (the format of `--trusted-entities`);
- the signed message: Flower's `create_message_to_sign(sha256(FAB), signed_at)`;
- the signature travels in the run config key `fab-signature` as
  `<key id>.<signed_at>.<base64url signature>`; the FAB is the deterministic bundle
  `flwr run` builds from the app folder (Flower's `build_fab_from_disk`).

`deploy.verified_clientapp` runs this check before a silo installs a bundle.

CLI (exit 2 and one line on a bad input):
    python -m deploy.signing keygen OUT_DIR     # app-signing.key(.pub), trusted-entities.yaml
    python -m deploy.signing sign APP_DIR KEY   # prints the value for fab-signature
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.primitives.asymmetric_ed25519 import (
    create_message_to_sign,
    decode_base64url,
    load_private_key,
    sign_message,
    verify_signature,
)

SIGNATURE_KEY = "fab-signature"  # the run-config key that carries the signature
PRIVATE_KEY_FILE = "app-signing.key"
TRUSTED_ENTITIES_FILE = "trusted-entities.yaml"


class UntrustedBundle(Exception):
    """The bundle is unsigned, or not signed by a trusted key; the message says which."""


def public_key_text(public_key: ed25519.Ed25519PublicKey) -> str:
    """The OpenSSH one-line form, `ssh-ed25519 AAAA...`."""
    return public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw public key: names the key in both files."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key(out_dir: Path) -> str:
    """Write the operator's signing key and the trusted-entities file silos need; its id."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private_key = ed25519.Ed25519PrivateKey.generate()
    private_path = out_dir / PRIVATE_KEY_FILE
    private_path.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    private_path.chmod(0o600)
    public_key = private_key.public_key()
    (out_dir / f"{PRIVATE_KEY_FILE}.pub").write_text(public_key_text(public_key) + "\n")
    identity = key_id(public_key)
    (out_dir / TRUSTED_ENTITIES_FILE).write_text(yaml.safe_dump({identity: public_key_text(public_key)}))
    return identity


def sign_fab(fab: bytes, private_key_path: Path, signed_at: int | None = None) -> str:
    """`<key id>.<signed_at>.<signature>` over create_message_to_sign(sha256(fab), signed_at)."""
    private_key = load_private_key(private_key_path)
    when = int(time.time()) if signed_at is None else signed_at
    signature = sign_message(private_key, create_message_to_sign(hashlib.sha256(fab).digest(), when))
    encoded = base64.urlsafe_b64encode(signature).decode().rstrip("=")
    return f"{key_id(private_key.public_key())}.{when}.{encoded}"


def load_trusted_entities(path: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """The `{key id: public key}` map of a trusted-entities YAML file (Ed25519 keys only)."""
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: expected a non-empty map of key id -> 'ssh-ed25519 ...'")
    keys = {}
    for identity, text in entries.items():
        public_key = serialization.load_ssh_public_key(str(text).encode())
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise ValueError(f"{path}: key {identity!r} is not Ed25519")
        keys[str(identity)] = public_key
    return keys


def verify_fab(fab: bytes, signature: str, trusted: dict[str, ed25519.Ed25519PublicKey]) -> str:
    """Raise UntrustedBundle unless `signature` is a trusted key's over this FAB; the key id."""
    if not signature:
        raise UntrustedBundle(f"the app bundle is unsigned (no {SIGNATURE_KEY} in the run config)")
    parts = signature.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        raise UntrustedBundle(f"{SIGNATURE_KEY} is not '<key id>.<signed_at>.<signature>'")
    identity, signed_at, encoded = parts
    if identity not in trusted:
        raise UntrustedBundle(f"the app bundle is signed by key {identity!r}, which this silo does not trust")
    try:
        raw_signature = decode_base64url(encoded)
    except ValueError as error:
        raise UntrustedBundle(f"{SIGNATURE_KEY}: the signature is not base64url ({error})") from None
    message = create_message_to_sign(hashlib.sha256(fab).digest(), int(signed_at))
    if not verify_signature(trusted[identity], message, raw_signature):
        raise UntrustedBundle(f"the signature of key {identity!r} does not match this app bundle (tampered?)")
    return identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.signing", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="make the operator's signing key and trusted-entities.yaml")
    keygen.add_argument("out_dir", type=Path)
    sign = commands.add_parser("sign", help="sign the bundle `flwr run APP_DIR` submits")
    sign.add_argument("app_dir", type=Path)
    sign.add_argument("private_key", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            identity = generate_signing_key(args.out_dir)
            print(f"key {identity}: {args.out_dir / PRIVATE_KEY_FILE} (keep it), "
                  f"{args.out_dir / TRUSTED_ENTITIES_FILE} (give it to every silo)")
        else:
            print(sign_fab(build_fab_from_disk(args.app_dir), args.private_key))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
