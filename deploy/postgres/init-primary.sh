#!/usr/bin/env bash
# Initialise the PostgreSQL primary: replication role, application and sfops roles, the
# database, the replica's physical slot and the pg_hba rules.
#
# One script for both worlds: the official `postgres` image runs it from
# /docker-entrypoint-initdb.d (as the postgres user, server on a local socket), and the lab
# runs it against pg-1. Idempotent.
#
# Environment (passwords come from *_FILE paths; they are never echoed):
#   PGHOST, PGPORT, PGUSER            how psql reaches the server as a superuser
#   PGDATA                            data directory (pg_hba.conf is appended there)
#   REPLICATION_PASSWORD_FILE         password of role "replicator"
#   APP_PASSWORD_FILE                 password of role "streamforge" (the API service)
#   SFOPS_PASSWORD_FILE               password of role "sfops" (the control plane's actions);
#                                     optional
#   SFOPS_MONITOR_PASSWORD_FILE       password of role "sfops_monitor" (the control plane's
#                                     polls: pg_monitor, read-only sessions); optional
#   REPLICA_SLOTS                     space-separated physical slot names (default "pg_2")
#   HBA_ADDRESS                       address allowed to connect (default 127.0.0.1/32;
#                                     compose uses the service network, e.g. samenet)
#   HBA_TYPE                          "host" (default: TLS optional) or "hostssl" (TLS
#                                     required, for clients and replication alike: the lab;
#                                     needs ssl = on and a server certificate)
set -euo pipefail

: "${PGDATA:?PGDATA must name the data directory}"
: "${REPLICATION_PASSWORD_FILE:?}"
: "${APP_PASSWORD_FILE:?}"
REPLICA_SLOTS="${REPLICA_SLOTS:-pg_2}"
HBA_ADDRESS="${HBA_ADDRESS:-127.0.0.1/32}"
HBA_TYPE="${HBA_TYPE:-host}"
case "$HBA_TYPE" in host|hostssl) ;; *) echo "HBA_TYPE must be host or hostssl" >&2; exit 2;; esac

read_secret() { tr -d '\n' < "$1"; }
psql_super() { psql -v ON_ERROR_STOP=1 --no-psqlrc -q -d postgres "$@"; }

# Passwords are passed as psql variables and quoted by psql (:'var'), never spliced into SQL.
psql_super \
  -v repl_pw="$(read_secret "$REPLICATION_PASSWORD_FILE")" \
  -v app_pw="$(read_secret "$APP_PASSWORD_FILE")" \
  -v sfops_pw="$( [ -n "${SFOPS_PASSWORD_FILE:-}" ] && read_secret "$SFOPS_PASSWORD_FILE" )" \
  -v monitor_pw="$( [ -n "${SFOPS_MONITOR_PASSWORD_FILE:-}" ] && read_secret "$SFOPS_MONITOR_PASSWORD_FILE" )" <<'SQL'
SELECT format('CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %L', :'repl_pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') \gexec
SELECT format('ALTER ROLE replicator WITH REPLICATION LOGIN PASSWORD %L', :'repl_pw') \gexec
SELECT format('CREATE ROLE streamforge WITH LOGIN PASSWORD %L', :'app_pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'streamforge') \gexec
SELECT format('ALTER ROLE streamforge WITH LOGIN PASSWORD %L', :'app_pw') \gexec
-- sfops's actions need pg_promote, pg_wal_replay_resume, CHECKPOINT, slots and pg_rewind's
-- source: the operator role "sfops" is a superuser. Its polls use "sfops_monitor" below.
SELECT format('CREATE ROLE sfops WITH SUPERUSER LOGIN PASSWORD %L', :'sfops_pw')
 WHERE :'sfops_pw' <> '' AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sfops') \gexec
SELECT format('ALTER ROLE sfops WITH SUPERUSER LOGIN PASSWORD %L', :'sfops_pw')
 WHERE :'sfops_pw' <> '' \gexec
-- What sfops polls with: no superuser, pg_monitor (pg_stat_replication, pg_stat_wal_receiver,
-- pg_ls_waldir(), superuser-only settings such as primary_conninfo), and every transaction
-- read-only unless it says otherwise (sfops also asks for that when it connects).
SELECT format('CREATE ROLE sfops_monitor WITH LOGIN NOSUPERUSER PASSWORD %L', :'monitor_pw')
 WHERE :'monitor_pw' <> '' AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sfops_monitor') \gexec
SELECT format('ALTER ROLE sfops_monitor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD %L', :'monitor_pw')
 WHERE :'monitor_pw' <> '' \gexec
SELECT 'GRANT pg_monitor TO sfops_monitor' WHERE :'monitor_pw' <> '' \gexec
SELECT 'ALTER ROLE sfops_monitor SET default_transaction_read_only = on'
 WHERE :'monitor_pw' <> '' \gexec
SELECT 'CREATE DATABASE streamforge OWNER streamforge'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'streamforge') \gexec
SQL

for slot in $REPLICA_SLOTS; do
  psql_super -v slot="$slot" <<'SQL'
SELECT pg_create_physical_replication_slot(:'slot')
 WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot');
SQL
done

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f "$script_dir/schema.sql" ]; then
  psql -v ON_ERROR_STOP=1 --no-psqlrc -q -d streamforge -c 'SET ROLE streamforge' -f "$script_dir/schema.sql"
fi

marker="# streamforge replication rules"
if ! grep -qF "$marker" "$PGDATA/pg_hba.conf"; then
  cat >> "$PGDATA/pg_hba.conf" <<HBA
$marker
$HBA_TYPE replication replicator $HBA_ADDRESS scram-sha-256
$HBA_TYPE all         all        $HBA_ADDRESS scram-sha-256
HBA
  psql_super -c 'SELECT pg_reload_conf()' > /dev/null
fi
echo "init-primary: roles, database, slots ($REPLICA_SLOTS) and pg_hba rules in place"
