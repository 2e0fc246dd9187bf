#!/usr/bin/env bash
# PgBouncer in transaction pooling mode in front of a PostgreSQL server.
#
#   pgbouncer.sh start     write the config and start PgBouncer (daemonised); no-op if running
#   pgbouncer.sh stop      stop it (SIGTERM: immediate shutdown)
#   pgbouncer.sh status    running or not, and SHOW POOLS from its admin console
#
# Settings (environment):
#   PGB_DIR          config, pid file, log                          (default: <script dir>/pgbouncer)
#   PGB_PORT         PgBouncer's port                               (default: 6432)
#   PGB_TARGET_HOST  PostgreSQL host                                (default: 127.0.0.1)
#   PGB_TARGET_PORT  PostgreSQL port                                (default: 5432)
#   PGB_POOL_MODE    transaction | session | statement              (default: transaction)
#   PGB_POOL_SIZE    server connections per (database, user)        (default: 20)
#   PGB_MAX_PREPARED max_prepared_statements (PgBouncer >= 1.21 only; empty: not written)
#   PGB_BIN          pgbouncer binary                               (default: pgbouncer)
#   PGB_OS_USER      OS user to run as when started as root         (default: postgres)
#
# Clients connect as any user that PostgreSQL trusts (auth_type = trust: PgBouncer checks no
# password, but the user must be listed in auth_file) to any database (the "*" fallback entry).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PGB_DIR="${PGB_DIR:-$HERE/pgbouncer}"
PGB_PORT="${PGB_PORT:-6432}"
PGB_TARGET_HOST="${PGB_TARGET_HOST:-127.0.0.1}"
PGB_TARGET_PORT="${PGB_TARGET_PORT:-5432}"
PGB_POOL_MODE="${PGB_POOL_MODE:-transaction}"
PGB_POOL_SIZE="${PGB_POOL_SIZE:-20}"
PGB_MAX_PREPARED="${PGB_MAX_PREPARED:-}"
PGB_BIN="${PGB_BIN:-pgbouncer}"
PGB_OS_USER="${PGB_OS_USER:-postgres}"
PID="$PGB_DIR/pgbouncer.pid"

as_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$PGB_OS_USER" -- "$@"; else "$@"; fi
}
. "$HERE/daemon.sh"
running() { daemon_running "$PID"; }

write_config() {
  mkdir -p "$PGB_DIR"
  if [ "$(id -u)" = 0 ]; then chown "$PGB_OS_USER" "$PGB_DIR"; fi
  # trust: no password is checked, but the user must appear in auth_file.
  as_user tee "$PGB_DIR/userlist.txt" >/dev/null <<EOF
"postgres" ""
EOF
  as_user tee "$PGB_DIR/pgbouncer.ini" >/dev/null <<EOF
[databases]
* = host=$PGB_TARGET_HOST port=$PGB_TARGET_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
admin_users = postgres
pool_mode = $PGB_POOL_MODE
default_pool_size = $PGB_POOL_SIZE
max_client_conn = 500
; postgres.js sends only user, database, client_encoding and application_name, all of which
; PgBouncer tracks itself; other drivers send these, which PgBouncer would refuse otherwise.
ignore_startup_parameters = extra_float_digits,options
; Transaction mode hands a server connection to another client after each transaction: session
; state must not leak to the next client.
server_reset_query =
server_check_delay = 10
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PID
${PGB_MAX_PREPARED:+max_prepared_statements = $PGB_MAX_PREPARED}
EOF
}

cmd_start() {
  running && return 0
  write_config
  as_user "$PGB_BIN" -d "$PGB_DIR/pgbouncer.ini"
  if wait_for_port "$PGB_PORT"; then
    echo "pgbouncer ($PGB_POOL_MODE) on :$PGB_PORT -> $PGB_TARGET_HOST:$PGB_TARGET_PORT"
    return 0
  fi
  echo "pgbouncer did not start; see $PGB_DIR/pgbouncer.log" >&2
  tail -5 "$PGB_DIR/pgbouncer.log" >&2 || true
  return 1
}

cmd_stop() { stop_daemon "$PID"; }

cmd_status() {
  if running; then
    echo "pgbouncer running (pid $(cat "$PID")) on :$PGB_PORT"
    psql -X -h 127.0.0.1 -p "$PGB_PORT" -U postgres -d pgbouncer -c 'show pools' 2>&1 || true
  else
    echo "pgbouncer not running"
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
