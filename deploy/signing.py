"""Signed runs: a silo runs only an app bundle (FAB) with the run config its operator
signed, for its federation, before the signature expires, and never a revoked key or bundle.

Flower 1.42's own check (`flower-supernode --trusted-entities`) accepts only bundles
whose signatures the SuperLink fetched from Flower Hub: a bundle submitted with
`flwr run .` carries no verification record, so a SuperNode started with that flag
refuses every local bundle ("App verification is not supported by the connected
SuperLink"), and Flower Hub is not reachable from a closed consortium network. This
module does the check with Flower's parts, on the silo, before the bundle is installed:

- keys: Ed25519 in OpenSSH format (Flower's `load_private_key`), trusted entities as a
  YAML map `{key id: "ssh-ed25519 ..."}` (the format of `--trusted-entities`);
- the signed message (:func:`run_message`): the bundle's SHA-256, the run config's digest
  (:func:`config_digest`: every key but the signature and the revocation list), the
  federation's name, the signing time and the expiry;
- the signature travels in the run config key `fab-signature` as
  `v2.<key id>.<signed_at>.<expires_at>.<federation>.<config digest, 16 hex>.<signature>`;
  the FAB is the deterministic bundle `flwr run` builds from the app folder;
- a revocation list (:class:`Revocations`), signed by a trusted key with a sequence
  number, travels base64url-encoded in the run config key `fab-revocations`; each silo
  keeps the newest it has seen and refuses an older one;
- a signature starts one run: each silo records the run that used it
  (:func:`claim_signature`) and refuses it for any other.

`deploy.verified_clientapp` runs this check before a silo installs a bundle.

CLI, run on the operator's workstation (exit 2 and one line on a bad input):
    python -m deploy.signing keygen OUT_DIR   # app-signing.key(.pub), trusted-entities.yaml
    python -m deploy.signing sign APP_DIR KEY --federation NAME [-c OVERRIDES]... [--valid-days 7]
        # prints the value for fab-signature, for `flwr run APP_DIR ... -c OVERRIDES...`
    python -m deploy.signing revoke KEY OUT --sequence N [--key ID]... [--bundle SHA256]...
        # writes the signed list to OUT and prints the value for fab-revocations
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.cli.build import build_fab_from_disk
from flwr.common.config import flatten_dict, fuse_dicts, get_fab_config, parse_config_args
from flwr.supercore.primitives.asymmetric_ed25519 import (
    decode_base64url,
    load_private_key,
    sign_message,
    verify_signature,
)

SIGNATURE_KEY = "fab-signature"  # the run-config key that carries the signature
REVOCATIONS_KEY = "fab-revocations"  # the run-config key that carries the revocation list
PRIVATE_KEY_FILE = "app-signing.key"
TRUSTED_ENTITIES_FILE = "trusted-entities.yaml"
FORMAT = "v2"
DAY = 86_400
DEFAULT_VALIDITY_DAYS = 7
MAX_VALIDITY_DAYS = 31
"""A signature valid for longer is refused: an old signed run cannot be run again for ever."""
CLOCK_SKEW = 300
"""Seconds a signature may be dated ahead of the silo's clock."""
LATEST = 10**11
"""No date after this (year 5138) is read: larger numbers are refused, never converted."""
FEDERATION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
DOMAIN = b"cocogen signed run v2\0"
REVOCATION_DOMAIN = b"cocogen revocation list v1\0"


class UntrustedBundle(Exception):
    """The run is not one a trusted key signed, or no longer valid; the message says why."""


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


def config_digest(run_config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the run config as canonical JSON, without the signature and the
    revocation list (which travel in it)."""
    signed = {key: value for key, value in run_config.items() if key not in (SIGNATURE_KEY, REVOCATIONS_KEY)}
    return hashlib.sha256(json.dumps(signed, sort_keys=True, allow_nan=False).encode()).hexdigest()


def bundle_run_config(fab: bytes, overrides: list[str]) -> dict[str, Any]:
    """The run config a silo sees for ``flwr run APP -c OVERRIDES...``: the bundle's defaults
    with the overrides Flower accepts (its own parsing and fusing)."""
    defaults = flatten_dict(get_fab_config(fab)["tool"]["flwr"]["app"].get("config", {}))
    return dict(fuse_dicts(defaults, parse_config_args(overrides)))


def run_message(fab: bytes, run_config: Mapping[str, Any], federation: str, signed_at: int, expires_at: int) -> bytes:
    """What the operator signs: every fact the run's signature binds."""
    facts = {"bundle": hashlib.sha256(fab).hexdigest(), "config": config_digest(run_config),
             "federation": federation, "signed_at": signed_at, "expires_at": expires_at}
    return DOMAIN + json.dumps(facts, sort_keys=True).encode()


def sign_run(fab: bytes, run_config: Mapping[str, Any], federation: str, private_key_path: Path,
             valid_days: float = DEFAULT_VALIDITY_DAYS, signed_at: int | None = None) -> str:
    """The value of ``fab-signature`` for this bundle and run config in ``federation``."""
    if not FEDERATION_NAME.fullmatch(federation):
        raise ValueError(f"federation {federation!r}: use 1-64 letters, digits, '-' or '_'")
    if not 0 < valid_days <= MAX_VALIDITY_DAYS:
        raise ValueError(f"valid days {valid_days}: must lie in (0, {MAX_VALIDITY_DAYS}]")
    private_key = load_private_key(private_key_path)
    when = int(time.time()) if signed_at is None else signed_at
    expires = when + int(valid_days * DAY)
    signature = sign_message(private_key, run_message(fab, run_config, federation, when, expires))
    encoded = base64.urlsafe_b64encode(signature).decode().rstrip("=")
    return ".".join([FORMAT, key_id(private_key.public_key()), str(when), str(expires), federation,
                     config_digest(run_config)[:16], encoded])


@dataclass(frozen=True)
class RunSignature:
    """A parsed ``fab-signature`` value."""

    key: str
    signed_at: int
    expires_at: int
    federation: str
    config: str
    """The signed run config's digest, first 16 hex digits (for the refusal's message)."""
    signature: bytes

    @classmethod
    def parse(cls, text: str) -> RunSignature:
        if not text:
            raise UntrustedBundle(f"the app bundle is unsigned (no {SIGNATURE_KEY} in the run config)")
        parts = text.split(".")
        if len(parts) != 7 or parts[0] != FORMAT:
            raise UntrustedBundle(f"{SIGNATURE_KEY} is not '{FORMAT}.<key id>.<signed_at>.<expires_at>.<federation>."
                                  "<config digest>.<signature>'")
        _, key, signed_at, expires_at, federation, config, encoded = parts
        try:
            raw = decode_base64url(encoded)
        except ValueError as error:
            raise UntrustedBundle(f"{SIGNATURE_KEY}: the signature is not base64url ({error})") from None
        return cls(key, _date(signed_at, "signed_at"), _date(expires_at, "expires_at"), federation, config, raw)


def _date(text: str, name: str) -> int:
    """A Unix time of the signature, refused unless it is a plain number before :data:`LATEST`."""
    if not text.isdigit() or len(text) > len(str(LATEST)) or int(text) > LATEST:
        raise UntrustedBundle(f"{SIGNATURE_KEY}: {name} {text[:24]!r} is not a date this silo accepts")
    return int(text)


def verify_run(fab: bytes, run_config: Mapping[str, Any], federation: str,
               trusted: Mapping[str, ed25519.Ed25519PublicKey], revoked: Revocations | None = None,
               now: float | None = None) -> str:
    """Raise UntrustedBundle unless the run config's ``fab-signature`` is a trusted, unrevoked
    key's over this bundle, this run config and ``federation``, and valid now; the key id."""
    signature = RunSignature.parse(str(run_config.get(SIGNATURE_KEY, "")))
    clock = time.time() if now is None else now
    if signature.key not in trusted:
        raise UntrustedBundle(f"the app bundle is signed by key {signature.key!r}, which this silo does not trust")
    bundle = hashlib.sha256(fab).hexdigest()
    if revoked is not None and signature.key in revoked.keys:
        raise UntrustedBundle(f"key {signature.key!r} is revoked (revocation list {revoked.sequence})")
    if revoked is not None and bundle in revoked.bundles:
        raise UntrustedBundle(f"the app bundle {bundle[:16]} is revoked (revocation list {revoked.sequence})")
    if signature.federation != federation:
        raise UntrustedBundle(f"the run is signed for federation {signature.federation!r}; this silo is in "
                              f"{federation!r}")
    if signature.config != config_digest(run_config)[:16]:
        raise UntrustedBundle(f"the run is signed for another run config (digest {signature.config}, this run's "
                              f"{config_digest(run_config)[:16]})")
    message = run_message(fab, run_config, federation, signature.signed_at, signature.expires_at)
    if not verify_signature(trusted[signature.key], message, signature.signature):
        raise UntrustedBundle(f"the signature of key {signature.key!r} does not match this app bundle (tampered?)")
    if signature.signed_at > clock + CLOCK_SKEW:
        raise UntrustedBundle(f"the signature is dated {_when(signature.signed_at)}, in the future")
    if signature.expires_at - signature.signed_at > MAX_VALIDITY_DAYS * DAY:
        raise UntrustedBundle(f"the signature is valid for more than {MAX_VALIDITY_DAYS} days")
    if clock > signature.expires_at:
        raise UntrustedBundle(f"the signature expired at {_when(signature.expires_at)}")
    return signature.key


def _when(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


@dataclass(frozen=True)
class Revocations:
    """The operator's revocation list: key ids and bundle digests (SHA-256 hex) no silo may run."""

    sequence: int
    issued_at: int
    keys: frozenset[str] = field(default_factory=frozenset)
    bundles: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"keys": sorted(self.keys), "bundles": sorted(self.bundles)}


def sign_revocations(revocations: Revocations, private_key_path: Path) -> str:
    """The signed list as JSON text: ``{"revocations": ..., "key": id, "signature": base64url}``."""
    private_key = load_private_key(private_key_path)
    listed = revocations.to_json()
    signature = sign_message(private_key, REVOCATION_DOMAIN + json.dumps(listed, sort_keys=True).encode())
    return json.dumps({"revocations": listed, "key": key_id(private_key.public_key()),
                       "signature": base64.urlsafe_b64encode(signature).decode().rstrip("=")}, indent=1)


def read_revocations(text: str, trusted: Mapping[str, ed25519.Ed25519PublicKey]) -> Revocations:
    """A signed list, verified: signed by a trusted key that the list itself does not revoke."""
    try:
        signed = json.loads(text)
        listed, identity, encoded = signed["revocations"], signed["key"], signed["signature"]
        revocations = Revocations(_count(listed["sequence"]), _count(listed["issued_at"]),
                                  frozenset(map(str, listed["keys"])), frozenset(map(str, listed["bundles"])))
        raw = decode_base64url(encoded)
    except (ValueError, TypeError, KeyError) as error:
        raise UntrustedBundle(f"the revocation list is malformed ({type(error).__name__}: {error})") from None
    if identity not in trusted or identity in revocations.keys:
        raise UntrustedBundle(f"the revocation list is signed by key {identity!r}, which this silo does not trust")
    message = REVOCATION_DOMAIN + json.dumps(revocations.to_json(), sort_keys=True).encode()
    if not verify_signature(trusted[identity], message, raw):
        raise UntrustedBundle("the revocation list's signature does not match it")
    return revocations


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= LATEST:
        raise ValueError(f"{value!r} is not a whole number in [0, {LATEST}]")
    return value


def current_revocations(stored: Path | None, carried: str, trusted: Mapping[str, ed25519.Ed25519PublicKey]
                        ) -> Revocations | None:
    """The newest revocation list: the silo's ``stored`` one, or the run's ``carried`` one
    (base64url of the signed JSON) where that is newer, which then replaces the stored one.
    A carried list older than the stored one is refused (a coordinator cannot roll back), and
    so is one signed by a key the stored list revokes (a revoked key cannot revoke its revocation)."""
    known = read_revocations(stored.read_text(), trusted) if stored is not None and stored.is_file() else None
    if not carried:
        return known
    try:
        text = decode_base64url(carried).decode()
    except (ValueError, UnicodeDecodeError) as error:
        raise UntrustedBundle(f"{REVOCATIONS_KEY} is not base64url ({error})") from None
    signer = _signer(text)
    if known is not None and signer in known.keys:
        raise UntrustedBundle(f"the run's revocation list is signed by key {signer!r}, which this silo's list "
                              f"{known.sequence} revokes")
    offered = read_revocations(text, trusted)
    if known is not None and offered.sequence < known.sequence:
        raise UntrustedBundle(f"the run carries revocation list {offered.sequence}, older than this silo's "
                              f"{known.sequence}")
    if stored is not None and (known is None or offered.sequence > known.sequence):
        temporary = stored.with_name(f".{stored.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, stored)
    return offered


def claim_signature(ledger: Path, run_config: Mapping[str, Any], run_id: int, now: float | None = None) -> None:
    """A signature starts one run: record that ``run_id`` uses the run config's signature in
    the silo's ``ledger`` (JSON, ``{signature digest: [run id, expires_at]}``, under a lock),
    or raise UntrustedBundle where another run already used it. Entries past their expiry
    are dropped (an expired signature is refused anyway)."""
    signature = RunSignature.parse(str(run_config.get(SIGNATURE_KEY, "")))
    digest = hashlib.sha256(str(run_config[SIGNATURE_KEY]).encode()).hexdigest()
    clock = time.time() if now is None else now
    with open(ledger.with_name(f".{ledger.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            used = json.loads(ledger.read_text()) if ledger.is_file() else {}
        except ValueError:
            raise UntrustedBundle(f"refused: the silo's record of signed runs {ledger} is not JSON") from None
        used = {key: entry for key, entry in used.items() if isinstance(entry, list) and len(entry) == 2
                and isinstance(entry[1], int) and entry[1] >= clock}
        if digest in used and used[digest][0] != run_id:
            raise UntrustedBundle(f"this signature already started run {used[digest][0]}: sign the run again")
        used[digest] = [run_id, signature.expires_at]
        temporary = ledger.with_name(f".{ledger.name}.tmp")
        temporary.write_text(json.dumps(used, indent=1))
        os.replace(temporary, ledger)


def _signer(text: str) -> str | None:
    """The key id a signed list names (``None`` where it names none; :func:`read_revocations` says why)."""
    try:
        signed = json.loads(text)
    except ValueError:
        return None
    return str(signed.get("key")) if isinstance(signed, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.signing", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="make the operator's signing key and trusted-entities.yaml")
    keygen.add_argument("out_dir", type=Path)
    sign = commands.add_parser("sign", help="sign the bundle `flwr run APP_DIR` submits, with its run config")
    sign.add_argument("app_dir", type=Path)
    sign.add_argument("private_key", type=Path)
    sign.add_argument("--federation", required=True, help="the federation's name, as its silos know it")
    sign.add_argument("-c", "--run-config", action="append", default=[],
                      help="the run config, exactly as given to `flwr run -c` (repeatable)")
    sign.add_argument("--valid-days", type=float, default=DEFAULT_VALIDITY_DAYS,
                      help=f"days the signature stays valid (at most {MAX_VALIDITY_DAYS})")
    revoke = commands.add_parser("revoke", help="write a signed revocation list")
    revoke.add_argument("private_key", type=Path)
    revoke.add_argument("out", type=Path)
    revoke.add_argument("--sequence", type=int, required=True, help="higher than every list given out before")
    revoke.add_argument("--key", action="append", default=[], help="a key id no silo may trust any more")
    revoke.add_argument("--bundle", action="append", default=[], help="a bundle's SHA-256 (hex) no silo may run")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            identity = generate_signing_key(args.out_dir)
            print(f"key {identity}: {args.out_dir / PRIVATE_KEY_FILE} (keep it on this workstation), "
                  f"{args.out_dir / TRUSTED_ENTITIES_FILE} (give it to every silo)")
        elif args.command == "sign":
            fab = build_fab_from_disk(args.app_dir)
            print(sign_run(fab, bundle_run_config(fab, args.run_config), args.federation, args.private_key,
                           args.valid_days))
        else:
            revocations = Revocations(_count(args.sequence), int(time.time()), frozenset(args.key),
                                      frozenset(args.bundle))
            text = sign_revocations(revocations, args.private_key)
            args.out.write_text(text)
            print(base64.urlsafe_b64encode(text.encode()).decode().rstrip("="))
    except (OSError, ValueError, KeyError, click.ClickException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
