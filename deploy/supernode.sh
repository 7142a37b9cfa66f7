#!/usr/bin/env bash
# Start one organisation's SuperNode: TLS to the coordinator, authenticated with the
# silo's own key, running only app bundles signed by a key it trusts.
# Usage: COCOGEN_FEDERATION=NAME deploy/supernode.sh CA_CERT PRIVATE_KEY TRUSTED_ENTITIES SUPERLINK_ADDRESS PORT NODE_CONFIG
#   COCOGEN_FEDERATION the federation's name: a run must be signed for it
#   COCOGEN_REVOCATIONS where this silo keeps the newest revocation list it has seen
#                      (default: revocations.json beside TRUSTED_ENTITIES)
#   COCOGEN_SIGNED_RUNS where it records which run each signature started, so that a
#                      signature starts one run (default: signed-runs.json beside it)
#   CA_CERT           the federation's ca.crt (to verify the coordinator)
#   PRIVATE_KEY       this silo's private key (deploy/make_silo_key.sh; only its .pub left the silo)
#   TRUSTED_ENTITIES  trusted-entities.yaml: the operator's app-signing public key(s)
#   SUPERLINK_ADDRESS the coordinator's silo-facing address, e.g. coordinator.example.org:9093
#   PORT              this SuperNode's local ClientApp API port (e.g. 9094)
#   NODE_CONFIG       e.g. "partition-id=0 data-path='/data/silo' value=1200 capacity=800 price-per-second=4 cache-dir='/var/cache/cocogen'"
# Every ClientApp process is started through deploy/bin/flwr-clientapp, which refuses
# an unsigned or tampered bundle before installing it (deploy/verified_clientapp.py),
# and is forked from this silo's long-lived launcher (deploy/zygote.py, started here),
# so a message does not pay torch's and diffusers' imports again.
# Runs in the foreground; Ctrl+C (or SIGTERM) stops the SuperNode and the launcher.
set -euo pipefail
if [ $# -ne 6 ]; then
  echo "usage: $0 CA_CERT PRIVATE_KEY TRUSTED_ENTITIES SUPERLINK_ADDRESS PORT NODE_CONFIG" >&2; exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
supernode=$(command -v flower-supernode) || { echo "flower-supernode not found: activate the project's .venv" >&2; exit 2; }
trusted=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
[ -r "$trusted" ] || { echo "cannot read trusted entities $3" >&2; exit 2; }
[ -n "${COCOGEN_FEDERATION:-}" ] || { echo "set COCOGEN_FEDERATION to the federation's name (runs are signed for it)" >&2; exit 2; }
source "$here/flower.env"
export COCOGEN_TRUSTED_ENTITIES=$trusted COCOGEN_PYTHON="$(dirname "$supernode")/python"
export COCOGEN_REVOCATIONS="${COCOGEN_REVOCATIONS:-$(dirname "$trusted")/revocations.json}"
export COCOGEN_SIGNED_RUNS="${COCOGEN_SIGNED_RUNS:-$(dirname "$trusted")/signed-runs.json}"
export PATH="$here/bin:$PATH"

launcher_dir=$(mktemp -d "${TMPDIR:-/tmp}/cocogen-launcher.XXXXXX")   # mode 0700
export COCOGEN_CLIENTAPP_LAUNCHER=$launcher_dir/clientapp.sock
PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}" "$COCOGEN_PYTHON" -P -m deploy.zygote serve \
  "$COCOGEN_CLIENTAPP_LAUNCHER" &
launcher=$!
"$supernode" \
  --root-certificates "$1" \
  --auth-supernode-private-key "$2" \
  --superlink "$4" \
  --port "$5" \
  --node-config "$6" &
node=$!
trap 'kill $node $launcher 2>/dev/null; wait 2>/dev/null; rm -rf "$launcher_dir"' EXIT INT TERM
wait "$node"   # a launcher that died is not fatal: ClientApps then start from scratch
