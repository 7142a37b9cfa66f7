#!/usr/bin/env bash
# Run by each organisation on its own machine: make the silo's SuperNode key pair
# (ECDSA P-384, OpenSSH format, as `flwr supernode register` expects). Send only
# NAME.pub to the coordinator; NAME.key never leaves this machine.
# Usage: deploy/make_silo_key.sh OUT_DIR NAME     (needs ssh-keygen: Debian openssh-client)
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: $0 OUT_DIR NAME" >&2; exit 2; fi
mkdir -p "$1"
key=$1/$2.key
[ -e "$key" ] && { echo "$key exists: not overwriting a silo key" >&2; exit 2; }
ssh-keygen -q -t ecdsa -b 384 -N "" -C "$2" -f "$key"   # writes NAME.key and NAME.key.pub
mv "$key.pub" "$1/$2.pub"
chmod 600 "$key"
echo "$key (keep it here) and $1/$2.pub (send it to the coordinator)"
