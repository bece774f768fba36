#!/usr/bin/env bash
# Seed a streaming replica from the primary when its data directory is empty, with
# `pg_basebackup -R` (writes standby.signal and primary_conninfo) over a physical slot.
# Does nothing when the directory already holds a cluster, so it is safe on every start.
#
# The official image runs this as the replica's entrypoint before `postgres`; the lab runs it
# to make pg-2. Environment:
#   PGDATA                      replica data directory
#   PRIMARY_HOST, PRIMARY_PORT  where the primary listens
#   REPLICATION_PASSFILE        a libpq passfile for role replicator (kept: the replica's
#                               primary_conninfo refers to it, so no password is written
#                               into postgresql.auto.conf)
#   REPLICA_SLOT                physical slot on the primary (e.g. pg_2)
#   PRIMARY_SSLMODE             optional libpq sslmode for replication (the lab: verify-full)
#   PRIMARY_SSLROOTCERT         optional CA file that verifies the primary's certificate
#                               (both land in primary_conninfo, so streaming uses TLS too)
#   WAIT_SECONDS                how long to wait for the primary (default 60)
set -euo pipefail
: "${PGDATA:?}" "${PRIMARY_HOST:?}" "${PRIMARY_PORT:?}" "${REPLICATION_PASSFILE:?}" "${REPLICA_SLOT:?}"

if [ -s "$PGDATA/PG_VERSION" ]; then
  echo "seed-replica: $PGDATA already holds a cluster; nothing to do"
  exit 0
fi

conninfo="host=$PRIMARY_HOST port=$PRIMARY_PORT user=replicator passfile=$REPLICATION_PASSFILE application_name=${REPLICA_NAME:-replica}"
if [ -n "${PRIMARY_SSLMODE:-}" ]; then conninfo="$conninfo sslmode=$PRIMARY_SSLMODE"; fi
if [ -n "${PRIMARY_SSLROOTCERT:-}" ]; then conninfo="$conninfo sslrootcert=$PRIMARY_SSLROOTCERT"; fi
deadline=$(( $(date +%s) + ${WAIT_SECONDS:-60} ))
until pg_isready -q -d "$conninfo"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "seed-replica: primary $PRIMARY_HOST:$PRIMARY_PORT not ready after ${WAIT_SECONDS:-60}s" >&2
    exit 1
  fi
  sleep 1
done

mkdir -p "$PGDATA"
chmod 0700 "$PGDATA"
echo "seed-replica: base backup from $PRIMARY_HOST:$PRIMARY_PORT over slot $REPLICA_SLOT"
pg_basebackup -d "$conninfo" -D "$PGDATA" -R -X stream -S "$REPLICA_SLOT" -c fast --progress
echo "seed-replica: done; standby.signal and primary_conninfo written"
