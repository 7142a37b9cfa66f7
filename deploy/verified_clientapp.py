"""`flwr-clientapp` that installs an app bundle only if a trusted key signed it.

A SuperNode's SuperExec starts `flwr-clientapp` (found on PATH) for every message;
`deploy/supernode.sh` puts `deploy/bin/` first on PATH, so this runs instead. It is
Flower's own `flwr-clientapp` with one step added between pulling the task (message,
context with the run config, bundle) and installing the bundle: `deploy.signing.
verify_fab` against the trusted-entities file named by `$COCOGEN_TRUSTED_ENTITIES`.
A refused bundle is never installed or imported; the ClientApp replies with an error
naming the reason (the ServerApp drops that silo and logs why), and the SuperNode's log
shows the same line. Without the environment variable every bundle is refused.
"""

from __future__ import annotations

import os
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

from flwr.supercore import log
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp
from flwr.supernode.runtime import run_clientapp as runtime

from deploy.signing import SIGNATURE_KEY, UntrustedBundle, load_trusted_entities, verify_fab

TRUSTED_ENTITIES_ENV = "COCOGEN_TRUSTED_ENTITIES"

_pull_task_input = runtime.pull_task_input
_install_from_fab = runtime.install_from_fab
_pulled_signature: dict[str, str] = {}


def _pull_and_remember_signature(client: Any) -> Any:
    """Flower's pull, keeping the run config's signature for the install step."""
    message, context, run, fab = _pull_task_input(client)
    signature = context.run_config.get(SIGNATURE_KEY, "")
    _pulled_signature["value"] = signature if isinstance(signature, str) else ""
    return message, context, run, fab


def _install_if_trusted(fab_content: bytes, *args: Any, **kwargs: Any) -> Any:
    """Verify, then Flower's install; raising makes the ClientApp reply with an error."""
    trusted_path = os.environ.get(TRUSTED_ENTITIES_ENV, "")
    if not trusted_path:
        raise UntrustedBundle(f"refused: ${TRUSTED_ENTITIES_ENV} names no trusted-entities file")
    try:
        trusted = load_trusted_entities(Path(trusted_path))
    except (OSError, ValueError) as error:
        raise UntrustedBundle(f"refused: trusted entities unreadable ({error})") from None
    try:
        identity = verify_fab(fab_content, _pulled_signature.get("value", ""), trusted)
    except UntrustedBundle as refusal:
        log(ERROR, "App bundle refused: %s", refusal)
        raise
    log(INFO, "App bundle verified: signed by trusted key %s", identity)
    return _install_from_fab(fab_content, *args, **kwargs)


def main() -> None:
    runtime.pull_task_input = _pull_and_remember_signature
    runtime.install_from_fab = _install_if_trusted
    flwr_clientapp()


if __name__ == "__main__":
    main()
