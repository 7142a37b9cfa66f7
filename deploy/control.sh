#!/usr/bin/env bash
# Run a command, usually the operator's `flwr` CLI, that reaches the SuperLink's Control
# API as 127.0.0.1:$COCOGEN_CONTROL_PORT (default 9094), on the coordinator.
# Usage: deploy/control.sh CONTROL_SOCKET COMMAND [ARGS...]
#   e.g. deploy/control.sh /var/lib/cocogen-superlink/sockets/control.sock flwr ls cocogen
# deploy/superlink.sh offers the Control API only as CONTROL_SOCKET, which only its own
# account may open. The command runs in a network namespace of its own, where a relay
# makes that socket 127.0.0.1:PORT for it alone (no other process of the machine can
# connect there); the relay stops with the command. From another machine, forward the
# socket instead: ssh -L 9094:CONTROL_SOCKET coordinator.example.org
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CONTROL_SOCKET COMMAND [ARGS...]" >&2; exit 2; fi
folder=$(cd "$(dirname "$1")" 2>/dev/null && pwd) || {
  echo "$1: cannot enter its folder: only the coordinator's account may use the control socket" >&2; exit 2; }
socket=$folder/$(basename "$1")
shift
[ -S "$socket" ] || { echo "$socket: no control socket there (deploy/superlink.sh makes it)" >&2; exit 2; }
[ -r "$socket" ] && [ -w "$socket" ] || {
  echo "$socket: permission denied: only the coordinator's account may use the control socket" >&2; exit 2; }
port=${COCOGEN_CONTROL_PORT:-9094}
[[ $port =~ ^[0-9]{1,5}$ ]] || { echo "COCOGEN_CONTROL_PORT must be a port number, got $port" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
flwr_bin=$(command -v flwr) || { echo "flwr not found: activate the project's .venv" >&2; exit 2; }
python=$(dirname "$flwr_bin")/python
source "$here/flower.env"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
if [ "$(id -u)" -eq 0 ]; then isolated=(unshare --net); else isolated=(unshare --user --map-root-user --net); fi
export COCOGEN_CONTROL_SOCKET=$socket COCOGEN_CONTROL_PORT=$port COCOGEN_CONTROL_PYTHON=$python
exec "${isolated[@]}" bash -c '
  "$COCOGEN_CONTROL_PYTHON" -P -m deploy.relay loopback-up
  "$COCOGEN_CONTROL_PYTHON" -P -m deploy.relay tcp-to-unix "127.0.0.1:$COCOGEN_CONTROL_PORT" "$COCOGEN_CONTROL_SOCKET" \
    > /dev/null &
  relay=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$COCOGEN_CONTROL_PORT") 2>/dev/null && break
    sleep 0.05
  done
  status=0
  "$@" || status=$?
  kill "$relay" 2>/dev/null
  exit "$status"' control "$@"
