#!/usr/bin/env bash
# Headless demo: the processes of the tmuxinator session, without a terminal.
#
# Usage: scripts/demo.sh [--stage N|mesh]     (or DEMO_STAGE=...; default 1)
#
# Every stage runs two zmq_push and two grpc_client (one unary, one streaming) against the
# public port for DEMO_SECONDS, stops everything with SIGTERM, prints what each server
# received, and exits non-zero if a path carried nothing, a message went missing, or a
# process did not stop cleanly. The stages are those of MIGRATION.md:
#   1  proxy on the public port, in front of zmq_pull and grpc_server
#   2  grpc_server --zmq-forward on the public port: gRPC answered, ZMQ passed to zmq_pull
#   3  as 2, but zmq_bridge replaces zmq_pull: ZMQ messages become gRPC calls
#   4  grpc_server alone; only gRPC clients remain
#   mesh  gossip_mesh: 6 members gossiping Habitat-style, rolled from ZeroMQ to gRPC member by
#         member over 4 x DEMO_SECONDS (at least 8 s); fails if a rumor missed a member
#
# Environment (all optional):
#   DEMO_SECONDS     how long the clients send (default 5)
#   DEMO_PROXY_PORT  proxy port (default 7000); DEMO_ZMQ_PORT (7001), DEMO_GRPC_PORT (7002),
#                    DEMO_METRICS_PORT (7003, the proxy's /metrics in stage 1)
#   BIN_DIR          use binaries from here instead of building with `cargo build --release`
set -euo pipefail
cd "$(dirname "$0")/.."

stage=${DEMO_STAGE:-1}
while (($#)); do
  case $1 in
    --stage) stage=${2:?--stage needs a number}; shift 2 ;;
    --stage=*) stage=${1#--stage=}; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument $1 (usage: scripts/demo.sh [--stage 1|2|3|4|mesh])" >&2; exit 2 ;;
  esac
done
case $stage in 1|2|3|4|mesh) ;; *) echo "demo: --stage must be 1, 2, 3, 4 or mesh" >&2; exit 2 ;; esac

seconds=${DEMO_SECONDS:-5}
proxy_port=${DEMO_PROXY_PORT:-7000}
zmq_port=${DEMO_ZMQ_PORT:-7001}
grpc_port=${DEMO_GRPC_PORT:-7002}
metrics_port=${DEMO_METRICS_PORT:-7003}
host=127.0.0.1

if [[ -z "${BIN_DIR:-}" ]]; then
  echo "== building (cargo build --release --bins; the first build compiles libzmq and takes a few minutes)"
  cargo build --release --bins
  BIN_DIR=target/release
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/zmq-grpc-proxy-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ $stage == mesh ]]; then
  mesh_seconds=$((seconds * 4 > 8 ? seconds * 4 : 8))
  echo "== mesh: gossip_mesh, 6 members on 127.0.0.1, rolled zmq -> both -> prefer-grpc -> grpc in ${mesh_seconds}s"
  status=0
  "$BIN_DIR/gossip_mesh" --members 6 --fanout 5 --round-ms 100 --seconds "$mesh_seconds" --rollout \
    --seed "${DEMO_SEED:-1}" 2>"$logs/gossip_mesh.log" | tee "$logs/gossip_mesh.out" || status=$?
  echo "logs: $logs"
  if ((status != 0)) || ! grep -q "^gossip_mesh summary: .*ok=true" "$logs/gossip_mesh.out"; then
    echo "demo: FAILED: gossip_mesh exited with status $status; the end of its log:" >&2
    tail -20 "$logs/gossip_mesh.log" >&2
    exit 1
  fi
  echo "demo: OK"
  exit 0
fi

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
public=$proxy_port
case $stage in
  1)
    echo "== stage 1: proxy on :$public -> zmq_pull :$zmq_port, grpc_server :$grpc_port"
    start zmq_pull --bind "tcp://$host:$zmq_port"
    start grpc_server --bind "$host:$grpc_port"
    wait_for_log zmq_pull listening
    wait_for_log grpc_server listening
    start proxy --listen "$host:$public" --zmq-backend "$host:$zmq_port" --grpc-backend "$host:$grpc_port" \
      --metrics-listen "$host:$metrics_port"
    wait_for_log proxy listening
    servers=(proxy zmq_pull grpc_server) ;;
  2)
    echo "== stage 2: grpc_server --zmq-forward on :$public -> zmq_pull :$zmq_port"
    start zmq_pull --bind "tcp://$host:$zmq_port"
    wait_for_log zmq_pull listening
    start grpc_server --bind "$host:$public" --zmq-forward "$host:$zmq_port"
    wait_for_log grpc_server listening
    servers=(grpc_server zmq_pull) ;;
  3)
    echo "== stage 3: grpc_server --zmq-forward on :$public -> zmq_bridge :$zmq_port -> grpc_server"
    start grpc_server --bind "$host:$public" --zmq-forward "$host:$zmq_port"
    wait_for_log grpc_server listening
    start zmq_bridge --bind "tcp://$host:$zmq_port" --grpc "http://$host:$public"
    wait_for_log zmq_bridge listening
    servers=(zmq_bridge grpc_server) ;;
  4)
    echo "== stage 4: grpc_server alone on :$public"
    start grpc_server --bind "$host:$public"
    wait_for_log grpc_server listening
    servers=(grpc_server) ;;
esac

clients=()
if ((stage < 4)); then
  echo "== clients: 2 zmq_push + 2 grpc_client -> :$public for ${seconds}s"
  start "zmq_push#1" --connect "tcp://$host:$public" --sender zmq-push-1 --interval-ms 10
  start "zmq_push#2" --connect "tcp://$host:$public" --sender zmq-push-2 --interval-ms 10
  clients+=("zmq_push#1" "zmq_push#2")
else
  echo "== clients: 2 grpc_client -> :$public for ${seconds}s (the ZMQ clients are gone)"
fi
start "grpc_client#1" --connect "http://$host:$public" --sender grpc-client-1 --interval-ms 10
start "grpc_client#2" --connect "http://$host:$public" --sender grpc-client-2 --interval-ms 10 --mode stream
clients+=("grpc_client#1" "grpc_client#2")
sleep "$seconds" # the demo's running time, not a readiness wait

for c in "${clients[@]}"; do stop "$c"; done
scrape() { # the proxy's /metrics -> $logs/metrics.txt
  exec 3<>"/dev/tcp/$host/$metrics_port"
  printf 'GET /metrics HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n' >&3
  cat <&3 >"$logs/metrics.txt"
  exec 3<&-
}
sum() { # metric name prefix -> sum of its series in $logs/metrics.txt
  awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { print s + 0 }' "$logs/metrics.txt"
}
if ((stage == 1)); then
  # The proxy's own per-route counters, read from /metrics before it stops, once every
  # connection it accepted has an outcome (the clients have exited, but the proxy may not
  # have seen their connections close yet).
  deadline=$((SECONDS + 30))
  while scrape; do
    accepted=$(sum zgp_connections_accepted_total)
    ended=$(( $(sum zgp_connections_closed_total) + $(sum zgp_connections_rejected_total) ))
    ((accepted == ended)) && break
    if ((SECONDS >= deadline)); then
      echo "demo: the proxy still has $((accepted - ended)) of $accepted connections open" >&2
      failed=1
      break
    fi
    sleep 0.05 # polling the counters, not waiting for readiness
  done
fi
for s in "${servers[@]}"; do stop "$s"; done

field() { # file key
  grep -o "\b$2=[0-9.]*" "$1" | head -1 | cut -d= -f2
}
echo
echo "== results (stage $stage)"
for p in "${clients[@]}" "${servers[@]}"; do
  [[ $p == proxy ]] && continue
  printf '%-14s %s\n' "$p" "$(grep -h summary "$logs/$p.out" | cut -d: -f2-)"
done
zmq_sent=0
for c in "zmq_push#1" "zmq_push#2"; do
  [[ -f "$logs/$c.out" ]] && zmq_sent=$((zmq_sent + $(field "$logs/$c.out" sent)))
done
grpc_acked=$(( $(field "$logs/grpc_client#1.out" acked) + $(field "$logs/grpc_client#2.out" acked) ))
grpc_received=$(field "$logs/grpc_server.out" received)
case $stage in
  1|2) zmq_received=$(field "$logs/zmq_pull.out" received); zmq_server=zmq_pull ;;
  3) zmq_received=$(field "$logs/zmq_bridge.out" delivered); zmq_server="zmq_bridge" ;;
  4) zmq_received=0; zmq_server=none ;;
esac
if ((stage == 1)); then
  echo "proxy /metrics, per route:"
  grep -E '^zgp_(connections_(closed_total|active)|bytes_total)\{' "$logs/metrics.txt" | sed 's/^/  /'
fi
if ((stage < 4)); then
  printf 'ZMQ:  %s sent, %s received by %s through port %s\n' "$zmq_sent" "$zmq_received" "$zmq_server" "$public"
fi
printf 'gRPC: %s acknowledged, %s received by grpc_server through port %s' "$grpc_acked" "$grpc_received" "$public"
if ((stage == 3)); then printf ' (%s of them bridged from ZMQ)' "$zmq_received"; fi
echo
echo "logs: $logs"

# Every message a client handed over must have arrived: SIGTERM stops clients cleanly.
expected_grpc=$grpc_acked
((stage == 3)) && expected_grpc=$((grpc_acked + zmq_sent)) # bridged ZMQ arrives as gRPC
if ((grpc_received == 0)) || { ((stage < 4)) && ((zmq_received == 0)); }; then
  echo "demo: FAILED: a path carried nothing" >&2
  exit 1
fi
if ((stage < 4 && zmq_sent != zmq_received)) || ((grpc_received != expected_grpc)); then
  echo "demo: FAILED: ZMQ sent $zmq_sent / arrived $zmq_received," \
    "gRPC expected $expected_grpc / received $grpc_received" >&2
  exit 1
fi
if ((failed)); then
  echo "demo: FAILED: a process did not stop cleanly" >&2
  exit 1
fi
echo "demo: OK"
