#!/bin/sh
# Certificates and the SASL password for the SASL_SSL variant of docker-compose (docker-compose.sasl-ssl.yml).
# Writes into $1 (default ./out), once: a throwaway CA, the broker's certificate and key as one PEM
# (Apache Kafka reads PEM key stores), a client certificate for mutual TLS, and the broker's user file
# with the password of the service's Kafka user (from $KAFKA_SASL_PASSWORD_FILE, else random). Safe to
# run again: existing files are kept. Replace the CA with your own for anything but a trial.
set -eu
out="${1:-./out}"
mkdir -p "$out"
cd "$out"
days=825
if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=suspensions trial CA" \
    -keyout ca.key -out ca.pem 2>/dev/null
fi
issue() { # name, subject alternative names
  [ -f "$1.pem" ] && return 0
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue kafka "DNS:kafka,DNS:localhost,IP:127.0.0.1"
issue client "DNS:suspensions-client"
# Apache Kafka's PEM key store: the private key and the certificate chain in one file.
cat kafka.key kafka.pem ca.pem > kafka.keystore.pem
# The service user's password: the compose secret when given (KAFKA_SASL_PASSWORD_FILE, so the broker
# and the service read the same file's value), else a random one made here once.
if [ -n "${KAFKA_SASL_PASSWORD_FILE:-}" ]; then
  tr -d '\r\n' < "$KAFKA_SASL_PASSWORD_FILE" > client-password
elif [ ! -f client-password ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > client-password
fi
# The broker's users, read through Kafka's FileConfigProvider (never in the compose file).
printf 'suspensions=%s\n' "$(cat client-password)" > users.properties
chmod 0644 ca.pem kafka.pem client.pem kafka.keystore.pem
chmod 0640 ca.key kafka.key client.key client-password users.properties
# The broker (uid 1000 in apache/kafka) and the service (uid 10001) read what they need.
chown 1000:10001 kafka.key kafka.keystore.pem users.properties client-password client.key 2>/dev/null || true
echo "certificates and password in $(pwd)"
