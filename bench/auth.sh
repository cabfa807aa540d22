#!/usr/bin/env bash
# Authenticated request throughput and login cost of a release `haechi server` (SQLite store).
#
#   bench/auth.sh            # builds, starts a throwaway server on 127.0.0.1, measures, stops it
#
# Two wrk runs of the same shape against the same server:
#   ceiling  GET /api/v1/health  no token: TLS + routing + middleware, nothing else
#   auth     GET /api/v1/me      Authorization: Bearer <t>: the above + token resolution + permissions
# and the ratio auth/ceiling. Then the login cost with the default Argon2id parameters:
# LOGINS sequential logins over one kept-alive connection, time per login as curl sees it.
#
# Only 127.0.0.1 is contacted; every run has a fixed duration. Tunables (environment):
#   THREADS=2 CONNECTIONS=64 DURATION=15 WARMUP=3 LOGINS=50 UNKNOWN_LOGINS=20 SKIP_BUILD=
#   NICE=-10   run the server, wrk and curl at this nice level (negative needs root), so other
#              work on a shared machine disturbs the figures less; default 0
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-3}"
LOGINS="${LOGINS:-50}"
UNKNOWN_LOGINS="${UNKNOWN_LOGINS:-20}"
. bench/lib.sh
need wrk
run() { nice -n "$NICE" "$@"; }

build_release
say "starting a release server (SQLite, data dir $WORK/data, port picked by the OS)"
# Default configuration except what a throwaway bench needs; in particular the Argon2 parameters
# are the defaults (lib.sh drops any HAECHI_IDENTITY__ARGON2__* of the caller's environment).
start_server "$WORK"

login_body="{\"user_id\":\"admin\",\"pwd\":\"$ADMIN_PASSWORD\"}"
login_admin
me_status="$(curl -sSk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me")"
[ "$me_status" = 200 ] || { echo "GET /api/v1/me answered $me_status" >&2; exit 1; }

# ---- throughput --------------------------------------------------------------------------------

LOAD_BEFORE="$(cut -d" " -f1-3 /proc/loadavg)" # other work on the machine skews the figures
read -r H_RPS H_P50 H_P99 H_ERR _ < <(wrk_run ceiling /api/v1/health)
read -r A_RPS A_P50 A_P99 A_ERR _ < <(wrk_run auth /api/v1/me -H "Authorization: Bearer $TOKEN")
RATIO="$(awk -v a="$A_RPS" -v h="$H_RPS" 'BEGIN { printf "%.2f", (h > 0 ? a / h : 0) }')"

# ---- login cost ----------------------------------------------------------------------------------

# The parameters the stored hashes were made with (the hash itself is not printed).
PARAMS="$(command -v sqlite3 >/dev/null &&
  sqlite3 "file:$WORK/data/haechi.db?mode=ro" "SELECT password_hash FROM users WHERE user_id = 'admin'" 2>/dev/null |
  sed -n 's/^\$argon2id\$v=19\$\([^$]*\)\$.*/\1/p' || true)"

# time_logins N BODY: N sequential logins on one kept-alive connection (curl --next), so each
# figure is the server's answer time without a TLS handshake. Prints "mean_ms min_ms max_ms statuses".
time_logins() {
  local n="$1" body="$2" args=() i
  for i in $(seq 1 "$n"); do
    [ "$i" -gt 1 ] && args+=(--next)
    args+=(-sk -o /dev/null -w '%{http_code} %{time_total}\n' -H 'Content-Type: application/json'
      -d "$body" "$BASE/api/v1/auth")
  done
  run curl "${args[@]}" | awk '
    { codes[$1]++; t = $2 * 1000; sum += t; if (min == "" || t < min) min = t; if (t > max) max = t; n++ }
    END { s = ""; for (c in codes) s = s (s == "" ? "" : ",") c "x" codes[c]
          printf "%.1f %.1f %.1f %s\n", sum / n, min, max, s }'
}

say "login cost: $LOGINS sequential logins (POST /api/v1/auth, one connection)"
read -r L_MEAN L_MIN L_MAX L_CODES < <(time_logins "$LOGINS" "$login_body")
echo "  mean ${L_MEAN} ms, min ${L_MIN} ms, max ${L_MAX} ms, statuses ${L_CODES}" >&2
say "failed-login cost: $UNKNOWN_LOGINS sequential logins of an unknown user"
unknown_body="{\"user_id\":\"no-such-user-bench\",\"pwd\":\"wrong-password\"}"
read -r U_MEAN U_MIN U_MAX U_CODES < <(time_logins "$UNKNOWN_LOGINS" "$unknown_body")
echo "  mean ${U_MEAN} ms, min ${U_MIN} ms, max ${U_MAX} ms, statuses ${U_CODES}" >&2

stop_server

# ---- summary -------------------------------------------------------------------------------------
verdict="$(awk -v r="$A_RPS" -v p="$A_P99" 'BEGIN { print ((r >= 20000 && p < 5) ? "met" : "NOT met") }')"
cat <<SUMMARY

==================== haechi bench/auth.sh summary ====================
date            $(date -u +%Y-%m-%dT%H:%MZ)
machine         $(machine); wrk and the server share them
server          release build, SQLite, HTTPS (self-signed), 127.0.0.1
load average    ${LOAD_BEFORE} (1/5/15 min, before the wrk runs)
wrk             $THREADS threads, $CONNECTIONS connections, ${DURATION}s (after ${WARMUP}s warm-up); nice $NICE
GET /api/v1/health (ceiling)  ${H_RPS} req/s  p50 ${H_P50} ms  p99 ${H_P99} ms  errors ${H_ERR}
GET /api/v1/me (Bearer)       ${A_RPS} req/s  p50 ${A_P50} ms  p99 ${A_P99} ms  errors ${A_ERR}
authenticated / ceiling       ${RATIO}
goal (>= 20000 req/s, p99 < 5 ms, authenticated): ${verdict}
login (Argon2id ${PARAMS:-defaults})  ${L_MEAN} ms/login (min ${L_MIN}, max ${L_MAX}; ${LOGINS} logins, ${L_CODES})
failed login, unknown user     ${U_MEAN} ms/login (min ${U_MIN}, max ${U_MAX}; ${UNKNOWN_LOGINS} logins, ${U_CODES})
======================================================================
SUMMARY

if [ "${A_ERR:-0}" != 0 ] || [ "${H_ERR:-0}" != 0 ]; then
  echo "warning: some requests failed (non-2xx or socket errors); the figures above are not valid" >&2
  exit 1
fi
