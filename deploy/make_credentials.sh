#!/usr/bin/env bash
# Create the credentials of a CoCoGen+ federation (for a test or a first deployment;
# production PKI should follow your organisation's procedures):
#   - a certificate authority (ca.crt, ca.key: keep ca.key offline),
#   - the SuperLink's TLS key and certificate, valid for the given host names / IPs,
#   - one EC key pair (ECDSA P-384, OpenSSH format, as `flwr supernode register` expects)
#     per SuperNode, for SuperNode authentication (needs ssh-keygen: Debian openssh-client).
# Usage: deploy/make_credentials.sh OUT_DIR "SUPERLINK_HOSTS" SILO [SILO ...]
#   e.g. deploy/make_credentials.sh creds "coordinator.example.org 10.0.0.5" hospital-a hospital-b
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 OUT_DIR \"SUPERLINK_HOSTS\" SILO [SILO ...]" >&2
  exit 2
fi
out=$1; hosts=$2; shift 2
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

for silo in "$@"; do
  rm -f "$silo.key" "$silo.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "$silo" -f "$silo.key"   # writes $silo.key and $silo.key.pub
  mv "$silo.key.pub" "$silo.pub"
done
chmod 600 ca.key server.key
echo "credentials in $(pwd): ca.crt, server.pem/server.key (SAN $san), and $* key pairs"
