# Two commands set up everything on a fresh machine:
#   make run    install, then run the main job (flwr run on the embedded default)
#   make test   install, then run the test suite
# Hydra overrides: make run OVERRIDES="policy=vcfl game.gamma=1.0". They reach
# scripts/run.sh through the environment (never through a shell command line), and the
# script validates them before anything starts.
.PHONY: setup run test
export OVERRIDES

setup:
	scripts/setup.sh

run: setup
	scripts/run.sh

test: setup
	HF_HUB_OFFLINE=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 .venv/bin/python -m pytest
