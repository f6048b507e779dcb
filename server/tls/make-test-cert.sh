#!/usr/bin/env bash
# Makes a self-signed TLS certificate and key for trying the TLS listener on this machine:
# ECDSA P-256, valid 30 days, for localhost and 127.0.0.1. Test use only; never commit the key
# (the default output folder is under target/, which git ignores).
#   server/tls/make-test-cert.sh [OUT_DIR]      (default: target/tls-test)
# Writes OUT_DIR/cert.pem and OUT_DIR/key.pem (mode 0600) and prints the config lines to use.
# Needs openssl (Debian package `openssl`).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT_DIR="${1:-target/tls-test}"
mkdir -p "$OUT_DIR"
CERT="$OUT_DIR/cert.pem"
KEY="$OUT_DIR/key.pem"

umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$KEY" -out "$CERT" -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null
chmod 0644 "$CERT"

echo "certificate: $CERT"
echo "key:         $KEY"
echo "config:"
echo "  tls_cert_file = \"$(realpath "$CERT")\""
echo "  tls_key_file = \"$(realpath "$KEY")\""
echo "client: openssl s_client -connect 127.0.0.1:7879 -alpn holdfast/1 -CAfile $CERT"
