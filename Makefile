# Two commands set up everything on a fresh machine:
#   make run    install, then run the main job (flwr run on the embedded default)
#   make test   install, then run the test suite (every tier)
# Between edits:
#   make test-fast  the fast tier: no end-to-end runs (marker e2e), no deployment stack (deployment)
#   make lint       ruff check of the whole repository (CI runs it before make test)
# Hydra overrides: make run OVERRIDES="policy=vcfl game.gamma=1.0". They reach
# scripts/run.sh through the environment (never through a shell command line), and the
# script validates them before anything starts.
#   make options    every knob: the run-config keys, then every conf/ key, with default and help
.PHONY: setup run test test-fast lint options
export OVERRIDES
TEST_ENV = HF_HUB_OFFLINE=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1

setup:
	scripts/setup.sh

run: setup
	scripts/run.sh

test:
	scripts/setup.sh --deployment
	$(TEST_ENV) .venv/bin/python -m pytest

test-fast: setup
	$(TEST_ENV) .venv/bin/python -m pytest -m "not e2e and not deployment"

lint: setup
	.venv/bin/ruff check .

options: setup
	.venv/bin/python -m server_app.options
