# Sourced by the lab scripts (haproxy.sh, pgbouncer.sh): a daemon known by its pid file
# (first line) and the TCP port it listens on at 127.0.0.1.

daemon_running() { [ -f "$1" ] && kill -0 "$(head -1 "$1")" 2>/dev/null; }

# wait_for_port PORT: true once something accepts on it, false after 5 s.
wait_for_port() {
  local i
  for i in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# stop_daemon PIDFILE: SIGTERM, then up to 5 s for it to exit; fine if it was not running.
stop_daemon() {
  if daemon_running "$1"; then
    kill -TERM "$(head -1 "$1")"
    local i
    for i in $(seq 1 50); do daemon_running "$1" || break; sleep 0.1; done
  fi
  return 0
}
