#!/bin/bash
# Makes test certificates for the TLS tests (openssl CLI only):
#
#   ca.pem ca.key      a test CA ("duplex test CA"); trust it with ca_file
#   cert.pem key.pem   server cert for DNS:localhost, IP:127.0.0.1, IP:::1,
#                      signed by the CA, valid 30 days
#   chain.pem          cert.pem followed by ca.pem (a full chain file)
#   expired.pem        like cert.pem, but expired in 2020 (same key.pem)
#   self.pem           like cert.pem, but self-signed   (same key.pem)
#   other.pem          signed by the CA, for DNS:other.example only (same key)
#   both.pem           cert.pem and key.pem in one file
#
# Every leaf uses key.pem, so a server takes any of them with --key key.pem.
# Keys are EC P-256, unencrypted. Existing files in DIR are overwritten.
#
# Usage: make_certs.sh DIR
set -euo pipefail

dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ossl() { openssl "$@" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; }

# `openssl ca` is the one CLI path that can backdate a certificate (x509
# -days cannot); it wants a little database.
touch "$work/index.txt"
echo 1000 >"$work/serial"
cat >"$work/ca.cnf" <<EOF
[ca]
default_ca = test
[test]
dir = $work
database = $work/index.txt
serial = $work/serial
new_certs_dir = $work
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
[other]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:other.example
EOF

keygen() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

keygen "$dir/ca.key"
ossl req -new -x509 -key "$dir/ca.key" -subj "/CN=duplex test CA" -days 30 \
  -config "$work/ca.cnf" -extensions ca_ext -out "$dir/ca.pem"

keygen "$dir/key.pem"
ossl req -new -key "$dir/key.pem" -subj "/CN=localhost" -out "$work/leaf.csr"
ossl req -new -key "$dir/key.pem" -subj "/CN=other.example" \
  -out "$work/other.csr"

# sign CSR OUT EXTENSIONS START END
sign() {
  ossl ca -batch -config "$work/ca.cnf" -cert "$dir/ca.pem" \
    -keyfile "$dir/ca.key" -in "$1" -out "$2" -extensions "$3" \
    -startdate "$4" -enddate "$5" -notext
}
start=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
end=$(date -u -d '+30 days' +%Y%m%d%H%M%SZ)
sign "$work/leaf.csr" "$dir/cert.pem" leaf "$start" "$end"
sign "$work/leaf.csr" "$dir/expired.pem" leaf 20200101000000Z 20200102000000Z
sign "$work/other.csr" "$dir/other.pem" other "$start" "$end"

ossl req -new -x509 -key "$dir/key.pem" -subj "/CN=localhost" -days 30 \
  -config "$work/ca.cnf" -extensions leaf -out "$dir/self.pem"

cat "$dir/cert.pem" "$dir/ca.pem" >"$dir/chain.pem"
cat "$dir/cert.pem" "$dir/key.pem" >"$dir/both.pem"
chmod 600 "$dir"/*.key "$dir/key.pem" "$dir/both.pem"
