#!/usr/bin/env bash
# Run the CoCoGen+ Flower app with `flwr run` on the local simulation engine.
#   scripts/run.sh                         # the embedded default (conf/config.yaml)
#   scripts/run.sh "policy=vcfl game.gamma=1.0"   # Hydra overrides
# Results go to $COCOGEN_RESULTS (default: ./results); caches to $COCOGEN_CACHE (./.cache).
set -euo pipefail
cd "$(dirname "$0")/.."
overrides="${1:-}"

export FLWR_HOME="$PWD/.flwr"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export HF_HUB_OFFLINE=1
export COCOGEN_RESULTS="${COCOGEN_RESULTS:-$PWD/results}"
export COCOGEN_CACHE="${COCOGEN_CACHE:-$PWD/.cache}"
source .venv/bin/activate

num_orgs=$(python -c 'import sys; from server_app.config import compose_config; print(compose_config(sys.argv[1]).federation.num_orgs)' "$overrides")
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-simulation"

[superlink.local-simulation]
address = ":local:"
options.num-supernodes = $num_orgs
options.backend.client-resources.num-cpus = 1
options.backend.client-resources.num-gpus = 0.0
TOML

stop_superlink() { pkill -f "$FLWR_HOME/local-superlink" 2>/dev/null || true; }
trap stop_superlink EXIT
stop_superlink

before=$(ls -1 "$COCOGEN_RESULTS" 2>/dev/null | sort || true)
flwr run . --stream -c "overrides=\"$overrides\""
latest=$(comm -13 <(echo "$before") <(ls -1 "$COCOGEN_RESULTS" | sort) | tail -n 1)
if [ -z "$latest" ] || [ ! -e "$COCOGEN_RESULTS/$latest/summary.json" ]; then
  echo "The run wrote no results; see the log above." >&2
  exit 1
fi
python -m server_app.report "$COCOGEN_RESULTS/$latest"
