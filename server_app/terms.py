"""The run's consortium terms: from the operator's config (simulation) or a signed terms file.

In deployment the operator writes the terms (:func:`strategy.terms.terms_from_dict`'s
schema: each organisation's value, capacity, price per second, seconds per image,
declared data size and node key, and a ``sequence`` number), signs them with an Ed25519
key kept off the coordinator, and hands every silo and the coordinator the file and its
signature (``TERMS.sig`` beside it). The server accepts a file only if the operator's key
verifies the signature over its exact bytes and its sequence number is not below the last
one this server accepted (an equal number must be the same file): an older or altered
file is refused, with one line saying why.

CLI (exit 2 and one line on a bad input)::

    python -m server_app.terms keygen OUT_DIR               # terms-signing.key(.pub)
    python -m server_app.terms sign TERMS.json KEY          # writes TERMS.json.sig
    python -m server_app.terms verify TERMS.json KEY.pub    # checks, prints the terms
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from server_app.settings import TermsSettings
from strategy.protocol import SiloSettings
from strategy.terms import Terms, TermsError, config_terms, terms_from_dict
from task.data import load_dataset, partition_dataset
from task.files import strict_json, write_atomically

SIGNATURE_SUFFIX = ".sig"
PRIVATE_KEY_FILE = "terms-signing.key"
ACCEPTED_FILE = "terms-accepted.json"
"""In the server's cache: the sequence number and digest of the last terms file accepted."""


def consortium_terms(settings: TermsSettings, seconds_per_image: Sequence[float], organisations: int,
                     state_dir: Path, silo: SiloSettings | None = None) -> Terms:
    """The run's terms: the signed terms file where one is configured (checked against the
    last one accepted, in ``state_dir``), else the config's per-organisation lists with the
    compute profile's ``seconds_per_image`` (and, with ``data_size: partition``, the sizes
    of the partitions ``silo`` describes, :func:`partition_sizes`)."""
    if settings.file is None:
        sizes = partition_sizes(silo, state_dir) if settings.partition_sizes and silo is not None \
            else settings.data_size
        return config_terms(settings.value, settings.capacity, settings.price_per_second, seconds_per_image,
                            sizes, organisations)
    if settings.public_key is None:
        raise TermsError("economics.terms_key: a terms file needs the operator's public key to check it")
    terms = verified_terms(settings.file, settings.public_key.read_text())
    if terms.size != organisations:
        raise TermsError(f"{settings.file}: terms for {terms.size} organisations, the run has {organisations}")
    accept(terms, settings.file.read_bytes(), state_dir)
    return terms


def partition_sizes(silo: SiloSettings, cache: Path) -> tuple[int, ...]:
    """The number of training rows of each simulated silo's partition: the shared copy cut
    exactly as the silos cut it (:func:`client_app.local.load_silo`), so each organisation's
    declared size is its true ``n``."""
    train, _ = load_dataset(silo.dataset, root=silo.dataset_root or None, download=silo.download,
                            cache_dir=str(cache / "data"))
    orgs = partition_dataset(train, silo.num_orgs, partitioner=silo.partitioner, alpha=silo.alpha,
                             classes_per_org=silo.classes_per_org, seed=silo.seed,
                             samples_per_org=silo.samples_per_org or None, val_fraction=silo.val_fraction,
                             min_partition_size=silo.min_partition_size)
    return tuple(len(org.train) for org in orgs)


def verified_terms(path: Path, public_key: str) -> Terms:
    """The terms in ``path`` if ``public_key`` (OpenSSH Ed25519) verifies the signature beside it."""
    data = path.read_bytes()
    signature_file = path.with_name(path.name + SIGNATURE_SUFFIX)
    if not signature_file.exists():
        raise TermsError(f"{path}: no signature ({signature_file.name})")
    try:
        key = serialization.load_ssh_public_key(public_key.strip().encode())
        signature = base64.urlsafe_b64decode(signature_file.read_text().strip() + "==")
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise TermsError(f"{path}: unreadable key or signature ({err})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise TermsError(f"{path}: the operator's key must be Ed25519")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise TermsError(f"{path}: the signature does not verify with the operator's key") from None
    try:
        return terms_from_dict(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TermsError(f"{path}: not JSON ({err})") from None


def accept(terms: Terms, data: bytes, state_dir: Path) -> None:
    """Refuse terms older than the last accepted (a lower sequence number, or the same number
    with other bytes); else record them as the last accepted."""
    digest = hashlib.sha256(data).hexdigest()
    record = state_dir / ACCEPTED_FILE
    if record.exists():
        last = json.loads(record.read_text())
        if terms.sequence < last["sequence"]:
            raise TermsError(f"terms sequence {terms.sequence} is older than the last accepted, {last['sequence']}")
        if terms.sequence == last["sequence"] and digest != last["digest"]:
            raise TermsError(f"terms sequence {terms.sequence} was accepted before with other contents")
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(record, strict_json({"sequence": terms.sequence, "digest": digest}, indent=1))


def sign(path: Path, private_key: Path) -> Path:
    """Sign ``path``'s exact bytes with an OpenSSH Ed25519 private key; returns the signature file."""
    key = serialization.load_ssh_private_key(private_key.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TermsError(f"{private_key}: must be an Ed25519 key")
    terms_from_dict(json.loads(path.read_bytes()))  # never sign terms the server would refuse
    out = path.with_name(path.name + SIGNATURE_SUFFIX)
    out.write_text(base64.urlsafe_b64encode(key.sign(path.read_bytes())).decode().rstrip("=") + "\n")
    return out


def keygen(directory: Path) -> Path:
    """A new Ed25519 key pair in OpenSSH format: ``terms-signing.key`` (mode 600) and ``.pub``."""
    key = ed25519.Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / PRIVATE_KEY_FILE
    if private.exists():
        raise TermsError(f"{private} exists; not overwritten")
    private.touch(mode=0o600)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public = private.with_name(PRIVATE_KEY_FILE + ".pub")
    public.write_text(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH).decode() + "\n")
    return public


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server_app.terms", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="a new operator key pair").add_argument("directory", type=Path)
    signing = commands.add_parser("sign", help="sign a terms file")
    signing.add_argument("terms", type=Path)
    signing.add_argument("key", type=Path)
    checking = commands.add_parser("verify", help="check a terms file's signature and print its terms")
    checking.add_argument("terms", type=Path)
    checking.add_argument("public_key", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(keygen(args.directory))
        elif args.command == "sign":
            print(sign(args.terms, args.key))
        else:
            terms = verified_terms(args.terms, args.public_key.read_text())
            print(json.dumps(terms.to_json(), indent=1))
    except (TermsError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
