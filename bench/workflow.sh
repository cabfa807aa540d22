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
#   bench/workflow.sh
#
# Only 127.0.0.1 is contacted. Tunables (environment):
#   STEPS=100 RUNS=5 EXECS=1000 BURST_STEPS=10 SKIP_BUILD= BACKENDS="sqlite postgres"
#   PG_URL=postgres://postgres@127.0.0.1:5432/test   (a user that may create databases)
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-100}"; RUNS="${RUNS:-5}"; EXECS="${EXECS:-1000}"; BURST_STEPS="${BURST_STEPS:-10}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
ADMIN_PASSWORD="bench-Admin-Pass-1234"
say() { printf '\n=== %s\n' "$*" >&2; }

if [ -z "${SKIP_BUILD:-}" ]; then
  say "cargo build --release -p haechi"
  cargo build --release -p haechi
fi
BIN="$PWD/target/release/haechi"
[ -x "$BIN" ] || { echo "no release binary at $BIN" >&2; exit 1; }

WORK="$(mktemp -d -t haechi-bench-wf.XXXXXX)"
SERVER_PID=""
PG_DB=""
stop_server() {
  exec 3>&- || true
  if [ -n "$SERVER_PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
  if [ -n "$PG_DB" ]; then
    psql "$PG_URL" -qtAc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    PG_DB=""
  fi
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server BACKEND: a fresh server with its own data dir (and database).
start_server() {
  local backend="$1" dir="$WORK/$1" db_args=()
  mkdir -p "$dir"
  if [ "$backend" = postgres ]; then
    PG_DB="haechi_bench_wf_$$"
    psql "$PG_URL" -qtAc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
    psql "$PG_URL" -qtAc "CREATE DATABASE $PG_DB" >/dev/null
    db_args=(--database-url "${PG_URL%/*}/$PG_DB")
  fi
  rm -f "$dir/stdin"; mkfifo "$dir/stdin"
  env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
      HAECHI_LOG_LEVEL=warn RUST_LOG=warn \
      "$BIN" server --data-dir "$dir/data" --listen 127.0.0.1:0 --stop-on-stdin-eof --no-local-agent \
      "${db_args[@]}" <"$dir/stdin" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  exec 3>"$dir/stdin"
  BASE=""
  for _ in $(seq 1 600); do
    BASE="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$dir/server.log" | head -n1)"
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$BASE" ] || { cat "$dir/server.log" >&2; exit 1; }
  TOKEN="$(curl -fsSk -H 'Content-Type: application/json' -d "{\"user_id\":\"admin\",\"pwd\":\"$ADMIN_PASSWORD\"}" \
    "$BASE/api/v1/auth" | python3 -c 'import sys, json; print(json.load(sys.stdin)["token"].split(" ", 1)[1])')"
  echo "server ($backend) at $BASE, pid $SERVER_PID" >&2
}

summary=()
for backend in $BACKENDS; do
  if [ "$backend" = postgres ] && ! psql "$PG_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL at $PG_URL is not reachable: skipping the postgres runs" >&2
    continue
  fi
  say "$backend: $STEPS-step chain of sleep 0, $RUNS runs"
  start_server "$backend"
  out="$(python3 bench/workflow.py chain "$BASE" "$TOKEN" "$STEPS" "$RUNS")"
  echo "$out"
  summary+=("$backend $(grep '^RESULT' <<<"$out")")
  say "$backend: $EXECS executions of a $BURST_STEPS-step chain at once"
  out="$(python3 bench/workflow.py burst "$BASE" "$TOKEN" "$EXECS" "$BURST_STEPS" "$SERVER_PID")"
  echo "$out"
  summary+=("$backend $(grep '^RESULT' <<<"$out")")
  if grep -qiE 'panicked|ERROR' "$WORK/$backend/server.log"; then
    echo "the server logged errors:" >&2
    grep -iE 'panicked|ERROR' "$WORK/$backend/server.log" | head -20 >&2
  fi
  stop_server
done

say "summary ($(nproc) CPUs, $(uname -r))"
printf '%s\n' "${summary[@]}"
