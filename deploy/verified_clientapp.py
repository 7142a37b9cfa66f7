"""`flwr-clientapp` that installs an app bundle only for a run a trusted key signed.

A SuperNode's SuperExec starts `flwr-clientapp` (found on PATH) for every message;
`deploy/supernode.sh` puts `deploy/bin/` first on PATH, so this runs instead. It is
Flower's own `flwr-clientapp` with one step added between pulling the task (message,
context with the run config, bundle) and installing the bundle:
:func:`deploy.signing.verify_run` against

- the trusted-entities file named by `$COCOGEN_TRUSTED_ENTITIES`,
- the federation named by `$COCOGEN_FEDERATION`,
- the newest revocation list: the silo's own (`$COCOGEN_REVOCATIONS`, kept up to date)
  or the one the run carries, where newer;
- the silo's record of signed runs (`$COCOGEN_SIGNED_RUNS`): a signature that started
  another run is refused.

A refused bundle is never installed or imported; the ClientApp replies with an error
naming the reason (the ServerApp drops that silo and logs why), and the SuperNode's log
shows the same line. Without a trusted-entities file or a federation every bundle is
refused.
"""

from __future__ import annotations

import os
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

from flwr.supercore import log
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp
from flwr.supernode.runtime import run_clientapp as runtime

from deploy.signing import (
    REVOCATIONS_KEY,
    UntrustedBundle,
    claim_signature,
    current_revocations,
    load_trusted_entities,
    verify_run,
)

TRUSTED_ENTITIES_ENV = "COCOGEN_TRUSTED_ENTITIES"
FEDERATION_ENV = "COCOGEN_FEDERATION"
REVOCATIONS_ENV = "COCOGEN_REVOCATIONS"
SIGNED_RUNS_ENV = "COCOGEN_SIGNED_RUNS"

_pull_task_input = runtime.pull_task_input
_install_from_fab = runtime.install_from_fab
_pulled_config: dict[str, Any] = {}
_pulled_run: dict[str, int] = {}


def _pull_and_remember_config(client: Any) -> Any:
    """Flower's pull, keeping the run config (signature included) for the install step."""
    message, context, run, fab = _pull_task_input(client)
    _pulled_config.clear()
    _pulled_config.update(context.run_config)
    _pulled_run["id"] = context.run_id
    return message, context, run, fab


def _install_if_trusted(fab_content: bytes, *args: Any, **kwargs: Any) -> Any:
    """Verify, then Flower's install; raising makes the ClientApp reply with an error. Every
    refusal is logged."""
    try:
        identity = verify_pulled(fab_content, dict(_pulled_config), _pulled_run.get("id", 0))
    except UntrustedBundle as refusal:
        log(ERROR, "App bundle refused: %s", refusal)
        raise
    log(INFO, "App bundle verified: signed by trusted key %s", identity)
    return _install_from_fab(fab_content, *args, **kwargs)


def verify_pulled(fab: bytes, run_config: dict[str, Any], run_id: int) -> str:
    """:func:`deploy.signing.verify_run` with this silo's settings, then the signature claimed
    for ``run_id`` (see the module docstring)."""
    trusted_path, federation = os.environ.get(TRUSTED_ENTITIES_ENV, ""), os.environ.get(FEDERATION_ENV, "")
    if not trusted_path:
        raise UntrustedBundle(f"refused: ${TRUSTED_ENTITIES_ENV} names no trusted-entities file")
    if not federation:
        raise UntrustedBundle(f"refused: ${FEDERATION_ENV} names no federation")
    try:
        trusted = load_trusted_entities(Path(trusted_path))
    except (OSError, ValueError) as error:
        raise UntrustedBundle(f"refused: trusted entities unreadable ({error})") from None
    stored = os.environ.get(REVOCATIONS_ENV, "")
    try:
        revoked = current_revocations(Path(stored) if stored else None, str(run_config.get(REVOCATIONS_KEY, "")),
                                      trusted)
    except OSError as error:
        raise UntrustedBundle(f"refused: the revocation list unreadable ({error})") from None
    identity = verify_run(fab, run_config, federation, trusted, revoked)
    signed_runs = os.environ.get(SIGNED_RUNS_ENV, "")
    if not signed_runs:
        raise UntrustedBundle(f"refused: ${SIGNED_RUNS_ENV} names no record of signed runs")
    try:
        claim_signature(Path(signed_runs), run_config, run_id)
    except OSError as error:
        raise UntrustedBundle(f"refused: the record of signed runs unwritable ({error})") from None
    return identity


def main() -> None:
    runtime.pull_task_input = _pull_and_remember_config
    runtime.install_from_fab = _install_if_trusted
    flwr_clientapp()


if __name__ == "__main__":
    main()
