#!/usr/bin/env bash
# Start the coordinator's SuperLink with TLS and SuperNode authentication.
# Usage: deploy/superlink.sh CREDS_DIR STATE_DIR [HOST] [PORT]
#   CREDS_DIR holds ca.crt, server.pem, server.key (deploy/make_credentials.sh);
#   STATE_DIR receives the SuperLink's database and log. HOST defaults to 0.0.0.0
#   (all interfaces), PORT to 9093. Runs in the foreground; stop it with Ctrl+C.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CREDS_DIR STATE_DIR [HOST] [PORT]" >&2; exit 2; fi
creds=$(cd "$1" && pwd); state=$2; host=${3:-0.0.0.0}; port=${4:-9093}
mkdir -p "$state"
cd "$state"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 HF_HUB_OFFLINE=1
exec flower-superlink \
  --ssl-ca-certfile "$creds/ca.crt" \
  --ssl-certfile "$creds/server.pem" \
  --ssl-keyfile "$creds/server.key" \
  --enable-supernode-auth \
  --disable-runtime-dependency-installation \
  --database "$PWD/state.db" \
  --log-file "$PWD/superlink.log" \
  --host "$host" --port "$port"
