#!/usr/bin/env bash
# Install everything on a fresh machine: the Debian Fashion-MNIST package (when
# missing), a virtual environment in .venv, and this project with its test extra.
#   scripts/setup.sh               what a simulation needs
#   scripts/setup.sh --deployment  also openssl, ssh-keygen and nginx (deployment and its tests)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the data set; for deployment, openssl / ssh-keygen for credentials and
# nginx, the coordinator's proxy that gives silos the Fleet API only (deploy/superlink.sh).
missing=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
if [ "${1:-}" = "--deployment" ]; then
  command -v openssl >/dev/null || missing+=(openssl)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || true
  $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
