# Two commands set up everything on a fresh machine:
#   make run    install, then run the main job (flwr run on the embedded default)
#   make test   install, then run the test suite
.PHONY: setup run test
setup:
	scripts/setup.sh

run: setup
	scripts/run.sh "$(OVERRIDES)"

test: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest
