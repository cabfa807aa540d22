#!/usr/bin/env bash
# Fan-out and idle-agent cost of a release `haechi server` (SQLite store), with many simulated
# agents in one process (target/release/haechi-loadagents), each on its own TLS WebSocket with
# its own enrolled credential, speaking the real agent protocol.
#
#   bench/fanout.sh
#
# 1. fan-out: a no-op task on FANOUT (1000) nodes, POST /opmate/task/{id}/instance until every
#    node is END (polled through /opmate/taskinstance/{no}/node?execStatus=END), RUNS times.
#    Goal: < 2 s.
# 2. idle: IDLE (10000) agents connected for HOLD (60) s with the default 10 s heartbeat; the
#    server's RSS at the end and the heartbeat acks per 10 s. Goal: < 1 GiB, acks keep up.
#
# Only 127.0.0.1 is contacted; every phase is bounded in time. Tunables (environment):
#   FANOUT=1000 RUNS=3 IDLE=10000 HOLD=60 SKIP_BUILD= SKIP_IDLE=
#   BENCH_DATABASE_URL=postgres://... (a throwaway database on 127.0.0.1) to measure PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
FANOUT="${FANOUT:-1000}"; RUNS="${RUNS:-3}"; IDLE="${IDLE:-10000}"; HOLD="${HOLD:-60}"
. bench/exec_common.sh

# Each agent is one socket in the server and one in the load tool.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open files limit: $(ulimit -n)" >&2

build
start_exec_server
make_task noop "true"

say "fan-out: no-op task on $FANOUT simulated agents"
"$LOAD" --server "$BASE" --fingerprint "$FP" agents --count "$FANOUT" --prefix fan- \
  --admin-token "$TOKEN" --creds "$WORK/creds" --run-task noop --runs "$RUNS" | tee "$WORK/fanout.out"
echo "server RSS after fan-out: $(rss_mib "$SERVER_PID") MiB" | tee -a "$WORK/fanout.out"

if [ -z "${SKIP_IDLE:-}" ]; then
  say "idle: $IDLE simulated agents for $HOLD s (heartbeat every 10 s)"
  before="$(rss_mib "$SERVER_PID")"
  "$LOAD" --server "$BASE" --fingerprint "$FP" agents --count "$IDLE" --prefix idle- \
    --admin-token "$TOKEN" --creds "$WORK/creds" --concurrency 128 --hold-secs "$HOLD" &
  LOAD_PID=$!
  EXTRA_PIDS+=("$LOAD_PID")
  peak=0
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    now="$(rss_mib "$SERVER_PID")"
    peak="$(awk -v a="$peak" -v b="$now" 'BEGIN { print (b > a) ? b : a }')"
    sleep 2
  done
  wait "$LOAD_PID" || true
  q="SELECT COUNT(*) FROM nodes WHERE id LIKE 'idle-%' AND missing_since IS NOT NULL"
  if [ -n "${BENCH_DATABASE_URL:-}" ]; then missing="$(psql "$BENCH_DATABASE_URL" -qtAc "$q")"
  else missing="$(sqlite3 "$WORK/data/haechi.db" "$q")"; fi
  echo "server RSS: before $before MiB, peak with $IDLE agents $peak MiB; idle nodes marked missing: $missing"
fi
