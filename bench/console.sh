#!/usr/bin/env bash
# The web console's server side: time to answer each main page (p50/p99) with 1,000 nodes,
# 1,000 finished runs and a task instance on 1,000 nodes stored, over one kept-alive HTTPS
# connection as a logged-in browser; and the time from an approval decision to the pushed
# `live` event of the run page. The browser side (the page swapping the pushed HTML, the 20 MiB
# output window, JS heap) is measured by the browser tests (tests/console_py; figures printed
# as FIGURE lines, or appended to HAECHI_CONSOLE_FIGURES).
#
#   bench/console.sh
#
# Only 127.0.0.1 is contacted. Tunables (environment): NODES=1000 RUNS=1000 SAMPLES=50 SKIP_BUILD=
#   HAECHI_BIN=path (e.g. target/debug/haechi with SKIP_BUILD=1 for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${NODES:-1000}"; RUNS="${RUNS:-1000}"; SAMPLES="${SAMPLES:-50}"
. bench/lib.sh
need python3
build_release
# The bench approves its own task.
SERVER_ENV=(HAECHI_TASKS__ALLOW_SELF_APPROVAL=true)
start_server "$WORK/s" --no-local-agent
login_admin
make_task bench-echo "echo hi"
python3 bench/console.py "$BASE" "$TOKEN" bench-echo "$NODES" "$RUNS" "$SAMPLES" "$ADMIN_PASSWORD"
