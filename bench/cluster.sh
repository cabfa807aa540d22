#!/usr/bin/env bash
# Several servers behind a load balancer (issue 25): three release `haechi server`s on one
# PostgreSQL database, behind HAProxy in TCP mode (TLS passes through to the servers, which
# share one certificate), and many simulated agents (target/release/haechi-loadagents, each on
# its own TLS WebSocket with its own credential, speaking the real agent protocol) spread over
# them by HAProxy.
#
#   bench/cluster.sh
#
# 1. fan-out: a no-op task on all AGENTS (3000) nodes, POSTed through HAProxy (so to any one
#    server; two thirds of the agents are connected to the other two), until every node is END,
#    RUNS (3) times. Goal: < 3 s from POST to all END.
# 2. cross-server start latency: a no-op task on one agent connected to server 2, POSTed to
#    server 1 directly, SINGLE (20) times: POST → the agent's start, p50 and p99.
# 3. propagation: a token revoked on server 1 → its first refusal on server 2 (which had it
#    cached), REVOKES (50) times, p50 and p99 (bench/cluster_revoke.py). Goal: < 100 ms.
#
# Only 127.0.0.1 is contacted. The database is a throwaway one on the machine's PostgreSQL
# (PG_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/test), dropped at exit. HAProxy is
# installed from Debian (apt-get, as root) when it is missing. Tunables (environment):
#   AGENTS=3000 RUNS=3 SINGLE=20 REVOKES=50 SERVERS=3 SKIP_BUILD= PG_ADMIN_URL=...
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS="${AGENTS:-3000}"; RUNS="${RUNS:-3}"; SINGLE="${SINGLE:-20}"; SERVERS="${SERVERS:-3}"
REVOKES="${REVOKES:-50}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
. bench/exec_common.sh
need haproxy psql:postgresql-client openssl

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open files limit: $(ulimit -n); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

build

# One database for the three servers.
DB="haechi_bench_cluster_$$"
psql "$PG_ADMIN_URL" -X -qtAc "CREATE DATABASE $DB" >/dev/null
AT_EXIT+=("psql '$PG_ADMIN_URL' -X -qtAc 'DROP DATABASE IF EXISTS $DB WITH (FORCE)' >/dev/null")
DB_URL="${PG_ADMIN_URL%/*}/$DB"

# One certificate for the three servers: HAProxy passes TLS through, so the agents see
# whichever server they reach and pin one fingerprint.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=haechi-bench" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null

# start_node I: server I (1-based) with its own data directory, on the shared database; sets
# NODE_BASE[I], NODE_PID[I], FP.
declare -a NODE_BASE NODE_PID NODE_FD
start_node() {
  local i="$1" dir="$WORK/s$1" fd
  mkdir -p "$dir"
  mkfifo "$dir/stdin"
  env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL -u HAECHI_DATABASE_URL_FILE \
    -u HAECHI_VAULT_MASTER_KEY -u HAECHI_VAULT_MASTER_KEY_FILE -u HAECHI_ADMIN_PASSWORD_FILE \
    -u HAECHI_IDENTITY__ARGON2__MEMORY_KIB -u HAECHI_IDENTITY__ARGON2__ITERATIONS \
    HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" HAECHI_LOG_LEVEL=warn RUST_LOG=warn \
    HAECHI_TASKS__ALLOW_SELF_APPROVAL=true HAECHI_DATABASE_MAX_CONNECTIONS=12 \
    HAECHI_TLS_CERT="$WORK/tls.crt" HAECHI_TLS_KEY="$WORK/tls.key" \
    nice -n "$NICE" "$BIN" server --data-dir "$dir/data" --listen 127.0.0.1:0 --stop-on-stdin-eof \
    --no-local-agent --database-url "$DB_URL" <"$dir/stdin" >"$dir/server.log" 2>&1 &
  NODE_PID[$i]=$!
  EXTRA_PIDS+=("${NODE_PID[$i]}")
  exec {fd}>"$dir/stdin"
  NODE_FD[$i]=$fd
  CLOSE_FDS+=("$fd")
  local base=""
  for _ in $(seq 1 600); do
    base="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$dir/server.log" | head -n1)"
    [ -n "$base" ] && break
    kill -0 "${NODE_PID[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$base" ] || { echo "server $i did not start:" >&2; cat "$dir/server.log" >&2; exit 1; }
  NODE_BASE[$i]="$base"
  FP="$(sed -n 's/.*fingerprint: \([0-9A-F:]*\).*/\1/p' "$dir/server.log" | head -n1)"
  echo "server $i at $base (pid ${NODE_PID[$i]})" >&2
}

say "starting $SERVERS release servers on one PostgreSQL database ($DB)"
for i in $(seq 1 "$SERVERS"); do start_node "$i"; done

HAPROXY_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
{
  # Two descriptors per proxied connection, within this shell's open files limit (HAProxy
  # refuses to start when maxconn needs more than it may open).
  printf 'global\n  maxconn %s\n  log stderr format raw local0 err\n' "$((($(ulimit -n) - 200) / 2))"
  printf 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n'
  printf 'frontend haechi\n  bind 127.0.0.1:%s\n  default_backend servers\n' "$HAPROXY_PORT"
  printf 'backend servers\n  balance roundrobin\n'
  for i in $(seq 1 "$SERVERS"); do
    printf '  server s%s %s check\n' "$i" "${NODE_BASE[$i]#https://}"
  done
} >"$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
EXTRA_PIDS+=("$!")
sleep 0.5
kill -0 "$!" 2>/dev/null || { echo "HAProxy did not start:" >&2; cat "$WORK/haproxy.log" >&2; exit 1; }
BASE="https://127.0.0.1:$HAPROXY_PORT"
for _ in $(seq 1 100); do curl -fsSk "$BASE/api/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
echo "HAProxy (TCP mode, round robin) at $BASE" >&2
login_admin
make_task noop "true"

say "fan-out: $AGENTS simulated agents through HAProxy, a no-op task on all of them, $RUNS runs"
"$LOAD" --server "$BASE" --fingerprint "$FP" agents --count "$AGENTS" --prefix cl- \
  --admin-token "$TOKEN" --creds "$WORK/creds" --concurrency 128 --run-task noop --runs "$RUNS" \
  --hold-secs 0 | tee "$WORK/fanout.out"
q="SELECT COUNT(*) FROM nodes WHERE id LIKE 'cl-%'"
echo "nodes enrolled: $(psql "$DB_URL" -X -qtAc "$q")"
for i in $(seq 1 "$SERVERS"); do
  echo "server $i RSS after the fan-out: $(rss_mib "${NODE_PID[$i]}") MiB"
done

say "cross-server start latency: POST on server 1, one agent connected to server 2, $SINGLE runs"
"$LOAD" --server "${NODE_BASE[2]}" --fingerprint "$FP" agents --count 1 --prefix one- \
  --admin-token "$TOKEN" --creds "$WORK/creds-one" --hold-secs 3600 >"$WORK/one.out" 2>&1 &
ONE_PID=$!
EXTRA_PIDS+=("$ONE_PID")
for _ in $(seq 1 300); do grep -q "connected 1 agents" "$WORK/one.out" && break; sleep 0.1; done
lat=()
for _ in $(seq 1 "$SINGLE"); do
  t0="$(date +%s%3N)"
  no="$(curl -fsSk -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"nodeIdList":["one-00001"],"arguments":[]}' "${NODE_BASE[1]}/opmate/task/noop/instance" \
    | sed -n 's/.*"taskInstanceNo":\([0-9]*\).*/\1/p')"
  for _ in $(seq 1 500); do
    started="$(psql "$DB_URL" -X -qtAc "SELECT start_at FROM node_executions WHERE instance_no = $no AND start_at IS NOT NULL")"
    [ -n "$started" ] && break
    sleep 0.01
  done
  lat+=("$((started - t0))")
done
sorted="$(printf '%s\n' "${lat[@]}" | sort -n | tr '\n' ' ')"
p50="$(printf '%s\n' "${lat[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
p99="$(printf '%s\n' "${lat[@]}" | sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.99 + 0.5); if (i < 1) i = 1; print a[i] }')"
echo "POST on server 1 → started on server 2's agent: p50 ${p50} ms, p99 ${p99} ms (all: $sorted)"

say "propagation: a token revoked on server 1, refused on server 2, $REVOKES times"
python3 bench/cluster_revoke.py "${NODE_BASE[1]}" "${NODE_BASE[2]}" "$ADMIN_PASSWORD" "$REVOKES" | tee "$WORK/revoke.out"

say "summary (load average now: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs)"
grep -E '^(connected|run )' "$WORK/fanout.out"
echo "cross-server start: p50 ${p50} ms, p99 ${p99} ms"
grep -E '^RESULT revoke' "$WORK/revoke.out"
