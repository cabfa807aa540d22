# Shared by the bench scripts: tools, the release build, a throwaway `haechi server` on 127.0.0.1
# (its own temporary directory, stopped and removed at exit), the admin's login, wrk runs.
# Source it from the repository root (`. bench/lib.sh`). Only 127.0.0.1 is contacted.
#
# Tunables every script that uses it takes (environment):
#   SKIP_BUILD=1            use the release binary already built
#   HAECHI_BIN=path/haechi  the server binary (default target/release/haechi)
#   NICE=-10                run the server and the load at this nice level (negative needs root)

ADMIN_PASSWORD="bench-Admin-Pass-1234"
NICE="${NICE:-0}"

say() { printf '\n=== %s\n' "$*" >&2; }

# need COMMAND[:PACKAGE]...: installs the Debian packages of the missing commands (as root), or
# exits naming them.
need() {
  local missing=() c
  for c in "$@"; do
    command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing tools: ${missing[*]} (install them, or run as root)" >&2
    exit 1
  fi
}

# build_release [PACKAGE...]: `cargo build --release -p haechi [-p PACKAGE]...` unless SKIP_BUILD;
# sets BIN.
build_release() {
  if [ -z "${SKIP_BUILD:-}" ]; then
    local args=(-p haechi) p
    for p in "$@"; do args+=(-p "$p"); done
    say "cargo build --release ${args[*]}"
    cargo build --release "${args[@]}"
  fi
  BIN="${HAECHI_BIN:-$PWD/target/release/haechi}"
  [ -x "$BIN" ] || { echo "no release binary at $BIN" >&2; exit 1; }
}

need curl

WORK="$(mktemp -d -t haechi-bench.XXXXXX)"
SERVER_PID=""
SERVER_LOG=""
EXTRA_PIDS=() # other processes to kill at exit (agents, load tools)
CLOSE_FDS=()  # descriptors to close at exit, first (other servers' stdin)
AT_EXIT=()    # commands to run at exit, after the processes are gone (e.g. drop a database)

# stop_server: closes the server's stdin (it runs with --stop-on-stdin-eof, so it drains and
# stops), waits up to 20 s, then kills it.
stop_server() {
  exec 3>&- || true
  if [ -n "$SERVER_PID" ]; then
    for _ in $(seq 1 200); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

bench_cleanup() {
  local p c fd
  # Servers started with --stop-on-stdin-eof stop when their stdin closes.
  for fd in "${CLOSE_FDS[@]}"; do exec {fd}>&- || true; done
  CLOSE_FDS=()
  for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${EXTRA_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  EXTRA_PIDS=()
  stop_server
  for c in "${AT_EXIT[@]}"; do eval "$c" || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# start_server DIR [ARG...]: a release server with its data in DIR/data and its output in
# DIR/server.log, on a port the OS picks, every setting at its default except what a throwaway
# bench needs; ARGs go to `haechi server`, SERVER_ENV (an array of VAR=value) to its environment.
# Settings in the caller's environment that would change the figures are dropped. Sets
# SERVER_PID, SERVER_LOG, BASE (https://127.0.0.1:PORT) and FP (the certificate's fingerprint).
SERVER_ENV=()
start_server() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  rm -f "$dir/stdin"
  mkfifo "$dir/stdin"
  SERVER_LOG="$dir/server.log"
  env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL -u HAECHI_DATABASE_URL_FILE \
    -u HAECHI_VAULT_MASTER_KEY -u HAECHI_VAULT_MASTER_KEY_FILE -u HAECHI_ADMIN_PASSWORD_FILE \
    -u HAECHI_IDENTITY__ARGON2__MEMORY_KIB -u HAECHI_IDENTITY__ARGON2__ITERATIONS \
    -u HAECHI_IDENTITY__ARGON2__PARALLELISM \
    HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" HAECHI_LOG_LEVEL=warn RUST_LOG=warn "${SERVER_ENV[@]}" \
    nice -n "$NICE" "$BIN" server --data-dir "$dir/data" --listen 127.0.0.1:0 --stop-on-stdin-eof "$@" \
    <"$dir/stdin" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  exec 3>"$dir/stdin" # hold the server's stdin open until stop_server
  BASE=""
  for _ in $(seq 1 600); do
    BASE="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$SERVER_LOG" | head -n1)"
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$BASE" ]; then
    echo "the server did not start; its output:" >&2
    cat "$SERVER_LOG" >&2
    exit 1
  fi
  FP="$(sed -n 's/.*fingerprint: \([0-9A-F:]*\).*/\1/p' "$SERVER_LOG" | head -n1)"
  curl -fsSk "$BASE/api/v1/health" >/dev/null
  echo "server at $BASE (pid $SERVER_PID)" >&2
}

# login USER PASSWORD: prints the user's bearer token.
login() {
  local token
  token="$(curl -fsSk -H 'Content-Type: application/json' -d "{\"user_id\":\"$1\",\"pwd\":\"$2\"}" \
    "$BASE/api/v1/auth" | grep -o 'hct_[A-Za-z0-9_-]*' | head -n1)"
  [ -n "$token" ] || { echo "login of $1 failed" >&2; exit 1; }
  echo "$token"
}

# login_admin: sets TOKEN to the built-in admin's bearer token.
login_admin() { TOKEN="$(login admin "$ADMIN_PASSWORD")"; }

# make_task ID SCRIPT: creates and approves (as the admin, TOKEN) a task run as the current OS user.
make_task() {
  local id="$1" script="$2"
  curl -fsSk -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"id\":\"$id\",\"scriptName\":\"$id.sh\",\"script\":\"$script\",\"osUser\":\"$(id -un)\"}" "$BASE/api/v1/tasks"
  # An approval names the revision reviewed (a new task is revision 1).
  for body in '{"action":"request"}' '{"action":"approve","revisionNo":1}'; do
    curl -fsSk -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -d "$body" "$BASE/api/v1/tasks/$id/approval"
  done
}

rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Latency value from wrk ("812.00us", "1.23ms", "1.02s") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n = n * 60000; else if (v ~ /s$/) n = n * 1000
    printf "%.2f", n }'
}

# wrk_run NAME PATH [WRK_ARG...]: a WARMUP-second warm-up, then a DURATION-second run, THREADS
# threads and CONNECTIONS connections, GET BASE/PATH. Prints "rps p50_ms p99_ms failures answers"
# on stdout (failures: non-2xx/3xx answers and socket errors; answers: every answer wrk read; both
# warm-up included), wrk's report on stderr.
wrk_run() {
  local name="$1" path="$2"
  shift 2
  local args=(-t"$THREADS" -c"$CONNECTIONS" --latency "$@")
  nice -n "$NICE" wrk "${args[@]}" -d"${WARMUP}s" "$BASE$path" >"$WORK/warm-$name.txt"
  say "wrk $name: GET $path, $THREADS threads, $CONNECTIONS connections, ${DURATION}s"
  nice -n "$NICE" wrk "${args[@]}" -d"${DURATION}s" "$BASE$path" >"$WORK/wrk-$name.txt"
  sed 's/^/  /' "$WORK/wrk-$name.txt" >&2
  local rps p50 p99 bad errors total
  rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$WORK/wrk-$name.txt")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$WORK/wrk-$name.txt")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$WORK/wrk-$name.txt")")"
  bad="$(cat "$WORK/warm-$name.txt" "$WORK/wrk-$name.txt" | awk '/Non-2xx or 3xx responses:/ {s += $NF} END {print s + 0}')"
  errors="$(cat "$WORK/warm-$name.txt" "$WORK/wrk-$name.txt" | awk '/Socket errors:/ {gsub(/,/, ""); s += $4 + $6 + $8 + $10} END {print s + 0}')"
  total="$(cat "$WORK/warm-$name.txt" "$WORK/wrk-$name.txt" | awk '/requests in/ {s += $1} END {print s + 0}')"
  echo "$rps $p50 $p99 $((bad + errors)) $total"
}

# The machine: "N CPUs, model".
machine() {
  local cpu
  cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
  echo "$(nproc) CPUs${cpu:+, $cpu}"
}
