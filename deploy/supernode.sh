#!/usr/bin/env bash
# Start one organisation's SuperNode: TLS to the SuperLink, authenticated with its key.
# Usage: deploy/supernode.sh CA_CERT PRIVATE_KEY SUPERLINK_ADDRESS PORT NODE_CONFIG
#   CA_CERT      the federation's ca.crt (to verify the SuperLink)
#   PRIVATE_KEY  this silo's private key (its .pub was registered with `flwr supernode register`)
#   SUPERLINK_ADDRESS  e.g. coordinator.example.org:9093
#   PORT         this SuperNode's local ClientApp API port (e.g. 9094)
#   NODE_CONFIG  e.g. "partition-id=0 data-path='/data/silo' value=120 capacity=800 price-per-second=0.5 cache-dir='/var/cache/cocogen'"
# Runs in the foreground; stop it with Ctrl+C.
set -euo pipefail
if [ $# -ne 5 ]; then echo "usage: $0 CA_CERT PRIVATE_KEY SUPERLINK_ADDRESS PORT NODE_CONFIG" >&2; exit 2; fi
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 HF_HUB_OFFLINE=1
exec flower-supernode \
  --root-certificates "$1" \
  --auth-supernode-private-key "$2" \
  --superlink "$3" \
  --port "$4" \
  --node-config "$5"
