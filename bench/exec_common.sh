# Shared by bench/fanout.sh and bench/ansible.sh: build, start a throwaway release server on
# 127.0.0.1 (SQLite in a temp dir, no local agent, self-approval on), log in, make tasks.
# Only 127.0.0.1 is contacted.

ADMIN_PASSWORD="bench-Admin-Pass-1234"
say() { printf '\n=== %s\n' "$*" >&2; }

build() {
  if [ -z "${SKIP_BUILD:-}" ]; then
    say "cargo build --release -p haechi -p haechi-bench"
    cargo build --release -p haechi -p haechi-bench
  fi
  BIN="$PWD/target/${PROFILE_DIR:-release}/haechi"
  LOAD="$PWD/target/${PROFILE_DIR:-release}/haechi-loadagents"
  [ -x "$BIN" ] && [ -x "$LOAD" ] || { echo "no release binaries in target/release" >&2; exit 1; }
}

WORK="$(mktemp -d -t haechi-bench-exec.XXXXXX)"
SERVER_PID=""
EXTRA_PIDS=()
stop_all() {
  for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${EXTRA_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  EXTRA_PIDS=()
  exec 3>&- || true
  if [ -n "$SERVER_PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
  mkfifo "$WORK/stdin"
  say "starting a release server (${BENCH_DATABASE_URL:+PostgreSQL, }data dir $WORK/data)"
  env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
      HAECHI_TASKS__ALLOW_SELF_APPROVAL=true HAECHI_LOG_LEVEL=warn RUST_LOG=warn \
      "$BIN" server --data-dir "$WORK/data" --listen 127.0.0.1:0 --stop-on-stdin-eof --no-local-agent \
      ${BENCH_DATABASE_URL:+--database-url "$BENCH_DATABASE_URL"} \
      <"$WORK/stdin" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  exec 3>"$WORK/stdin"
  BASE=""; FP=""
  for _ in $(seq 1 600); do
    BASE="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n1)"
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$BASE" ] || { cat "$WORK/server.log" >&2; exit 1; }
  FP="$(sed -n 's/.*fingerprint: \([0-9A-F:]*\).*/\1/p' "$WORK/server.log" | head -n1)"
  TOKEN="$(curl -fsSk -H 'Content-Type: application/json' -d "{\"user_id\":\"admin\",\"pwd\":\"$ADMIN_PASSWORD\"}" \
    "$BASE/api/v1/auth" | grep -o 'hct_[A-Za-z0-9_-]*' | head -n1)"
  [ -n "$TOKEN" ] || { echo "login failed" >&2; exit 1; }
  echo "server at $BASE (pid $SERVER_PID)" >&2
}

# make_task ID SCRIPT: creates and approves a task run as the current OS user.
make_task() {
  local id="$1" script="$2"
  curl -fsSk -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"id\":\"$id\",\"scriptName\":\"$id.sh\",\"script\":\"$script\",\"osUser\":\"$(id -un)\"}" "$BASE/api/v1/tasks"
  for action in request approve; do
    curl -fsSk -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -d "{\"action\":\"$action\"}" "$BASE/api/v1/tasks/$id/approval"
  done
}

rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
