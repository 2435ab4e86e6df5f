#!/bin/bash
# Make a private certificate authority and one certificate for session
# servers, for trying TLS on libbaton-session's links (a test, a demo, a
# cluster that has no PKI yet).
#
#   scripts/session-certs.sh DIR [NAME|IP]...
#
# Writes into DIR (created if needed, mode 0700):
#   ca.pem           the authority's certificate: the clients' and servers'
#                    tls_ca_file (--tls-ca)
#   ca.key           its private key (keep it off the servers)
#   server.pem       a certificate signed by it, valid for every NAME and IP
#                    given (default: localhost, 127.0.0.1 and ::1): the
#                    servers' tls_cert_file (--tls-cert); it also serves as
#                    their client certificate on peer links
#   server.key       its private key: tls_key_file (--tls-key)
# Keys are ECDSA P-256; the certificates are valid for 30 days. An existing
# DIR/ca.key is reused, so more server certificates can be made from one
# authority: set BATON_CERT_NAME to write NAME.pem/NAME.key instead of
# server.pem/server.key.
set -eu
DIR=${1:?usage: session-certs.sh DIR [NAME|IP]...}
shift
command -v openssl >/dev/null || {
    echo "session-certs: needs the openssl command (apt-get install openssl)" >&2
    exit 1
}
[ $# -gt 0 ] || set -- localhost 127.0.0.1 ::1
NAME=${BATON_CERT_NAME:-server}
san=
for n in "$@"; do
    case $n in
    *[!0-9a-fA-F.:]* | "") san="$san,DNS:$n" ;;
    *) san="$san,IP:$n" ;;
    esac
done
san=${san#,}
mkdir -p "$DIR"
chmod 700 "$DIR"
umask 077
if [ ! -f "$DIR/ca.key" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -days 30 -subj "/CN=baton-session test CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>"$DIR/.openssl.err" || { cat "$DIR/.openssl.err" >&2; exit 1; }
fi
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$DIR/$NAME.key" -out "$DIR/$NAME.csr" -subj "/CN=$1" 2>"$DIR/.openssl.err" ||
    { cat "$DIR/.openssl.err" >&2; exit 1; }
printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" >"$DIR/$NAME.ext"
openssl x509 -req -in "$DIR/$NAME.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$DIR/$NAME.ext" -out "$DIR/$NAME.pem" 2>"$DIR/.openssl.err" ||
    { cat "$DIR/.openssl.err" >&2; exit 1; }
rm -f "$DIR/$NAME.csr" "$DIR/$NAME.ext" "$DIR/.openssl.err" "$DIR/ca.srl"
chmod 644 "$DIR/ca.pem" "$DIR/$NAME.pem"
