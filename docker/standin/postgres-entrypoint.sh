#!/usr/bin/env bash
# TEST STAND-IN for the official postgres image's entrypoint (docker/standin/build-standin-bases.sh): on an empty
# data folder it runs initdb with POSTGRES_USER / POSTGRES_PASSWORD and creates POSTGRES_DB, then runs the server
# listening on all addresses with password authentication. Debian's PostgreSQL 15, not the postgres:16 image.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
data=${PGDATA:-/var/lib/postgresql/data}
bins=(/usr/lib/postgresql/*/bin)
bin=${bins[-1]}
mkdir -p "$data" /var/run/postgresql
chown -R postgres:postgres "$data" /var/run/postgresql
chmod 0700 "$data"
as_pg() { runuser -u postgres -- "$@"; }
if [[ ! -s $data/PG_VERSION ]]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  chown postgres "$pwfile"
  # UTF8 as the official image (its default locale is en_US.utf8); the C locale would give SQL_ASCII.
  as_pg "$bin/initdb" -D "$data" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
  as_pg "$bin/pg_ctl" -D "$data" -o "-c listen_addresses=''" -w start >/dev/null
  if [[ $db != postgres ]]; then as_pg "$bin/psql" -U "$user" -d postgres -qc "CREATE DATABASE \"$db\""; fi
  as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  echo "postgres stand-in: initialised $data (user $user, database $db)"
fi
exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses='*'
