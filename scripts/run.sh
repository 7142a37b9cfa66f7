#!/usr/bin/env bash
# Run the CoCoGen+ Flower app with `flwr run` on a local simulation SuperLink.
#   scripts/run.sh                                  # the embedded default (conf/config.yaml)
#   OVERRIDES="policy=vcfl game.gamma=1.0" scripts/run.sh   # Hydra overrides (or as $1)
# Results go to $COCOGEN_RESULTS (default: ./results); caches to $COCOGEN_CACHE (./.cache).
# The overrides are validated (Hydra) before anything starts and reach the ServerApp in a
# TOML file, never through a shell. This script starts its own local SuperLink (in memory,
# on free ports), records its PID, and stops that process group only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  echo "Every knob: python -m server_app.options (make options)."
  exit 0
fi
overrides="${1:-${OVERRIDES:-}}"

export FLWR_HOME="$PWD/.flwr"
source deploy/flower.env
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0  # Ray's coming default, and no warning of it (silos ask GPUs explicitly)
export COCOGEN_RESULTS="${COCOGEN_RESULTS:-$PWD/results}"
export COCOGEN_CACHE="${COCOGEN_CACHE:-$PWD/.cache}"
source .venv/bin/activate
mkdir -p "$FLWR_HOME"

run_dir=$(mktemp -d "$FLWR_HOME/run.XXXXXX")
export COCOGEN_RUN_RECORD="$run_dir/results-folder"  # the ServerApp (under this script's SuperLink) writes it
# Validate the overrides, write them as a TOML run config; read the organisations, the GPU
# share (the results folder, printed last, is learned from the ServerApp instead).
checked=$(python -m server_app.config check "$overrides" "$run_dir/run_config.toml") || exit 2
read -r num_orgs client_gpus _ <<< "$checked"  # the results folder comes from the ServerApp (COCOGEN_RUN_RECORD)
read -r http_port control_port < <(python -c '
import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s); 
print(*[s.getsockname()[1] for s in ports])')
export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT="$http_port" FLWR_LOCAL_CONTROL_API_PORT="$control_port"

cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-simulation"

[superlink.local-simulation]
address = ":local-in-memory:"
TOML

setsid flower-superlink --insecure --simulation --isolation subprocess \
  --control-api-address "127.0.0.1:$control_port" --host 127.0.0.1 --port "$http_port" \
  --log-file "$run_dir/superlink.log" > /dev/null 2>&1 &
echo $! > "$run_dir/superlink.pid"
stop_superlink() {
  pid=$(cat "$run_dir/superlink.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -- "-$pid" 2>/dev/null || true
  rm -rf "$run_dir"
}
trap stop_superlink EXIT
for _ in $(seq 150); do
  python -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$http_port/health', timeout=0.5)" \
    2>/dev/null && break
  kill -0 "$(cat "$run_dir/superlink.pid")" 2>/dev/null || { echo "flower-superlink exited; see $run_dir/superlink.log" >&2; exit 1; }
  sleep 0.2
done

# Flower's simulation logs a notice about its default federation size on every run (this
# script always sets the size): those three lines are left out of the console.
set +e
flwr run . --stream -c "$run_dir/run_config.toml" \
  --federation-config "num-supernodes=$num_orgs client-resources-num-cpus=1 client-resources-num-gpus=$client_gpus" \
  2>&1 | grep --line-buffered -v -e "default simulated SuperNodes changed" -e "To change federation size, use" \
    -e "flwr federation simulation-config @"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || exit "$status"
folder=$(cat "$COCOGEN_RUN_RECORD" 2>/dev/null || true)  # written by this run's ServerApp
if [ -z "$folder" ] || [ ! -e "$folder/summary.json" ]; then
  echo "The run wrote no results; see the log above." >&2
  exit 1
fi
echo "Results: $folder"  # the ServerApp's log above ends with the run's summary table
