#!/usr/bin/env bash
# A PostgreSQL primary with a streaming-replication standby on loopback ports, for failover tests.
#
#   primary-standby.sh start          initdb + start the primary, pg_basebackup -R + start the standby
#   primary-standby.sh stop           stop both (fast shutdown); data directories are kept
#   primary-standby.sh kill-primary   SIGKILL the primary's postmaster and all its backends (a host crash)
#   primary-standby.sh promote        pg_ctl promote the standby (it becomes a read-write primary)
#   primary-standby.sh status         running / in recovery / replication state of both
#   primary-standby.sh pause-replication   disconnect the standby (commits then wait with SYNC=on;
#                                     with SYNC=off they are acknowledged without reaching it)
#   primary-standby.sh resume-replication  reconnect it
#   primary-standby.sh reset          stop both and delete their data directories
#
# Settings (environment):
#   HA_PG_DIR        where the data directories, sockets and logs go   (default: <script dir>/pg)
#   PRIMARY_PORT     primary's port                                     (default: 25432)
#   STANDBY_PORT     standby's port                                     (default: 25433)
#   SYNC             on: synchronous replication (the primary's commits wait for the standby's
#                    flush); off: asynchronous                          (default: on)
#   PG_BIN           PostgreSQL binaries                                (default: /usr/lib/postgresql/15/bin)
#   PG_OS_USER       OS user owning the clusters when run as root       (default: postgres)
#
# Ports: keep them below net.ipv4.ip_local_port_range (32768-60999 on Linux). A client that keeps
# reconnecting to a dead port inside that range can be handed the same port as its own source
# port and connect to itself (TCP simultaneous open); the postmaster then cannot bind it again.
#
# Trust authentication on 127.0.0.1 only (user postgres), replication included. Idempotent:
# `start` starts what is not running and creates what does not exist; it never starts the old
# primary again after `kill-primary` + `promote` (that would be a second primary): use `reset`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HA_PG_DIR="${HA_PG_DIR:-$HERE/pg}"
PRIMARY_PORT="${PRIMARY_PORT:-25432}"
STANDBY_PORT="${STANDBY_PORT:-25433}"
SYNC="${SYNC:-on}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_OS_USER="${PG_OS_USER:-postgres}"
PRIMARY="$HA_PG_DIR/primary"
STANDBY="$HA_PG_DIR/standby"
RUN="$HA_PG_DIR/run"
STANDBY_NAME=standby1

# Runs a command as the clusters' owner (PostgreSQL refuses to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}
psql_at() { as_pg "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2" 2>/dev/null; }
# A SIGKILLed postmaster can linger as a zombie when nothing reaps it (PID 1 of a container):
# kill -0 would still succeed, so look at its state.
running() {
  [ -f "$1/postmaster.pid" ] || return 1
  local st; st="$(ps -o stat= -p "$(head -1 "$1/postmaster.pid")" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}
promoted_marker="$HA_PG_DIR/.failed-over"

# Per-node settings, included last from postgresql.conf (pg_basebackup copies the primary's
# postgresql.conf, so everything node-specific lives here and is rewritten for the standby).
write_node_conf() { # dir port sync_names
  as_pg tee "$1/node.conf" >/dev/null <<EOF
port = $2
synchronous_standby_names = '$3'
EOF
}

init_primary() {
  mkdir -p "$HA_PG_DIR" "$RUN"
  if [ "$(id -u)" = 0 ]; then chown "$PG_OS_USER" "$HA_PG_DIR" "$RUN"; fi
  as_pg "$PG_BIN/initdb" -D "$PRIMARY" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  as_pg tee -a "$PRIMARY/postgresql.conf" >/dev/null <<EOF

# --- primary-standby.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
max_connections = 60
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 4
wal_keep_size = 128MB
hot_standby = on
synchronous_commit = on
# A dead primary must be noticed quickly by the standby's WAL receiver.
wal_receiver_timeout = 5s
wal_sender_timeout = 5s
logging_collector = off
include_if_exists = 'node.conf'
EOF
  as_pg tee "$PRIMARY/pg_hba.conf" >/dev/null <<EOF
local all         all                 trust
local replication all                 trust
host  all         all   127.0.0.1/32  trust
host  replication all   127.0.0.1/32  trust
EOF
  local names=""
  [ "$SYNC" = on ] && names="$STANDBY_NAME"
  write_node_conf "$PRIMARY" "$PRIMARY_PORT" "$names"
}

init_standby() {
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$STANDBY" -R -X stream -c fast
  # The WAL receiver's application_name is what synchronous_standby_names names. No synchronous
  # standby of its own: once promoted it runs alone, and commits must not wait for a standby
  # that does not exist.
  as_pg tee -a "$STANDBY/postgresql.auto.conf" >/dev/null <<EOF
primary_conninfo = '$(conninfo)'
EOF
  write_node_conf "$STANDBY" "$STANDBY_PORT" ""
}

start_node() { # dir name
  running "$1" && return 0
  as_pg "$PG_BIN/pg_ctl" -D "$1" -l "$HA_PG_DIR/$2.log" -w -t 60 start >/dev/null
}

wait_sync() { # until the standby streams (and is the synchronous one when SYNC=on)
  local want="streaming:async" i
  [ "$SYNC" = on ] && want="streaming:sync"
  for i in $(seq 1 100); do
    [ "$(psql_at "$PRIMARY_PORT" "select state || ':' || sync_state from pg_stat_replication where application_name = '$STANDBY_NAME'")" = "$want" ] && return 0
    sleep 0.1
  done
  echo "standby did not start streaming" >&2
  return 1
}

cmd_start() {
  if [ -f "$promoted_marker" ]; then
    echo "failed over already: the standby is the primary now; 'reset' to start afresh" >&2
    running "$STANDBY" || start_node "$STANDBY" standby
    return 0
  fi
  [ -f "$PRIMARY/PG_VERSION" ] || init_primary
  start_node "$PRIMARY" primary
  [ -f "$STANDBY/PG_VERSION" ] || init_standby
  start_node "$STANDBY" standby
  wait_sync
  cmd_status
}

cmd_stop() {
  for d in "$STANDBY" "$PRIMARY"; do
    if running "$d"; then as_pg "$PG_BIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null; fi
  done
  return 0
}

cmd_kill_primary() {
  if ! running "$PRIMARY"; then echo "primary is not running" >&2; return 0; fi
  local pm; pm="$(head -1 "$PRIMARY/postmaster.pid")"
  # The postmaster and every backend at once: nothing gets to say goodbye to its client.
  local children; children="$(ps -o pid= --ppid "$pm" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  kill -9 "$pm" $children 2>/dev/null || true
  echo "killed primary postmaster $pm and backends: $children"
}

cmd_promote() {
  as_pg "$PG_BIN/pg_ctl" -D "$STANDBY" -w -t 60 promote >/dev/null
  touch "$promoted_marker"
  echo "standby on $STANDBY_PORT promoted"
}

cmd_status() {
  local d port name
  for name in primary standby; do
    if [ $name = primary ]; then d="$PRIMARY"; port="$PRIMARY_PORT"; else d="$STANDBY"; port="$STANDBY_PORT"; fi
    if running "$d"; then
      echo "$name :$port running, in_recovery=$(psql_at "$port" 'select pg_is_in_recovery()') sync_standby_names='$(psql_at "$port" 'show synchronous_standby_names')' replicas=[$(psql_at "$port" "select string_agg(application_name||':'||state||':'||sync_state, ',') from pg_stat_replication")]"
    else
      echo "$name :$port not running"
    fi
  done
}

conninfo() { echo "host=127.0.0.1 port=$PRIMARY_PORT user=postgres application_name=$STANDBY_NAME"; }

# Disconnects the standby from the primary (an empty primary_conninfo stops its WAL receiver):
# what a network partition does to replication, without touching the network.
cmd_pause_replication() {
  psql_at "$STANDBY_PORT" "alter system set primary_conninfo = ''" >/dev/null
  psql_at "$STANDBY_PORT" "select pg_reload_conf()" >/dev/null
  local i
  for i in $(seq 1 50); do
    [ -z "$(psql_at "$PRIMARY_PORT" "select 1 from pg_stat_replication where application_name = '$STANDBY_NAME'")" ] && { echo "replication paused"; return 0; }
    sleep 0.1
  done
  echo "the standby is still connected" >&2; return 1
}

cmd_resume_replication() {
  psql_at "$STANDBY_PORT" "alter system set primary_conninfo = '$(conninfo)'" >/dev/null
  psql_at "$STANDBY_PORT" "select pg_reload_conf()" >/dev/null
  echo "replication resumed"
}

cmd_reset() {
  cmd_stop
  # A killed primary's data directory may still have a stale postmaster.pid: nothing to stop.
  rm -rf "$PRIMARY" "$STANDBY" "$promoted_marker" "$HA_PG_DIR/primary.log" "$HA_PG_DIR/standby.log"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill-primary) cmd_kill_primary ;;
  promote) cmd_promote ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  pause-replication) cmd_pause_replication ;;
  resume-replication) cmd_resume_replication ;;
  *) echo "usage: $0 start|stop|kill-primary|promote|status|reset|pause-replication|resume-replication" >&2; exit 2 ;;
esac
