#!/usr/bin/env bash
# Create the coordinator's credentials (for a test or a first deployment; production
# PKI should follow your organisation's procedures):
#   - a certificate authority (ca.crt, ca.key: keep ca.key offline),
#   - the coordinator's TLS key and certificate, valid for the given host names / IPs
#     (and localhost / 127.0.0.1, where the operator reaches the SuperLink itself),
#   - the operator's app-signing key (app-signing.key, Ed25519) and the
#     trusted-entities.yaml every silo needs (python -m deploy.signing keygen).
# Silo keys are not made here: each organisation runs deploy/make_silo_key.sh on its
# own machine and sends only the public key.
# Usage: deploy/make_credentials.sh OUT_DIR "SUPERLINK_HOSTS"
#   e.g. deploy/make_credentials.sh creds "coordinator.example.org 10.0.0.5"
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 OUT_DIR \"SUPERLINK_HOSTS\"" >&2
  exit 2
fi
out=$1; hosts=$2
here=$(cd "$(dirname "$0")/.." && pwd)
python=${COCOGEN_PYTHON:-python3}
mkdir -p "$out"
cd "$out"

san="DNS:localhost,IP:127.0.0.1"
for host in $hosts; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="$san,IP:$host"; else san="$san,DNS:$host"; fi
done

openssl genrsa -out ca.key 4096 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=cocogen-federation-ca" -out ca.crt
openssl genrsa -out server.key 4096 2>/dev/null
openssl req -new -key server.key -subj "/CN=cocogen-superlink" -out server.csr
printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" \
  "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext

PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m deploy.signing keygen . >/dev/null
chmod 600 ca.key server.key
echo "credentials in $(pwd): ca.crt (give to silos), server.pem/server.key (SAN $san), app-signing.key (keep), trusted-entities.yaml (give to silos)"
