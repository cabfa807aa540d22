#!/usr/bin/env bash
# MariaDB through the Haechi gateway vs direct, in one run: sysbench oltp_read_only, then the
# gateway's memory with 500 idle client connections.
#
#   bench/sysbench.sh
#
# A throwaway database and user (with a password) on 127.0.0.1:3306, `sysbench oltp_read_only
# prepare`, a release `haechi server` with the MySQL gateway (the password in the vault, a
# target, an account, a policy granting SELECT, BEGIN, COMMIT), then `sysbench oltp_read_only
# run` direct, through HAProxy in TCP mode (it copies bytes and nothing else: the floor of what
# one more process on every statement's path costs here; HAPROXY=0 leaves it out) and through the
# gateway (plain TCP on loopback for all). Every statement through
# the gateway is lexed, parsed, checked and audited (sysbench uses server-side prepared
# statements: checked at COM_STMT_PREPARE and again at each COM_STMT_EXECUTE).
#
# PERF=1 profiles the gateway's run (PERF_OUT=file for the report). BACKEND=socket
# has the gateway reach MariaDB over its Unix socket (the target's `socket`), as a gateway on the
# database's machine is deployed, while sysbench reaches both over TCP; BACKEND=tcp (the default) uses
# 127.0.0.1:3306 for the gateway too.
# Tunables: TABLES=4 TABLE_SIZE=100000 THREADS=10 DURATION=20 IDLE=500 SKIP_BUILD=
set -euo pipefail
cd "$(dirname "$0")/.."

TABLES="${TABLES:-4}"
TABLE_SIZE="${TABLE_SIZE:-100000}"
THREADS="${THREADS:-10}"
DURATION="${DURATION:-20}"
IDLE="${IDLE:-500}"
BACKEND="${BACKEND:-tcp}"
ADMIN_PASSWORD="bench-Admin-Pass-1234"
RUN="hbench_$$"
DBPW="bench-db-$RANDOM$RANDOM"

say() { printf '\n=== %s\n' "$*" >&2; }
my() { mariadb -h 127.0.0.1 -P 3306 -u root -N -B -e "$1"; }
case "$BACKEND" in
  socket)
    SOCKET="$(my 'SELECT @@socket')"
    [ -S "$SOCKET" ] || { echo "BACKEND=socket: MariaDB's socket '$SOCKET' is not there" >&2; exit 1; }
    TARGET_SOCKET=",\"socket\":\"$SOCKET\""
    TCPPROXY_SERVER="unix@$SOCKET"
    ;;
  tcp) TARGET_SOCKET="" TCPPROXY_SERVER=127.0.0.1:3306 ;;
  *) echo "BACKEND must be socket or tcp" >&2; exit 1 ;;
esac

missing=()
command -v sysbench >/dev/null || missing+=(sysbench)
command -v mariadb >/dev/null || missing+=(mariadb-client)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing tools: ${missing[*]}" >&2
    exit 1
  fi
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  say "cargo build --release -p haechi"
  cargo build --release -p haechi
fi
BIN="${HAECHI_BIN:-$PWD/target/release/haechi}"

WORK="$(mktemp -d -t haechi-sysbench.XXXXXX)"
SERVER_PID=""
TCPPROXY_PID=""
OLD_MAX="$(my 'SELECT @@GLOBAL.max_connections')"
cleanup() {
  exec 3>&- 2>/dev/null || true
  [ -n "$TCPPROXY_PID" ] && { kill "$TCPPROXY_PID" 2>/dev/null || true; }
  [ -n "$SERVER_PID" ] && { sleep 1; kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  my "SET GLOBAL max_connections = $OLD_MAX; DROP DATABASE IF EXISTS $RUN; DROP USER IF EXISTS '$RUN'@'%'" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "database $RUN ($TABLES tables x $TABLE_SIZE rows)"
my "CREATE DATABASE $RUN; CREATE USER '$RUN'@'%' IDENTIFIED BY '$DBPW'; GRANT ALL ON $RUN.* TO '$RUN'@'%'"
SB=(sysbench oltp_read_only --db-driver=mysql --mysql-ssl=off --tables="$TABLES" --table-size="$TABLE_SIZE")
"${SB[@]}" --mysql-host=127.0.0.1 --mysql-port=3306 --mysql-user="$RUN" --mysql-password="$DBPW" --mysql-db="$RUN" prepare >/dev/null

say "haechi server with the MySQL gateway"
GPORT=$((30000 + RANDOM % 10000))
mkfifo "$WORK/stdin"
env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" RUST_LOG=warn \
  "$BIN" server --data-dir "$WORK/data" --listen 127.0.0.1:0 --mysql-gateway "127.0.0.1:$GPORT" --stop-on-stdin-eof \
  <"$WORK/stdin" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
exec 3>"$WORK/stdin"
BASE=""
for _ in $(seq 1 600); do
  BASE="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n1)"
  [ -n "$BASE" ] && grep -q "MySQL gateway on" "$WORK/server.log" && break
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$WORK/server.log" >&2; exit 1; }
TOKEN="$(curl -fsSk -H 'Content-Type: application/json' -d "{\"user_id\":\"admin\",\"pwd\":\"$ADMIN_PASSWORD\"}" "$BASE/api/v1/auth" | grep -o 'hct_[A-Za-z0-9_-]*' | head -n1)"
api() { curl -fsSk -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
CRED="$(api -d '{"name":"bench-my","attributes":[{"name":"password","userProvided":false,"masked":true}]}' "$BASE/v2/credentialvault/credentials")"
CRED_ID="$(echo "$CRED" | sed -n 's/^{"id":\([0-9]*\).*/\1/p')"
ATTR_ID="$(echo "$CRED" | sed -n 's/.*"attributes":\[{"id":\([0-9]*\).*/\1/p')"
api -d "[{\"credentialAttributeId\":$ATTR_ID,\"value\":\"$DBPW\"}]" "$BASE/v2/credentialvault/credentials/$CRED_ID/attributevalues" >/dev/null
api -d "{\"name\":\"bench\",\"kind\":\"mysql\",\"host\":\"127.0.0.1\",\"port\":3306,\"database\":\"$RUN\"$TARGET_SOCKET}" "$BASE/api/v1/db/targets" >/dev/null
api -d "{\"account\":\"$RUN\",\"credentialId\":$CRED_ID,\"attribute\":\"password\"}" "$BASE/api/v1/db/targets/bench/accounts" >/dev/null
api -d "{\"userId\":\"admin\",\"account\":\"$RUN\",\"serverAddress\":\"127.0.0.1\",\"serverPort\":3306,\"sqlPrivileges\":[\"SELECT\",\"BEGIN\",\"COMMIT\"]}" \
  "$BASE/dbsafer/api/v1/policy/custom/access-policies" >/dev/null

. bench/cpu.sh
# port user password db [pid of the proxy]: prints the TPS; writes the proxy's CPU per
# transaction and per query (us), the machine's idle and stolen shares (%) to $WORK/cpu_<port>.
tps() {
  local log="$WORK/sysbench_$1.log" t q pid=${5:-} p0=0 p1=0 i0 i1 s0 s1
  [ -n "$pid" ] && p0=$(proc_ticks "$pid")
  i0=$(idle_ticks)
  s0=$(steal_ticks)
  LIBMYSQL_PLUGINS=mysql_clear_password LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN=1 "${SB[@]}" --threads="$THREADS" --time="$DURATION" --mysql-host=127.0.0.1 --mysql-port="$1" \
    --mysql-user="$2" --mysql-password="$3" --mysql-db="$4" run >"$log" 2>&1 || true
  i1=$(idle_ticks)
  s1=$(steal_ticks)
  [ -n "$pid" ] && p1=$(proc_ticks "$pid")
  t=$(sed -n 's/.*transactions: *[0-9]* *(\([0-9.]*\) per sec.*/\1/p' "$log")
  q=$(sed -n 's/.*queries: *[0-9]* *(\([0-9.]*\) per sec.*/\1/p' "$log")
  if [ -z "$t" ]; then
    echo "sysbench against port $1 failed:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  awk -v d="$((p1 - p0))" -v u="$TICK_US" -v t="$t" -v q="$q" -v s="$DURATION" -v n="$(nproc)" \
    -v i="$((i1 - i0))" -v st="$((s1 - s0))" \
    'BEGIN {printf "%.1f %.1f %.0f %.0f\n", d * u / (t * s), d * u / (q * s),
      100 * i * u / (n * s * 1000000), 100 * st * u / (n * s * 1000000)}' >"$WORK/cpu_$1"
  echo "$t"
}
say "sysbench oltp_read_only --threads=$THREADS --time=$DURATION"
DIRECT=$(tps 3306 "$RUN" "$DBPW" "$RUN")
HAPROXY_TPS=-
if [ "${HAPROXY:-1}" != 0 ]; then
  . bench/tcpproxy.sh
  HPORT=$((40000 + RANDOM % 10000))
  start_tcpproxy "$WORK" "$HPORT" "$TCPPROXY_SERVER"
  HAPROXY_TPS=$(tps "$HPORT" "$RUN" "$DBPW" "$RUN" "$TCPPROXY_PID")
fi
if [ -n "${PERF:-}" ]; then
  # PERF=1: where the gateway spends its time during its run (PERF_OUT=file for the report).
  # System-wide (-a, then only the server's samples reported): perf -p misses threads started later.
  perf record -q -F 499 -g -a -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  PERF_PID=$!
fi
GATEWAY=$(tps "$GPORT" "admin@$RUN" "$ADMIN_PASSWORD" bench "$SERVER_PID")
if [ -n "${PERF:-}" ]; then
  wait "$PERF_PID" || true
  { perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort comm 2>/dev/null | grep -v "^$" | grep -v "^#" | head -16
    perf report -i "$WORK/perf.data" --pid "$SERVER_PID" --stdio --no-children -g none --percent-limit 0.7 --sort comm,dso,symbol 2>/dev/null | grep -v "^$" | head -80; } >"${PERF_OUT:-/dev/stderr}" || true
fi

say "$IDLE idle client connections through the gateway"
my "SET GLOBAL max_connections = $((IDLE + 100))"
RSS_BEFORE=$(awk '/VmRSS/ {print $2}' /proc/$SERVER_PID/status)
RSS_IDLE=$(python3 - "$GPORT" "admin@$RUN" "$ADMIN_PASSWORD" bench "$IDLE" "$SERVER_PID" <<'PY'
import socket, struct, sys
port, user, pw, db, n, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
def packet(s):
    hdr = s.recv(4, socket.MSG_WAITALL); ln = int.from_bytes(hdr[:3], 'little')
    return s.recv(ln, socket.MSG_WAITALL)
socks = []
for _ in range(n):
    s = socket.create_connection(('127.0.0.1', port)); packet(s)
    caps = 0x200 | 0x8000 | 0x8 | 0x80000
    auth = pw.encode() + b'\0'
    body = struct.pack('<IIB', caps, 16777215, 45) + b'\0' * 23 + user.encode() + b'\0' + bytes([len(auth)]) + auth + db.encode() + b'\0' + b'mysql_clear_password\0'
    s.sendall(len(body).to_bytes(3, 'little') + b'\x01' + body)
    assert packet(s)[0] == 0
    socks.append(s)
print(open(f'/proc/{pid}/status').read().split('VmRSS:')[1].split()[0])
PY
)

# fig PORT FIELD: one figure of tps's accounting for the run on PORT, or - when it did not run.
fig() { if [ -n "$1" ] && [ -f "$WORK/cpu_$1" ]; then cut -d' ' -f"$2" "$WORK/cpu_$1"; else echo -; fi; }
cat <<EOF

== sysbench oltp_read_only, $TABLES x $TABLE_SIZE rows, --threads=$THREADS --time=$DURATION, same run ==
direct    $DIRECT tps
haproxy   $HAPROXY_TPS tps   (TCP mode: copies bytes; CPU $(fig "${HPORT:-}" 2) us per query, machine idle $(fig "${HPORT:-}" 3)%)
gateway   $GATEWAY tps   (every statement lexed, parsed, checked, audited)
gateway to MariaDB over: $BACKEND$( [ "$BACKEND" = socket ] && echo " ($SOCKET)"); sysbench over TCP to each
gateway / direct   $(awk -v g="$GATEWAY" -v d="$DIRECT" 'BEGIN {printf "%.2f", g/d}')   (goal >= 0.80); haproxy / direct $(awk -v h="$HAPROXY_TPS" -v d="$DIRECT" 'BEGIN {if (h == "-") print "-"; else printf "%.2f", h/d}')
gateway CPU: $(cut -d' ' -f1 "$WORK/cpu_$GPORT") us per transaction, $(cut -d' ' -f2 "$WORK/cpu_$GPORT") us per query
machine idle during the run: direct $(cut -d' ' -f3 "$WORK/cpu_3306")%, gateway $(cut -d' ' -f3 "$WORK/cpu_$GPORT")%
stolen by the hypervisor during the run: direct $(cut -d' ' -f4 "$WORK/cpu_3306")%, gateway $(cut -d' ' -f4 "$WORK/cpu_$GPORT")%
gateway RSS: $RSS_BEFORE KiB before, $RSS_IDLE KiB with $IDLE idle client connections (each with its database connection)
EOF
