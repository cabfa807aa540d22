#!/usr/bin/env bash
# Workflow engine overhead and throughput of a release `haechi server`, on SQLite and (when
# reachable) on PostgreSQL:
#
#   chain  a 100-step chain of `sleep 0` steps, every transition committed before it is acted
#          on: milliseconds per step, from the stored times (goal < 5 ms per step)
#   burst  1,000 executions of a 10-step `sleep 0` chain started at once: steps per second
#          from the first execution created to the last ended (goal >= 2,000/s on SQLite), and
#          the server's RSS
#
#   decide an `on_failure: ask` http step fails and pauses the run; an operator POSTs `retry`:
#          time from that POST to the retried step's request arriving (DECIDE_SAMPLES runs)
#
#   bench/workflow.sh
#
# Only 127.0.0.1 is contacted. Tunables (environment):
#   DECIDE_SAMPLES=50 STEPS=100 RUNS=5 EXECS=1000 BURST_STEPS=10 SKIP_BUILD= BACKENDS="sqlite postgres"
#   PG_URL=postgres://postgres@127.0.0.1:5432/test   (a user that may create databases)
set -euo pipefail
cd "$(dirname "$0")/.."

DECIDE_SAMPLES="${DECIDE_SAMPLES:-50}"
STEPS="${STEPS:-100}"; RUNS="${RUNS:-5}"; EXECS="${EXECS:-1000}"; BURST_STEPS="${BURST_STEPS:-10}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
. bench/lib.sh
need python3
build_release

PG_DB=""
drop_pg_db() {
  if [ -n "$PG_DB" ]; then
    psql "$PG_URL" -qtAc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    PG_DB=""
  fi
}
AT_EXIT+=(drop_pg_db)

# start_backend BACKEND: a fresh server with its own data dir (and database); sets TOKEN.
start_backend() {
  local backend="$1" db_args=()
  if [ "$backend" = postgres ]; then
    PG_DB="haechi_bench_wf_$$"
    psql "$PG_URL" -qtAc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
    psql "$PG_URL" -qtAc "CREATE DATABASE $PG_DB" >/dev/null
    db_args=(--database-url "${PG_URL%/*}/$PG_DB")
  fi
  start_server "$WORK/$backend" --no-local-agent "${db_args[@]}"
  login_admin
}

summary=()
for backend in $BACKENDS; do
  if [ "$backend" = postgres ] && ! psql "$PG_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL at $PG_URL is not reachable: skipping the postgres runs" >&2
    continue
  fi
  say "$backend: $STEPS-step chain of sleep 0, $RUNS runs"
  start_backend "$backend"
  out="$(python3 bench/workflow.py chain "$BASE" "$TOKEN" "$STEPS" "$RUNS")"
  echo "$out"
  summary+=("$backend $(grep '^RESULT' <<<"$out")")
  say "$backend: $EXECS executions of a $BURST_STEPS-step chain at once"
  out="$(python3 bench/workflow.py burst "$BASE" "$TOKEN" "$EXECS" "$BURST_STEPS" "$SERVER_PID")"
  echo "$out"
  summary+=("$backend $(grep '^RESULT' <<<"$out")")
  say "$backend: decision POST → retried step, $DECIDE_SAMPLES runs"
  out="$(python3 bench/workflow.py decide "$BASE" "$TOKEN" "$DECIDE_SAMPLES")"
  echo "$out"
  summary+=("$backend $(grep '^RESULT' <<<"$out")")
  if grep -qiE 'panicked|ERROR' "$WORK/$backend/server.log"; then
    echo "the server logged errors:" >&2
    grep -iE 'panicked|ERROR' "$WORK/$backend/server.log" | head -20 >&2
  fi
  stop_server
  drop_pg_db
done

say "summary ($(nproc) CPUs, $(uname -r))"
printf '%s\n' "${summary[@]}"
