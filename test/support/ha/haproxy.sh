#!/usr/bin/env bash
# HAProxy balancing HTTP round robin over several server processes, with a health check.
#
#   haproxy.sh start     write the config and start HAProxy (daemonised); no-op if running
#   haproxy.sh stop      stop it
#   haproxy.sh status    running or not, and each backend server's state (from the stats socket)
#
# Settings (environment):
#   HAP_DIR         config, pid file, stats socket              (default: <script dir>/haproxy)
#   HAP_PORT        port HAProxy listens on (127.0.0.1)         (default: 18080)
#   HAP_BACKENDS    comma-separated host:port of the servers    (default: 127.0.0.1:18101,127.0.0.1:18102)
#   HAP_CHECK_PATH  HTTP health check path                      (default: /health/ready)
#   HAP_CHECK_MS    health check interval in ms                 (default: 1000)
#   HAP_BIN         haproxy binary                              (default: haproxy)
#
# Long-polls: `timeout server` must exceed the longest /sync timeout the clients use
# (limits.max_sync_timeout_ms, 300 s by default), or HAProxy cuts them with a 504.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HAP_DIR="${HAP_DIR:-$HERE/haproxy}"
HAP_PORT="${HAP_PORT:-18080}"
HAP_BACKENDS="${HAP_BACKENDS:-127.0.0.1:18101,127.0.0.1:18102}"
HAP_CHECK_PATH="${HAP_CHECK_PATH:-/health/ready}"
HAP_CHECK_MS="${HAP_CHECK_MS:-1000}"
HAP_BIN="${HAP_BIN:-haproxy}"
PID="$HAP_DIR/haproxy.pid"

. "$HERE/daemon.sh"
running() { daemon_running "$PID"; }

write_config() {
  mkdir -p "$HAP_DIR"
  printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{"errcode":"M_UNAVAILABLE","error":"No server is available","retry_after_ms":5000}\n' >"$HAP_DIR/503.http"
  {
    cat <<EOF
global
    pidfile $PID
    stats socket $HAP_DIR/stats.sock mode 600 level admin
    maxconn 2000

defaults
    mode http
    option httplog
    log stdout format raw local0 info
    timeout connect 2s
    timeout client 330s
    timeout server 330s
    timeout http-keep-alive 10s
    # A refused connection, and a request whose connection closed with no answer, are sent again
    # to another server. The second happens when a process dies: a request that was on it (a
    # parked long-poll), or that went out on a kept-alive connection to it before HAProxy saw the
    # close. Without `empty-response` HAProxy closes the client's connection without an answer
    # (`http-reuse safe`: "the browser can decide to silently retry"), which most HTTP clients
    # report as an error. Sending again is safe here: a send carries its txnId (stored once), a
    # /sync its since token (nothing acknowledged until the next one).
    retries 2
    option redispatch
    retry-on conn-failure empty-response
    # /health/ready answers 503 after 2 s when the database does not answer: wait longer than that,
    # so a check sees the 503 (L7STS) instead of timing out.
    timeout check 3s
    # No process ready: answer as a Matrix server would, not with HAProxy's HTML page.
    errorfile 503 $HAP_DIR/503.http

frontend matrix
    bind 127.0.0.1:$HAP_PORT
    default_backend servers

backend servers
    balance roundrobin
    option httpchk GET $HAP_CHECK_PATH
    http-check expect status 200
    default-server inter ${HAP_CHECK_MS} fall 2 rise 1
EOF
    local i=0 b
    IFS=',' read -ra list <<<"$HAP_BACKENDS"
    for b in "${list[@]}"; do
      i=$((i + 1))
      echo "    server s$i $b check"
    done
  } >"$HAP_DIR/haproxy.cfg"
  "$HAP_BIN" -c -q -f "$HAP_DIR/haproxy.cfg"
}

cmd_start() {
  running && return 0
  write_config
  "$HAP_BIN" -D -f "$HAP_DIR/haproxy.cfg" >>"$HAP_DIR/haproxy.log" 2>&1
  if wait_for_port "$HAP_PORT"; then
    echo "haproxy on :$HAP_PORT -> $HAP_BACKENDS (check $HAP_CHECK_PATH)"
    return 0
  fi
  echo "haproxy did not start; see $HAP_DIR/haproxy.log" >&2
  return 1
}

cmd_stop() { stop_daemon "$PID"; }

cmd_status() {
  if running; then
    echo "haproxy running (pid $(head -1 "$PID")) on :$HAP_PORT"
    # Fields 2 (server), 18 (status), 37 (check_status) of "show stat".
    if command -v socat >/dev/null; then
      echo "show stat" | socat stdio "$HAP_DIR/stats.sock" | awk -F, '$1=="servers" {print $2, $18, $37}'
    fi
  else
    echo "haproxy not running"
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
