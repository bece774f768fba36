#!/usr/bin/env bash
# Entrypoint of the compose replica (pg-2): seed from the primary when the data volume is empty,
# then hand over to the official image's entrypoint, which finds a cluster and starts postgres.
#
# The seeding is deploy/postgres/seed-replica.sh (the script the lab runs for pg-2): pg_basebackup
# -R over a physical slot, which writes standby.signal and a primary_conninfo that names a libpq
# passfile. That passfile is written here on every start, from the replication password secret,
# outside the data volume and readable by postgres only (libpq ignores a group/world-readable
# passfile), so no password is ever stored in postgresql.auto.conf.
set -euo pipefail
: "${REPLICATION_PASSWORD_FILE:?}"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export REPLICATION_PASSFILE="${REPLICATION_PASSFILE:-/var/lib/postgresql/replication.pgpass}"

# pgpass fields escape ':' and '\' with a backslash.
password="$(tr -d '\n' < "$REPLICATION_PASSWORD_FILE" | sed 's/[\\:]/\\&/g')"
( umask 077 && printf '*:*:*:replicator:%s\n' "$password" > "$REPLICATION_PASSFILE" )
unset password

if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$REPLICATION_PASSFILE"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  gosu postgres bash /opt/streamforge/postgres/seed-replica.sh
else
  bash /opt/streamforge/postgres/seed-replica.sh
fi

exec docker-entrypoint.sh "$@"
