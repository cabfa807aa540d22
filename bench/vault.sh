#!/usr/bin/env bash
# Credential value reads by a consumer: GET /v2/credentialvault/credentials/{id}/attributevalues
# over HTTPS against a release `haechi server` holding 10,000 credentials (SQLite store unless
# DATABASE_URL is given).
#
#   bench/vault.sh            # builds, starts a throwaway server on 127.0.0.1, seeds, measures, stops it
#
# Seeding goes through the API (every value must be encrypted by the server): a consumer role, an
# owner, a consumer holding the role, one locker the role consumes, then CREDENTIALS credentials,
# each with one standard attribute and its value, put into the locker (3 requests each, sent by
# SEED_WORKERS concurrent keep-alive connections, python3 standard library only).
#
# Then three wrk runs of the same shape, as the consumer, ids spread at random over all credentials:
#   ceiling   GET /api/v1/me                                       authenticated no-op
#   metadata  GET /v2/credentialvault/credentials/{id}             access check + credential + attributes
#   values    GET /v2/credentialvault/credentials/{id}/attributevalues
#             one query (access check and values) + AES-256-GCM decryption + the audit event
#             (queued, appended in batches)
# and the ratio values / ceiling. It checks that every value read is in the audit log.
#
# Only 127.0.0.1 is contacted (and DATABASE_URL if given); every run has a fixed duration.
# Tunables (environment):
#   CREDENTIALS=10000 SEED_WORKERS=8 THREADS=2 CONNECTIONS=16 DURATION=15 WARMUP=3 SKIP_BUILD=
#   HAECHI_BIN=path/to/haechi (default target/release/haechi)
#   DATABASE_URL=postgres://... (a database of its own: the script's server migrates it)
#   DURABILITY=strict|batched   the server's audit.durability (default strict, as the server's
#                               own default): strict answers a value read once its audit event
#                               is durable (spooled on SQLite); run both to see what strict costs
set -euo pipefail
cd "$(dirname "$0")/.."

CREDENTIALS="${CREDENTIALS:-10000}"
SEED_WORKERS="${SEED_WORKERS:-8}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-16}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-3}"
. bench/lib.sh
need wrk python3

build_release
STORE="SQLite"
DB_ARGS=()
if [ -n "${DATABASE_URL:-}" ]; then
  STORE="PostgreSQL"
  DB_ARGS=(--database-url "$DATABASE_URL")
fi
DURABILITY="${DURABILITY:-strict}"
SERVER_ENV=(HAECHI_AUDIT__DURABILITY="$DURABILITY")
say "starting a release server ($STORE, audit.durability=$DURABILITY, data dir $WORK/data, port picked by the OS)"
start_server "$WORK" "${DB_ARGS[@]}"

# ---- seed ----------------------------------------------------------------------------------------
say "seeding $CREDENTIALS credentials through the API ($SEED_WORKERS connections)"
SEED_START=$SECONDS
BASE="$BASE" ADMIN_PASSWORD="$ADMIN_PASSWORD" CREDENTIALS="$CREDENTIALS" SEED_WORKERS="$SEED_WORKERS" \
  python3 - >"$WORK/seed.env" <<'PY'
import http.client, json, os, ssl, sys, threading, urllib.parse
from concurrent.futures import ThreadPoolExecutor

base = urllib.parse.urlparse(os.environ["BASE"])
n = int(os.environ["CREDENTIALS"])
workers = int(os.environ["SEED_WORKERS"])
ctx = ssl._create_unverified_context()  # the throwaway server's self-signed certificate
local = threading.local()

def call(method, path, body=None, token=None, expect=(200, 201, 204)):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    for attempt in range(2):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection(base.hostname, base.port, context=ctx, timeout=60)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            res = conn.getresponse()
            data = res.read()
            break
        except (http.client.HTTPException, OSError):
            # The server closed a kept-alive connection that sat idle (the main thread's, while
            # the workers seeded): open a new one, once.
            conn.close()
            local.conn = None
            if attempt == 1:
                raise
    if res.status not in expect:
        sys.exit(f"{method} {path}: HTTP {res.status} {data[:300]!r}")
    return json.loads(data) if data else None

def login(user, password):
    return call("POST", "/api/v1/auth", {"user_id": user, "pwd": password})["token"].split(" ", 1)[1]

admin = login("admin", os.environ["ADMIN_PASSWORD"])
role = call("POST", "/api/v1/roles", {"name": "bench-consumers", "permissions": ["vault.use"]}, admin)
for user, roles in (("bench-owner", ["Vault User"]), ("bench-consumer", ["Vault User", "bench-consumers"])):
    call("POST", "/api/v1/users", {"user_id": user, "name": user, "password": "bench-Pass-" + user,
                                   "kind": "api", "roles": roles}, admin)
owner = login("bench-owner", "bench-Pass-bench-owner")
consumer = login("bench-consumer", "bench-Pass-bench-consumer")
locker = call("POST", "/v2/credentialvault/lockers", {"name": "bench-locker"}, owner)["id"]
call("PUT", f"/v2/credentialvault/lockers/{locker}/consumers", {"id": role["id"]}, owner)

def seed(i):
    c = call("POST", "/v2/credentialvault/credentials",
             {"name": f"bench-{i:05d}", "attributes": [{"name": "password", "userProvided": False, "masked": True}]},
             owner)
    cid, aid = c["id"], c["attributes"][0]["id"]
    call("POST", f"/v2/credentialvault/credentials/{cid}/attributevalues",
         [{"credentialAttributeId": aid, "value": f"bench-secret-{cid}"}], owner)
    call("PUT", f"/v2/credentialvault/lockers/{locker}/credentials/{cid}", None, owner)
    return cid

with ThreadPoolExecutor(workers) as pool:
    ids = sorted(pool.map(seed, range(n)))
if ids != list(range(ids[0], ids[0] + n)):
    sys.exit("credential ids are not contiguous; the read script draws ids from a range")
auditor = "bench-auditor"
call("POST", "/api/v1/users", {"user_id": auditor, "name": auditor, "password": "bench-Pass-" + auditor,
                               "kind": "api", "roles": ["Auditor"]}, admin)
print(f"FIRST={ids[0]} LAST={ids[-1]} CONSUMER_TOKEN={consumer} "
      f"AUDITOR_TOKEN={login(auditor, 'bench-Pass-' + auditor)}")
PY
# shellcheck disable=SC1091
. "$WORK/seed.env"
SEED_SECS=$((SECONDS - SEED_START))
echo "seeded credentials $FIRST..$LAST in ${SEED_SECS}s" >&2

AUTH="Authorization: Bearer $CONSUMER_TOKEN"
# Spot check: the consumer reads the right values.
for id in "$FIRST" "$LAST" $(( (FIRST + LAST) / 2 )); do
  got="$(curl -fsSk -H "$AUTH" "$BASE/v2/credentialvault/credentials/$id/attributevalues")"
  case "$got" in
    *"\"value\":\"bench-secret-$id\""*) ;;
    *) echo "credential $id: unexpected answer $got" >&2; exit 1 ;;
  esac
done

audited_reads() {
  curl -fsSk -H "Authorization: Bearer $AUDITOR_TOKEN" \
    "$BASE/api/v1/audit?action=credential.value.read&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'
}

# ---- throughput ----------------------------------------------------------------------------------
cat >"$WORK/ids.lua" <<'LUA'
-- Spreads requests over every seeded credential: FIRST..LAST, SUFFIX after the id.
local first, last = tonumber(os.getenv("FIRST")), tonumber(os.getenv("LAST"))
local suffix = os.getenv("SUFFIX") or ""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + seed)
end
function request()
  return wrk.format("GET", "/v2/credentialvault/credentials/" .. math.random(first, last) .. suffix)
end
LUA

# run_wrk NAME PATH [SUFFIX]: wrk_run as the consumer; with a suffix the path comes from ids.lua
# (a random credential id, then the suffix).
export FIRST LAST
run_wrk() {
  local args=(-H "$AUTH")
  [ -n "${3+set}" ] && args+=(-s "$WORK/ids.lua")
  SUFFIX="${3-}" wrk_run "$1" "$2" "${args[@]}"
}

LOAD_BEFORE="$(cut -d" " -f1-3 /proc/loadavg)" # other work on the machine skews the figures
read -r C_RPS C_P50 C_P99 C_ERR _ < <(run_wrk ceiling /api/v1/me)
read -r M_RPS M_P50 M_P99 M_ERR _ < <(run_wrk metadata /v2/credentialvault/credentials/1 "")
AUDIT_BEFORE="$(audited_reads)"
read -r V_RPS V_P50 V_P99 V_ERR V_TOTAL < <(run_wrk values /v2/credentialvault/credentials/1/attributevalues /attributevalues)
sleep 1 # requests in flight when wrk stopped finish, and queued read events are committed
AUDIT_AFTER="$(audited_reads)"
AUDITED=$((AUDIT_AFTER - AUDIT_BEFORE))
RATIO="$(awk -v a="$V_RPS" -v h="$C_RPS" 'BEGIN { printf "%.2f", (h > 0 ? a / h : 0) }')"
DB_SIZE="$(du -sh "$WORK/data" 2>/dev/null | cut -f1)"

stop_server
if grep -q "bench-secret-" "$WORK/server.log"; then
  echo "a value reached the server log" >&2
  exit 1
fi

# ---- summary -------------------------------------------------------------------------------------
verdict="$(awk -v r="$V_RPS" -v p="$V_P99" 'BEGIN { print ((r >= 10000 && p < 5) ? "met" : "NOT met") }')"
cat <<SUMMARY

==================== haechi bench/vault.sh summary ====================
date            $(date -u +%Y-%m-%dT%H:%MZ)
machine         $(machine); wrk and the server share them
server          release build, $STORE, audit.durability=$DURABILITY, HTTPS (self-signed), 127.0.0.1, Express mode
data            $CREDENTIALS credentials in one locker, one encrypted value each (seeded in ${SEED_SECS}s; data dir $DB_SIZE)
load average    ${LOAD_BEFORE} (1/5/15 min, before the wrk runs)
wrk             $THREADS threads, $CONNECTIONS connections, ${DURATION}s (after ${WARMUP}s warm-up), random ids
GET /api/v1/me (ceiling)              ${C_RPS} req/s  p50 ${C_P50} ms  p99 ${C_P99} ms  errors ${C_ERR}
GET .../credentials/{id} (metadata)   ${M_RPS} req/s  p50 ${M_P50} ms  p99 ${M_P99} ms  errors ${M_ERR}
GET .../{id}/attributevalues (values) ${V_RPS} req/s  p50 ${V_P50} ms  p99 ${V_P99} ms  errors ${V_ERR}
values / ceiling                      ${RATIO}
value reads audited                   ${AUDITED} events for ${V_TOTAL} answers wrk read (warm-up included)
goal (>= 10000 value reads/s, p99 < 5 ms): ${verdict}
=======================================================================
SUMMARY

status=0
if [ "$C_ERR" != 0 ] || [ "$M_ERR" != 0 ] || [ "$V_ERR" != 0 ]; then
  echo "warning: some requests failed (non-2xx or socket errors); the figures above are not valid" >&2
  status=1
fi
# wrk counts the answers it read; requests in flight when it stopped were still served (and
# audited) by the server, so up to one per connection more may be audited, never fewer.
if [ "$AUDITED" -lt "$V_TOTAL" ] || [ "$AUDITED" -gt $((V_TOTAL + 2 * CONNECTIONS)) ]; then
  echo "warning: $V_TOTAL value reads answered but $AUDITED audited" >&2
  status=1
fi
exit $status
