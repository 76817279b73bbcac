#!/usr/bin/env bash
# Headless demo: the same five processes as the tmuxinator session, without a terminal.
#
# Starts zmq_pull, grpc_server and the proxy in front of them, runs two zmq_push and two
# grpc_client against the proxy's port for DEMO_SECONDS, stops everything with SIGTERM and
# prints how many messages each server received through the proxy. Exits non-zero if either
# path carried nothing or any process failed.
#
# Environment (all optional):
#   DEMO_SECONDS     how long the clients send (default 5)
#   DEMO_PROXY_PORT  proxy port (default 7000); DEMO_ZMQ_PORT (7001), DEMO_GRPC_PORT (7002)
#   BIN_DIR          use binaries from here instead of building with `cargo build --release`
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${DEMO_SECONDS:-5}
proxy_port=${DEMO_PROXY_PORT:-7000}
zmq_port=${DEMO_ZMQ_PORT:-7001}
grpc_port=${DEMO_GRPC_PORT:-7002}
host=127.0.0.1

if [[ -z "${BIN_DIR:-}" ]]; then
  echo "== building (cargo build --release --bins)"
  cargo build --release --bins --quiet
  BIN_DIR=target/release
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/zmq-grpc-proxy-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

start() { # name args... ; stdout -> $logs/name.out, logs -> $logs/name.log
  local name=$1; shift
  "$BIN_DIR/${name%%#*}" "$@" >"$logs/$name.out" 2>"$logs/$name.log" &
  pids+=($!)
  eval "pid_${name//[#]/_}=$!"
}

wait_for_log() { # name pattern
  local deadline=$((SECONDS + 60))
  until grep -q "$2" "$logs/$1.log" 2>/dev/null; do
    if ((SECONDS >= deadline)) || ! kill -0 "$(pid_of "$1")" 2>/dev/null; then
      echo "demo: $1 did not start; its log:" >&2
      cat "$logs/$1.log" >&2
      exit 1
    fi
    sleep 0.05
  done
}

pid_of() { local v="pid_${1//[#]/_}"; echo "${!v}"; }

stop() { # name: SIGTERM, then wait for a clean exit
  local pid status=0
  pid=$(pid_of "$1")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || status=$?
  if ((status != 0)); then
    echo "demo: $1 exited with status $status; its log:" >&2
    tail -20 "$logs/$1.log" >&2
    failed=1
  fi
}

failed=0
echo "== servers: zmq_pull on :$zmq_port, grpc_server on :$grpc_port, proxy on :$proxy_port"
start zmq_pull --bind "tcp://$host:$zmq_port"
start grpc_server --bind "$host:$grpc_port"
wait_for_log zmq_pull listening
wait_for_log grpc_server listening
start proxy --listen "$host:$proxy_port" --zmq-backend "$host:$zmq_port" --grpc-backend "$host:$grpc_port"
wait_for_log proxy listening

echo "== clients: 2 zmq_push + 2 grpc_client -> :$proxy_port for ${seconds}s"
start "zmq_push#1" --connect "tcp://$host:$proxy_port" --sender zmq-push-1 --interval-ms 10
start "zmq_push#2" --connect "tcp://$host:$proxy_port" --sender zmq-push-2 --interval-ms 10
start "grpc_client#1" --connect "http://$host:$proxy_port" --sender grpc-client-1 --interval-ms 10
start "grpc_client#2" --connect "http://$host:$proxy_port" --sender grpc-client-2 --interval-ms 10 --mode stream
sleep "$seconds" # the demo's running time, not a readiness wait

for c in "zmq_push#1" "zmq_push#2" "grpc_client#1" "grpc_client#2"; do stop "$c"; done
for s in proxy zmq_pull grpc_server; do stop "$s"; done

field() { # file key
  grep -o "\b$2=[0-9.]*" "$1" | head -1 | cut -d= -f2
}
echo
echo "== results"
for c in "zmq_push#1" "zmq_push#2" "grpc_client#1" "grpc_client#2"; do
  printf '%-14s %s\n' "$c" "$(grep -h summary "$logs/$c.out" | cut -d: -f2-)"
done
zmq_received=$(field "$logs/zmq_pull.out" received)
grpc_received=$(field "$logs/grpc_server.out" received)
zmq_conns=$(grep -c 'closed route=zmq' "$logs/proxy.log" || true)
grpc_conns=$(grep -c 'closed route=grpc' "$logs/proxy.log" || true)
printf '%-14s received %s messages through the proxy (%s ZMQ connections)\n' \
  zmq_pull "${zmq_received:-0}" "$zmq_conns"
printf '%-14s received %s messages through the proxy (%s gRPC connections)\n' \
  grpc_server "${grpc_received:-0}" "$grpc_conns"
for s in zmq_pull grpc_server; do
  printf '%-14s %s\n' "$s" "$(grep -h summary "$logs/$s.out" | cut -d: -f2-)"
done
echo "logs: $logs"

if [[ "${zmq_received:-0}" == 0 || "${grpc_received:-0}" == 0 ]]; then
  echo "demo: FAILED: a path carried nothing" >&2
  exit 1
fi
# Every message a client handed over must have arrived: SIGTERM stops clients cleanly.
zmq_sent=$(( $(field "$logs/zmq_push#1.out" sent) + $(field "$logs/zmq_push#2.out" sent) ))
grpc_acked=$(( $(field "$logs/grpc_client#1.out" acked) + $(field "$logs/grpc_client#2.out" acked) ))
if ((zmq_sent != zmq_received || grpc_acked != grpc_received)); then
  echo "demo: FAILED: ZMQ sent $zmq_sent / received $zmq_received," \
    "gRPC acknowledged $grpc_acked / received $grpc_received" >&2
  exit 1
fi
if ((failed)); then
  echo "demo: FAILED: a process did not stop cleanly" >&2
  exit 1
fi
echo "demo: OK"
