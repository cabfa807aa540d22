#!/usr/bin/env bash
# PostgreSQL through the Haechi gateway vs direct vs PgBouncer, in one run.
#
#   bench/pgbench.sh      # builds, sets up, measures, cleans up
#
# 1. A throwaway database `haechi_bench_<pid>` on 127.0.0.1:5432 with `pgbench -i -s $SCALE`,
#    owned by a throwaway role with a password.
# 2. PgBouncer (Debian package) in transaction pooling mode in front of it, and HAProxy (Debian
#    package) in TCP mode: a proxy that copies bytes and nothing else, the floor of what one more
#    process on every statement's path costs here (HAPROXY=0 leaves it out).
# 3. A release `haechi server` with the PostgreSQL gateway; the role's password in the vault,
#    a target, an account and a policy granting SELECT to the bench user.
# 4. `pgbench -S -n -c $CLIENTS -j $THREADS -T $DURATION` against each (the clients on plain TCP on
#    loopback to all three, so the comparison is the proxies, not TLS), and at one client with per-transaction
#    latencies logged for the p50 each adds.
# 5. The gateway's memory while streaming 1,000,000 rows through psql.
# Every statement through the gateway is parsed (pg_query), checked and audited.
#
# PERF=1 profiles the gateway's run (PERF_OUT=file for the report, PERF_DATA=file keeps perf.data).
# SYSCALLS=1 counts PgBouncer's and the gateway's system calls per transaction (perf). POOL=N is the gateway's
# statement pooling (gateway_pool_size; 2 unless given, POOL=0 turns it off).
# BACKEND=socket has PgBouncer and the gateway reach PostgreSQL over its Unix socket, as a
# proxy on the database's machine is deployed (the target's `socket`; PgBouncer's host=/dir), while the
# clients reach all three over TCP; BACKEND=tcp (the default) has both proxies use 127.0.0.1:5432.
# DURABILITY=strict|batched is the server's audit.durability (default strict, the server's own
# default: a statement's answer is held until its audit event is durable: spooled on SQLite).
# BOUNCER_POOL=N is PgBouncer's default_pool_size (20 unless given: its best here, against 2 and 4).
# Tunables: SCALE=10 CLIENTS=10 THREADS=2 DURATION=20 SKIP_BUILD= PGURL=postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-10}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-20}"
POOL="${POOL:-2}"
BACKEND="${BACKEND:-tcp}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/test}"
ADMIN_PASSWORD="bench-Admin-Pass-1234"
RUN="haechi_bench_$$"
DBPW="bench-db-$RANDOM$RANDOM"

say() { printf '\n=== %s\n' "$*" >&2; }

missing=()
command -v pgbench >/dev/null || missing+=(postgresql-contrib)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v pgbouncer >/dev/null || missing+=(pgbouncer)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing tools: ${missing[*]}" >&2
    exit 1
  fi
fi
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"

if [ -z "${SKIP_BUILD:-}" ]; then
  say "cargo build --release -p haechi"
  cargo build --release -p haechi
fi
BIN="${HAECHI_BIN:-$PWD/target/release/haechi}"

WORK="$(mktemp -d -t haechi-pgbench.XXXXXX)"
chmod 755 "$WORK"
SERVER_PID=""
BOUNCER_PID=""
TCPPROXY_PID=""
cleanup() {
  exec 3>&- 2>/dev/null || true
  [ -n "$SERVER_PID" ] && { sleep 1; kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  [ -n "$BOUNCER_PID" ] && { kill "$BOUNCER_PID" 2>/dev/null || true; }
  [ -n "$TCPPROXY_PID" ] && { kill "$TCPPROXY_PID" 2>/dev/null || true; }
  psql "$PGURL" -qtAc "DROP DATABASE IF EXISTS $RUN WITH (FORCE)" >/dev/null 2>&1 || true
  psql "$PGURL" -qtAc "DROP ROLE IF EXISTS $RUN" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "database $RUN (pgbench scale $SCALE)"
psql "$PGURL" -qtAc "SET password_encryption = 'scram-sha-256'; CREATE ROLE $RUN LOGIN PASSWORD '$DBPW'" >/dev/null
psql "$PGURL" -qtAc "CREATE DATABASE $RUN OWNER $RUN" >/dev/null
PGPASSWORD="$DBPW" pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p 5432 -U "$RUN" "$RUN" >/dev/null 2>&1

case "$BACKEND" in
  socket)
    SOCKET_DIR="$(psql "$PGURL" -qtAc "SELECT split_part(current_setting('unix_socket_directories'), ',', 1)")"
    [ -S "$SOCKET_DIR/.s.PGSQL.5432" ] || { echo "BACKEND=socket: no PostgreSQL socket in '$SOCKET_DIR'" >&2; exit 1; }
    BOUNCER_HOST="$SOCKET_DIR"
    TCPPROXY_SERVER="unix@$SOCKET_DIR/.s.PGSQL.5432"
    TARGET_SOCKET=",\"socket\":\"$SOCKET_DIR\""
    ;;
  tcp) BOUNCER_HOST=127.0.0.1 TARGET_SOCKET="" TCPPROXY_SERVER=127.0.0.1:5432 ;;
  *) echo "BACKEND must be socket or tcp" >&2; exit 1 ;;
esac

say "PgBouncer (transaction pooling)"
BPORT=$((20000 + RANDOM % 10000))
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
$RUN = host=$BOUNCER_HOST port=5432 dbname=$RUN user=$RUN password=$DBPW
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
auth_type = trust
auth_file = $WORK/users.txt
pool_mode = transaction
default_pool_size = ${BOUNCER_POOL:-20}
max_client_conn = 1000
logfile = $WORK/pgbouncer.log
EOF
echo "\"$RUN\" \"$DBPW\"" >"$WORK/users.txt"
chmod 644 "$WORK"/pgbouncer.ini "$WORK"/users.txt
touch "$WORK/pgbouncer.log" && chmod 666 "$WORK/pgbouncer.log"
if [ "$(id -u)" = 0 ]; then
  "$PGBOUNCER" -u postgres "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
else
  "$PGBOUNCER" "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
fi
BOUNCER_PID=$!
sleep 1

. bench/tcpproxy.sh
HPORT=$((40000 + RANDOM % 10000))
if [ "${HAPROXY:-1}" != 0 ]; then
  say "HAProxy (TCP mode, copies bytes only)"
  start_tcpproxy "$WORK" "$HPORT" "$TCPPROXY_SERVER"
fi

say "haechi server with the PostgreSQL gateway (audit.durability=${DURABILITY:-strict})"
GPORT=$((30000 + RANDOM % 10000))
mkfifo "$WORK/stdin"
env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" RUST_LOG=warn \
  HAECHI_GATEWAY_POOL_SIZE="$POOL" HAECHI_AUDIT__DURABILITY="${DURABILITY:-strict}" \
  "$BIN" server --data-dir "$WORK/data" --listen 127.0.0.1:0 --pg-gateway "127.0.0.1:$GPORT" --stop-on-stdin-eof \
  <"$WORK/stdin" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
exec 3>"$WORK/stdin"
BASE=""
for _ in $(seq 1 600); do
  BASE="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n1)"
  [ -n "$BASE" ] && grep -q "PostgreSQL gateway on" "$WORK/server.log" && break
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$WORK/server.log" >&2; exit 1; }
TOKEN="$(curl -fsSk -H 'Content-Type: application/json' -d "{\"user_id\":\"admin\",\"pwd\":\"$ADMIN_PASSWORD\"}" "$BASE/api/v1/auth" | grep -o 'hct_[A-Za-z0-9_-]*' | head -n1)"
api() { curl -fsSk -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
CRED="$(api -d '{"name":"bench-pg","attributes":[{"name":"password","userProvided":false,"masked":true}]}' "$BASE/v2/credentialvault/credentials")"
CRED_ID="$(echo "$CRED" | sed -n 's/^{"id":\([0-9]*\).*/\1/p')"
ATTR_ID="$(echo "$CRED" | sed -n 's/.*"attributes":\[{"id":\([0-9]*\).*/\1/p')"
api -d "[{\"credentialAttributeId\":$ATTR_ID,\"value\":\"$DBPW\"}]" "$BASE/v2/credentialvault/credentials/$CRED_ID/attributevalues" >/dev/null
api -d "{\"name\":\"bench\",\"kind\":\"postgres\",\"host\":\"127.0.0.1\",\"port\":5432,\"database\":\"$RUN\"$TARGET_SOCKET}" "$BASE/api/v1/db/targets" >/dev/null
api -d "{\"account\":\"$RUN\",\"credentialId\":$CRED_ID,\"attribute\":\"password\"}" "$BASE/api/v1/db/targets/bench/accounts" >/dev/null
api -d "{\"userId\":\"admin\",\"account\":\"$RUN\",\"serverAddress\":\"127.0.0.1\",\"serverPort\":5432,\"sqlPrivileges\":[\"SELECT\"]}" \
  "$BASE/dbsafer/api/v1/policy/custom/access-policies" >/dev/null

. bench/cpu.sh
# name host port user password dbname [pid of the proxy]
# Prints the TPS; with a proxy's pid, also that proxy's CPU per transaction (us) and the
# machine's idle share during the run, into $WORK/cpu_<name>.
run_pgbench() {
  local name=$1 port=$2 user=$3 pw=$4 db=$5 pid=${6:-}
  local t0=0 t1=0 i0 i1 b0 b1 s0 s1 ncpu rc=0 sys_pid=
  ncpu=$(nproc)
  [ -n "$pid" ] && t0=$(proc_ticks "$pid")
  i0=$(idle_ticks)
  b0=$(busy_ticks)
  s0=$(steal_ticks)
  if [ -n "${SYSCALLS:-}" ] && [ -n "$pid" ]; then
    # SYSCALLS=1: the proxy's system calls, recorded for the middle of the run (its threads
    # exist once pgbench has connected), counted per transaction by thread and call below.
    (sleep 2 && perf record -q -e raw_syscalls:sys_enter -p "$pid" -o "$WORK/sys_$name.data" \
      -- sleep "$((DURATION - 4))" >/dev/null 2>&1) >/dev/null &
    sys_pid=$!
  fi
  # bash's `time` gives pgbench's own CPU (user and system seconds).
  { TIMEFORMAT='%U %S'; time PGSSLMODE=disable PGPASSWORD="$pw" pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -h 127.0.0.1 -p "$port" -U "$user" "$db" >"$WORK/pgbench_$name.log" 2>&1 || rc=$?; } 2>"$WORK/time_$name"
  if [ "$rc" != 0 ]; then
    echo "pgbench against $name failed:" >&2
    tail -5 "$WORK/pgbench_$name.log" >&2
    exit 1
  fi
  i1=$(idle_ticks)
  b1=$(busy_ticks)
  s1=$(steal_ticks)
  [ -n "$pid" ] && t1=$(proc_ticks "$pid")
  local tps
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$WORK/pgbench_$name.log")
  local proxy_us=""
  if [ -n "$pid" ]; then
    proxy_us=$(awk -v d="$((t1 - t0))" -v u="$TICK_US" -v t="$tps" -v s="$DURATION" \
      'BEGIN {printf "%.1f", d * u / (t * s)}')
  fi
  # Fields: proxy CPU/tx, idle %, pgbench CPU/tx, the rest (PostgreSQL, the kernel's softirqs)/tx,
  # stolen %.
  read -r pu ps <"$WORK/time_$name"
  awk -v i="$((i1 - i0))" -v st="$((s1 - s0))" -v b="$((b1 - b0))" -v x="$((t1 - t0))" -v n="$ncpu" -v s="$DURATION" -v u="$TICK_US" \
    -v p="$proxy_us" -v c="$(awk -v a="$pu" -v b="$ps" 'BEGIN {print a + b}')" -v t="$tps" \
    'BEGIN {printf "%s %.0f %.1f %.1f %.0f\n", (p == "" ? "-" : p), 100 * i * u / (n * s * 1000000),
      c * 1000000 / (t * s), (b * u - x * u - c * 1000000) / (t * s), 100 * st * u / (n * s * 1000000)}' >"$WORK/cpu_$name"
  if [ -n "${SYSCALLS:-}" ] && [ -n "$pid" ]; then
    wait "$sys_pid" || true
    syscalls_per_tx "$name" "$tps" >"$WORK/sys_$name"
  fi
  echo "$tps"
}
# syscalls_per_tx NAME TPS: the calls recorded for NAME per transaction, in all and by thread
# name and call (x86-64 numbers; the others by number).
syscalls_per_tx() {
  local name=$1 tps=$2
  perf script -i "$WORK/sys_$name.data" -F comm,trace 2>/dev/null | awk -v t="$tps" -v s="$((DURATION - 4))" '
    BEGIN { n[0]="read"; n[1]="write"; n[3]="close"; n[7]="poll"; n[17]="pread64"; n[18]="pwrite64";
            n[20]="writev"; n[44]="sendto"; n[45]="recvfrom"; n[46]="sendmsg"; n[47]="recvmsg";
            n[202]="futex"; n[228]="clock_gettime"; n[232]="epoll_wait"; n[233]="epoll_ctl";
            n[281]="epoll_pwait"; n[290]="eventfd2"; n[24]="sched_yield"; n[35]="nanosleep";
            n[230]="clock_nanosleep"; n[441]="epoll_pwait2"; n[74]="fsync"; n[75]="fdatasync" }
    { nr = $0; sub(/.*NR /, "", nr); sub(/ .*/, "", nr); comm = $1
      k = comm " " (nr in n ? n[nr] : "nr" nr); c[k]++; all++ }
    END { tx = t * s; printf "%.2f calls per transaction:", all / tx
          for (k in c) if (c[k] / tx >= 0.05) printf " %s %.2f;", k, c[k] / tx; print "" }'
}
p50_one_client() {
  local port=$1 user=$2 pw=$3 db=$4 prefix="$WORK/lat_$1"
  (cd "$WORK" && PGSSLMODE=disable PGPASSWORD="$pw" pgbench -n -S -c 1 -j 1 -T 10 -l --log-prefix="$prefix" \
    -h 127.0.0.1 -p "$port" -U "$user" "$db" >/dev/null 2>&1)
  cat "$prefix".* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]}'
}

say "pgbench -S -c $CLIENTS -j $THREADS -T $DURATION"
DIRECT=$(run_pgbench direct 5432 "$RUN" "$DBPW" "$RUN")
BOUNCER=$(run_pgbench pgbouncer "$BPORT" "$RUN" "$DBPW" "$RUN" "$BOUNCER_PID")
HAPROXY_TPS=-
[ -n "$TCPPROXY_PID" ] && HAPROXY_TPS=$(run_pgbench haproxy "$HPORT" "$RUN" "$DBPW" "$RUN" "$TCPPROXY_PID")
if [ -n "${PERF:-}" ]; then
  # PERF=1: where the gateway spends its time during its run (perf from Debian's linux-perf).
  # System-wide (-a, then only the server's samples reported): perf -p misses threads started later.
  perf record -q -F 499 -g -a -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  PERF_PID=$!
fi
GATEWAY=$(run_pgbench gateway "$GPORT" "admin@$RUN" "$ADMIN_PASSWORD" bench "$SERVER_PID")
if [ -n "${PERF:-}" ]; then
  wait "$PERF_PID" || true
  [ -n "${PERF_DATA:-}" ] && cp "$WORK/perf.data" "$PERF_DATA"
  { perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort comm 2>/dev/null | grep -v "^$" | grep -v "^#" | head -16
    perf report -i "$WORK/perf.data" --pid "$SERVER_PID" --stdio --no-children -g none --percent-limit 0.7 --sort comm,dso,symbol 2>/dev/null | grep -v "^$" | head -80; } >"${PERF_OUT:-/dev/stderr}" || true
fi
# Events per audit commit during the gateway's run (the server's own figure: the sum over the count
# of haechi_audit_commit_events, per committer).
COMMITS="$(api "$BASE/metrics" 2>/dev/null | awk '
  /^haechi_audit_commit_events_(sum|count)\{/ {
    by = $1; sub(/.*by="/, "", by); sub(/".*/, "", by)
    if ($1 ~ /_sum/) s[by] = $2; else c[by] = $2
  }
  END { out = ""; for (b in c) if (c[b] > 0) out = out sprintf("%s %.0f commits, %.2f events each; ", b, c[b], s[b] / c[b]); print (out == "" ? "-" : out) }')"
say "one client, p50 latency"
P50_DIRECT=$(p50_one_client 5432 "$RUN" "$DBPW" "$RUN")
P50_GATEWAY=$(p50_one_client "$GPORT" "admin@$RUN" "$ADMIN_PASSWORD" bench)

say "memory while streaming 1,000,000 rows through the gateway"
RSS_BEFORE=$(awk '/VmRSS/ {print $2}' /proc/$SERVER_PID/status)
# Reset the peak (VmHWM) so it measures the streaming, not the pgbench runs before it.
echo 5 >/proc/$SERVER_PID/clear_refs 2>/dev/null || true
PGSSLMODE=disable PGPASSWORD="$ADMIN_PASSWORD" psql -X -At -h 127.0.0.1 -p "$GPORT" -U "admin@$RUN" bench \
  -c "SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g" >/dev/null
RSS_PEAK=$(awk '/VmHWM/ {print $2}' /proc/$SERVER_PID/status)

# fig NAME FIELD: one figure of run_pgbench's accounting for NAME, or - when it did not run.
fig() { if [ -f "$WORK/cpu_$1" ]; then cut -d' ' -f"$2" "$WORK/cpu_$1"; else echo -; fi; }
cat <<EOF

== pgbench -S -n -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, same run ==
direct      $DIRECT tps
pgbouncer   $BOUNCER tps   (transaction pooling)
haproxy     $HAPROXY_TPS tps   (TCP mode: copies bytes, one database connection per client)
gateway     $GATEWAY tps   (every statement parsed, checked, audited; gateway_pool_size $POOL)
proxies to PostgreSQL over: $BACKEND$( [ "$BACKEND" = socket ] && echo " ($SOCKET_DIR)"); clients over TCP to each
gateway / direct    $(awk -v g="$GATEWAY" -v d="$DIRECT" 'BEGIN {printf "%.2f", g/d}')   (goal >= 0.80)
gateway / pgbouncer $(awk -v g="$GATEWAY" -v b="$BOUNCER" 'BEGIN {printf "%.2f", g/b}')   (goal >= 1.00)
pgbouncer / direct  $(awk -v b="$BOUNCER" -v d="$DIRECT" 'BEGIN {printf "%.2f", b/d}'), haproxy / direct $(awk -v h="$HAPROXY_TPS" -v d="$DIRECT" 'BEGIN {if (h == "-") print "-"; else printf "%.2f", h/d}')
proxy CPU per transaction: pgbouncer $(fig pgbouncer 1) us, haproxy $(fig haproxy 1) us, gateway $(fig gateway 1) us
machine idle during the run: direct $(fig direct 2)%, pgbouncer $(fig pgbouncer 2)%, haproxy $(fig haproxy 2)%, gateway $(fig gateway 2)%
stolen by the hypervisor during the run: direct $(fig direct 5)%, pgbouncer $(fig pgbouncer 5)%, haproxy $(fig haproxy 5)%, gateway $(fig gateway 5)%
pgbench CPU per transaction: direct $(fig direct 3) us, pgbouncer $(fig pgbouncer 3) us, haproxy $(fig haproxy 3) us, gateway $(fig gateway 3) us
everything else (PostgreSQL, softirqs) per transaction: direct $(fig direct 4) us, pgbouncer $(fig pgbouncer 4) us, haproxy $(fig haproxy 4) us, gateway $(fig gateway 4) us
one client p50: direct ${P50_DIRECT} us, gateway ${P50_GATEWAY} us, added $(awk -v g="$P50_GATEWAY" -v d="$P50_DIRECT" 'BEGIN {printf "%.1f", g-d}') us
audit commits during the gateway run: ${COMMITS}$( [ -n "${SYSCALLS:-}" ] && printf '\nsystem calls: pgbouncer %s\nsystem calls: gateway %s' "$(cat "$WORK/sys_pgbouncer" 2>/dev/null)" "$(cat "$WORK/sys_gateway" 2>/dev/null)")
gateway RSS: ${RSS_BEFORE} KiB before, ${RSS_PEAK} KiB peak after streaming 1,000,000 rows (~110 MB)
EOF
