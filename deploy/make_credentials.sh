#!/usr/bin/env bash
# Create the coordinator's credentials (for a test or a first deployment; production
# PKI should follow your organisation's procedures):
#   - a certificate authority: ca.crt in OUT_DIR (give it to silos); its key ca.key goes
#     to CA_DIR (default OUT_DIR-ca), never beside the coordinator's keys: move it offline,
#   - the coordinator's TLS key and certificate, valid for the given host names / IPs
#     (and localhost / 127.0.0.1, where the operator reaches the SuperLink itself).
# The operator's app-signing key is not made here either: it is made and kept on the
# operator's workstation (python -m deploy.signing keygen), never on the coordinator.
# Silo keys are not made here: each organisation runs deploy/make_silo_key.sh on its
# own machine and sends only the public key. Every host is checked first (an IPv4 or
# IPv6 address, or a DNS name); on any failure nothing is left behind.
# Usage: deploy/make_credentials.sh OUT_DIR "SUPERLINK_HOSTS" [CA_DIR]
#   e.g. deploy/make_credentials.sh creds "coordinator.example.org 10.0.0.5"
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 OUT_DIR \"SUPERLINK_HOSTS\" [CA_DIR]" >&2
  exit 2
fi
out=$1; hosts=$2; ca_dir=${3:-$1-ca}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${COCOGEN_PYTHON:-python3}
for target in "$out" "$ca_dir"; do
  if [ -e "$target" ] && [ -n "$(ls -A "$target" 2>/dev/null)" ]; then
    echo "$target exists and is not empty; choose a new folder" >&2; exit 2
  fi
done

san="DNS:localhost,IP:127.0.0.1"
for host in $hosts; do
  kind=$("$python" - "$host" <<'PY'
import ipaddress, re, sys
host = sys.argv[1]
try:
    ipaddress.ip_address(host)
    print("IP")
except ValueError:
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    names = re.fullmatch(rf"{label}(\.{label})*\.?", host) and not re.fullmatch(r"[0-9.]+", host)
    print("DNS" if names and len(host) <= 253 else "")
PY
)
  [ -n "$kind" ] || { echo "not an IP address or a DNS name: $host" >&2; exit 2; }
  san="$san,$kind:$host"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  openssl genrsa -out ca.key 4096 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=cocogen-federation-ca" -out ca.crt
  openssl genrsa -out server.key 4096 2>/dev/null
  openssl req -new -key server.key -subj "/CN=cocogen-superlink" -out server.csr
  printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" \
    "$san" > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 \
    -extfile server.ext -out server.pem 2>/dev/null
  rm -f server.csr server.ext ca.srl
  chmod 600 ca.key server.key
)
mkdir -p "$out" "$ca_dir"
mv "$work/ca.key" "$ca_dir/ca.key"
mv "$work"/* "$out"/
echo "credentials in $(cd "$out" && pwd): ca.crt (give to silos), server.pem/server.key (SAN $san);" \
  "the CA's key in $(cd "$ca_dir" && pwd)/ca.key (move it offline)"
