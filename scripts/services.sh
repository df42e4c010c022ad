#!/usr/bin/env bash
# Installs and starts what Ward's tests talk to, on a Debian machine, idempotently.
# PostgreSQL (127.0.0.1:5432, trust auth, database `test`), Redis and NATS with JetStream.
# rsyslog with its OpenSSL TLS driver is only installed: the syslog test runs its own rsyslogd.
# SoftHSM2 (the PKCS#11 peer of the `pkcs11` key store tests) is only installed: each test
# makes its own token directory and tokens.
# ClamAV's clamd (the malware-scanning peer of the files tests) is only installed: each test
# starts its own clamd with a test signature database (no signature download is possible).
# moto's server (the AWS KMS peer of the `aws-kms` key store tests, `moto_server`) is only
# installed, from PyPI: each test starts its own on a free loopback port.
set -euo pipefail

log() { echo "services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server  >/dev/null 2>&1 || need_apt+=(redis-server)
command -v nats-server   >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v rsyslogd      >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
compgen -G '/usr/lib/*/rsyslog/lmnsd_ossl.so' >/dev/null || need_apt+=(rsyslog-openssl)
{ command -v softhsm2-util >/dev/null 2>&1 && [ -e /usr/lib/softhsm/libsofthsm2.so ]; } || need_apt+=(softhsm2)
command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ] || need_apt+=(clamav-daemon)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
  log "installing moto[server]"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  # Debian's own python3 refuses installs outside a venv (PEP 668) unless told otherwise.
  python3 -m pip install --quiet 'moto[server]' \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]'
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  hash -r
  command -v moto_server >/dev/null 2>&1 || { log "moto_server is not on PATH after installing moto[server]"; exit 1; }
fi

port_open() { (echo >"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  log "port $1 did not open"; return 1
}

if ! port_open 5432; then
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_port 5432
fi
if ! port_open 6379; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi
if ! port_open 4222; then
  log "starting NATS"
  as_root mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222
fi

# The tests create their own databases on the server named by WARD_TEST_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/test); make sure that database exists.
if command -v psql >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null
fi

command -v cargo-nextest >/dev/null 2>&1 || { log "installing cargo-nextest"; cargo install --locked cargo-nextest; }
log "ready"
