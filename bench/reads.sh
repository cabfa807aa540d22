#!/usr/bin/env bash
# Authenticated routes that read the store, against the ceiling of the same server in the same run
# (issue 19, item 17): a release `haechi server` on SQLite (or DATABASE_URL), HTTPS, 127.0.0.1.
#
#   bench/reads.sh            # builds, starts a throwaway server, seeds, measures, stops it
#
# Seeding goes through the API as the admin: WORKFLOWS workflows and CREDENTIALS vault credentials
# (the local agent is the one node). Then wrk runs of the same shape, as the admin:
#   ceiling     GET /api/v1/health                       TLS + routing, no token, no store
#   token       GET /api/v1/me                           + token (cached) and permissions, no store
#   user        GET /api/v1/users/admin                  one user and its roles
#   nodes       GET /opmate/node                         OPMATE node list (a page and its total)
#   credentials GET /v2/credentialvault/credentials      the vault's credential list (visibility; kept
#                                                        in memory while nothing it shows changes)
#   workflows   GET /services/workflow/list              MDRM workflow list
# and each route's ratio to the ceiling. The goal of item 17: each store read >= 20,000 req/s with
# p99 < 5 ms on SQLite.
#
# Only 127.0.0.1 is contacted (and DATABASE_URL if given); every run has a fixed duration.
# Tunables (environment):
#   WORKFLOWS=50 CREDENTIALS=50 THREADS=2 CONNECTIONS=32 DURATION=10 WARMUP=2 SKIP_BUILD= NICE=0
#   HAECHI_BIN=path/to/haechi (default target/release/haechi)
#   PERF=NAME (user, nodes, credentials, workflows...) records the server with perf during that
#   route's run and prints the flat profile (PERF_OUT=file for the report)
#   DATABASE_URL=postgres://... (a database of its own: the script's server migrates it)
set -euo pipefail
cd "$(dirname "$0")/.."

WORKFLOWS="${WORKFLOWS:-50}"
CREDENTIALS="${CREDENTIALS:-50}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
. bench/lib.sh
need wrk

build_release
STORE="SQLite"
DB_ARGS=()
if [ -n "${DATABASE_URL:-}" ]; then
  STORE="PostgreSQL"
  DB_ARGS=(--database-url "$DATABASE_URL")
fi
say "starting a release server ($STORE, data dir $WORK/data, port picked by the OS)"
start_server "$WORK" "${DB_ARGS[@]}"
login_admin
AUTH=(-H "Authorization: Bearer $TOKEN")

say "seeding $WORKFLOWS workflows and $CREDENTIALS credentials"
post() { # post PATH JSON: fails the bench unless the answer is 2xx
  curl -fsSk -o /dev/null "${AUTH[@]}" -H 'Content-Type: application/json' -d "$2" "$BASE$1"
}
for i in $(seq 1 "$WORKFLOWS"); do
  post /api/v1/workflows "{\"name\":\"bench-wf-$i\",\"group\":\"bench\",\"steps\":[{\"name\":\"s\",\"type\":\"sleep\",\"seconds\":1}]}"
done
for i in $(seq 1 "$CREDENTIALS"); do
  post /v2/credentialvault/credentials "{\"name\":\"bench-cred-$i\",\"attributes\":[{\"name\":\"password\",\"userProvided\":false,\"masked\":true}]}"
done
# Every route must answer 200 before it is measured (a fast 4xx would be no figure at all).
for path in /api/v1/users/admin /opmate/node /v2/credentialvault/credentials /services/workflow/list; do
  code="$(curl -sSk -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$BASE$path")"
  [ "$code" = 200 ] || { echo "GET $path answered $code" >&2; exit 1; }
done

LOAD_BEFORE="$(cut -d" " -f1-3 /proc/loadavg)"
declare -A RPS P50 P99 ERR
measure() { # measure NAME PATH [WRK_ARG...]
  local name="$1" perf_pid=""
  if [ "${PERF:-}" = "$name" ]; then
    need perf
    perf record -F 499 -g -o "$WORK/perf.data" -p "$SERVER_PID" -- sleep "$((WARMUP + DURATION))" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  read -r "RPS[$name]" "P50[$name]" "P99[$name]" "ERR[$name]" _ < <(wrk_run "$@")
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    { echo "perf: where the server's samples went during the $name run (flat, by thread, library, symbol)"
      perf report -i "$WORK/perf.data" --stdio --no-children -g none --percent-limit 0.7 --sort comm,dso,symbol 2>/dev/null | grep -v "^$" | head -70; } >"${PERF_OUT:-/dev/stderr}" || true
  fi
}
measure ceiling /api/v1/health
measure token /api/v1/me "${AUTH[@]}"
measure user /api/v1/users/admin "${AUTH[@]}"
measure nodes /opmate/node "${AUTH[@]}"
measure credentials /v2/credentialvault/credentials "${AUTH[@]}"
measure workflows /services/workflow/list "${AUTH[@]}"
LOAD_AFTER="$(cut -d" " -f1-3 /proc/loadavg)"
stop_server

ratio() { awk -v a="$1" -v h="${RPS[ceiling]}" 'BEGIN { printf "%.2f", (h > 0 ? a / h : 0) }'; }
verdict() { awk -v r="$1" -v p="$2" 'BEGIN { print ((r >= 20000 && p < 5) ? "met" : "NOT met") }'; }
line() {
  local name="$1" label="$2" goal="${3:-}"
  printf '%-46s %7s req/s  p50 %6s ms  p99 %6s ms  errors %s  ratio %s%s\n' "$label" "${RPS[$name]}" \
    "${P50[$name]}" "${P99[$name]}" "${ERR[$name]}" "$(ratio "${RPS[$name]}")" \
    "${goal:+  goal: $(verdict "${RPS[$name]}" "${P99[$name]}")}"
}
cat <<SUMMARY

==================== haechi bench/reads.sh summary ====================
date            $(date -u +%Y-%m-%dT%H:%MZ)
machine         $(machine); wrk and the server share them
server          release build, $STORE, HTTPS (self-signed), 127.0.0.1
load average    before ${LOAD_BEFORE}, after ${LOAD_AFTER} (1/5/15 min)
wrk             $THREADS threads, $CONNECTIONS connections, ${DURATION}s (after ${WARMUP}s warm-up); nice $NICE
seeded          $WORKFLOWS workflows, $CREDENTIALS credentials, 1 node (the local agent)
$(line ceiling "GET /api/v1/health (ceiling)")
$(line token "GET /api/v1/me (token only)")
$(line user "GET /api/v1/users/admin" goal)
$(line nodes "GET /opmate/node" goal)
$(line credentials "GET /v2/credentialvault/credentials" goal)
$(line workflows "GET /services/workflow/list" goal)
goal (item 17): each store read >= 20000 req/s with p99 < 5 ms (SQLite)
=======================================================================
SUMMARY

for name in "${!ERR[@]}"; do
  if [ "${ERR[$name]}" != 0 ]; then
    echo "warning: some requests of '$name' failed (non-2xx or socket errors); its figures are not valid" >&2
    exit 1
  fi
done
