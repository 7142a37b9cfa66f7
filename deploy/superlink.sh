#!/usr/bin/env bash
# Start the coordinator: the SuperLink in a network namespace of its own, reachable only
# through two Unix sockets, and in front of it an nginx reverse proxy that gives silos the
# Fleet API and nothing else.
# Usage: deploy/superlink.sh CREDS_DIR STATE_DIR [HOST] [PORT] [CONTROL_PORT]
#   CREDS_DIR     holds ca.crt, server.pem, server.key (deploy/make_credentials.sh)
#   STATE_DIR     receives the SuperLink's database and log, the proxy's config and logs,
#                 and sockets/ (mode 0700): fleet.sock (for nginx) and control.sock, the
#                 Control API (flwr run/ls/stop, flwr supernode register/unregister) for
#                 this account only: deploy/control.sh here, `ssh -L` from elsewhere
#   HOST:PORT     what silos dial (default 0.0.0.0:9093): nginx, TLS, POST to
#                 /v1/fleet/<endpoint> only; everything else is answered 403
#   CONTROL_PORT  the SuperLink's port inside its namespace (default PORT+1); no other
#                 process of this machine can connect to it
# Flower 1.42 serves the Fleet, Control and runtime APIs on one port and its Control API
# authenticates nobody without an enterprise plugin: the proxy keeps silos out of the
# control plane, and the namespace keeps the machine's other accounts out (a socket
# file's permissions decide who may connect). Run by root, or by an account that may
# make user namespaces (unshare --user). The proxy also bounds what one address may cost the coordinator: a request
# body of at most COCOGEN_PROXY_BODY_LIMIT (default 16m: the largest legitimate one, a
# silo's warm-up reply with the default generator, is 2.4 MiB; at most 64m), 32 open
# requests and 20 requests a second (bursts of 200) per address, and 10 s to send its
# headers (the TLS handshake included) or a stalled body. Runs in the foreground; Ctrl+C
# (or SIGTERM) stops both processes.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CREDS_DIR STATE_DIR [HOST] [PORT] [CONTROL_PORT]" >&2; exit 2; fi
creds=$(cd "$1" && pwd); mkdir -p "$2/nginx"; state=$(cd "$2" && pwd)
host=${3:-0.0.0.0}; port=${4:-9093}; control_port=${5:-$((port + 1))}
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "nginx not found (scripts/setup.sh installs Debian's nginx-light)" >&2; exit 2; }
[[ $host == *:* ]] && listen="[$host]:$port" || listen="$host:$port"
body_limit=${COCOGEN_PROXY_BODY_LIMIT:-16m}
[[ $body_limit =~ ^([1-9]|[1-5][0-9]|6[0-4])m$ ]] || {
  echo "COCOGEN_PROXY_BODY_LIMIT must be 1m to 64m, got $body_limit" >&2; exit 2; }
source "$(dirname "$0")/flower.env"

proxy_dir=$state/nginx
sockets=$state/sockets
mkdir -p "$sockets" && chmod 700 "$sockets"
# Started by root, nginx's workers would drop to nobody, who cannot enter sockets/: they
# stay this account, as they do when an unprivileged account starts nginx.
[ "$(id -u)" -eq 0 ] && workers="user root root;" || workers=""
cat > "$proxy_dir/nginx.conf" <<CONF
$workers
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
pid $proxy_dir/nginx.pid;
error_log $proxy_dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log $proxy_dir/access.log;
  client_body_temp_path $proxy_dir/body;
  proxy_temp_path $proxy_dir/proxy;
  fastcgi_temp_path $proxy_dir/fastcgi;
  uwsgi_temp_path $proxy_dir/uwsgi;
  scgi_temp_path $proxy_dir/scgi;
  server_tokens off;
  client_max_body_size $body_limit;
  client_header_timeout 10s;
  client_body_timeout 10s;
  send_timeout 60s;
  keepalive_timeout 60s;
  limit_conn_zone \$binary_remote_addr zone=per_address:1m;
  limit_req_zone \$binary_remote_addr zone=requests:1m rate=20r/s;
  limit_conn_status 429;
  limit_req_status 429;
  server {
    listen $listen ssl;
    ssl_certificate $creds/server.pem;
    ssl_certificate_key $creds/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    # The Fleet API's endpoints (register-node, pull-messages, get-fab, ...): one path
    # segment of lower-case letters and dashes, matched on the normalised URI.
    location ~ ^/v1/fleet/[a-z-]+\$ {
      limit_except POST { deny all; }
      limit_conn per_address 32;
      limit_req zone=requests burst=200 nodelay;
      proxy_pass https://unix:$sockets/fleet.sock;
      proxy_http_version 1.1;
      proxy_ssl_trusted_certificate $creds/ca.crt;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }
    location / { return 403; }
  }
}
CONF
"$nginx" -q -t -c "$proxy_dir/nginx.conf" -p "$proxy_dir"

python=$(dirname "$(command -v flower-superlink)")/python
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
if [ "$(id -u)" -eq 0 ]; then isolated=(unshare --net); else isolated=(unshare --user --map-root-user --net); fi
"${isolated[@]}" true 2>/dev/null || {
  echo "cannot make a network namespace (${isolated[*]}): run as root, or enable unprivileged user namespaces" >&2; exit 2; }
export COCOGEN_LINK_SOCKETS=$sockets COCOGEN_LINK_PORT=$control_port COCOGEN_LINK_PYTHON=$python
export COCOGEN_LINK_CREDS=$creds COCOGEN_LINK_STATE=$state
"$nginx" -c "$proxy_dir/nginx.conf" -p "$proxy_dir" &
proxy=$!
"${isolated[@]}" bash -c '
  set -euo pipefail
  "$COCOGEN_LINK_PYTHON" -P -m deploy.relay loopback-up
  flower-superlink \
    --ssl-ca-certfile "$COCOGEN_LINK_CREDS/ca.crt" \
    --ssl-certfile "$COCOGEN_LINK_CREDS/server.pem" \
    --ssl-keyfile "$COCOGEN_LINK_CREDS/server.key" \
    --enable-supernode-auth \
    --disable-runtime-dependency-installation \
    --database "$COCOGEN_LINK_STATE/state.db" \
    --log-file "$COCOGEN_LINK_STATE/superlink.log" \
    --host 127.0.0.1 --port "$COCOGEN_LINK_PORT" &
  link=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$COCOGEN_LINK_PORT") 2>/dev/null; do  # the sockets appear once it serves
    kill -0 "$link" 2>/dev/null || exit 1
    sleep 0.2
  done
  "$COCOGEN_LINK_PYTHON" -P -m deploy.relay unix-to-tcp "$COCOGEN_LINK_SOCKETS/fleet.sock" "127.0.0.1:$COCOGEN_LINK_PORT" \
    "$COCOGEN_LINK_SOCKETS/control.sock" "127.0.0.1:$COCOGEN_LINK_PORT" &
  relay=$!
  trap "kill $link $relay 2>/dev/null; wait 2>/dev/null" EXIT INT TERM
  wait -n "$link" "$relay"' &
link=$!
trap 'kill $proxy $link 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
wait -n "$proxy" "$link"
