#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are running for the tests,
# installing them from Debian's packages when they are missing. Safe to run repeatedly.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  return 1
}

ensure_postgres() {
  port_open 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "==> installing PostgreSQL"
    apt_install postgresql
  fi
  echo "==> starting PostgreSQL"
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 || { echo "PostgreSQL did not start" >&2; return 1; }
  # Tests connect as postgres over TCP without a password, as on the CI machine.
  if ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\).*/\1trust/' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
}

ensure_redis() {
  port_open 6379 && return 0
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "==> installing Redis"
    apt_install redis-server
  fi
  echo "==> starting Redis"
  mkdir -p /tmp/mjgate-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/mjgate-redis --logfile /tmp/mjgate-redis/redis.log
  wait_port 6379 || { echo "Redis did not start" >&2; return 1; }
}

ensure_postgres
ensure_redis

# The database the test settings name (pytest creates test_mjgate beside it). Without the psql
# client Django still manages: it creates the test database through the "postgres" database.
if command -v psql >/dev/null 2>&1 &&
  ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='mjgate'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE mjgate" >/dev/null
fi
