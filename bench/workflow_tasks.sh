#!/usr/bin/env bash
# A 100-step workflow whose every step is a task running `true` on the local agent, against
# ansible-playbook running a playbook of 100 `command: true` tasks on localhost (local
# connection). Wall time of each, RUNS times; the goal is Haechi >= 10x faster.
#
#   bench/workflow_tasks.sh
#
# Haechi's figure is the wall time of one `POST /services/workflow/execute` with `sync=true`
# (start to the answer that the run completed), every step being a real OPMATE task instance
# dispatched to the server's local agent over its WebSocket, run as a process, its result
# committed, then the next step started — each transition durable.
#
# Only 127.0.0.1 is contacted. Tunables (environment): STEPS=100 RUNS=3 SKIP_BUILD=
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-100}"; RUNS="${RUNS:-3}"
ADMIN_PASSWORD="bench-Admin-Pass-1234"
NODE="bench-local"
say() { printf '\n=== %s\n' "$*" >&2; }

if ! command -v ansible-playbook >/dev/null; then
  say "pip install ansible-core"
  python3 -m pip install --quiet ansible-core
fi
ansible-playbook --version | head -n1 >&2

if [ -z "${SKIP_BUILD:-}" ]; then
  say "cargo build --release -p haechi"
  cargo build --release -p haechi
fi
BIN="$PWD/target/release/haechi"

WORK="$(mktemp -d -t haechi-bench-wft.XXXXXX)"
SERVER_PID=""
cleanup() {
  exec 3>&- || true
  if [ -n "$SERVER_PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a release server with its local agent (node $NODE)"
mkfifo "$WORK/stdin"
env -u HAECHI_CONFIG -u HAECHI_DATABASE_URL HAECHI_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    HAECHI_TASKS__ALLOW_SELF_APPROVAL=true HAECHI_AGENTS__LOCAL_NODE_ID="$NODE" \
    HAECHI_LOG_LEVEL=warn RUST_LOG=warn \
    "$BIN" server --data-dir "$WORK/data" --listen 127.0.0.1:0 --stop-on-stdin-eof \
    <"$WORK/stdin" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
exec 3>"$WORK/stdin"
BASE=""
for _ in $(seq 1 600); do
  BASE="$(sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n1)"
  [ -n "$BASE" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$WORK/server.log" >&2; exit 1; }
TOKEN="$(curl -fsSk -H 'Content-Type: application/json' -d "{\"user_id\":\"admin\",\"pwd\":\"$ADMIN_PASSWORD\"}" \
  "$BASE/api/v1/auth" | python3 -c 'import sys, json; print(json.load(sys.stdin)["token"].split(" ", 1)[1])')"
for _ in $(seq 1 300); do
  curl -fsSk -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/nodes/$NODE" 2>/dev/null | grep -q '"connected":true' && break
  sleep 0.1
done
curl -fsSk -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/nodes/$NODE" | grep -q '"connected":true' ||
  { echo "the local agent did not connect" >&2; cat "$WORK/server.log" >&2; exit 1; }

TASK="bench-true"
curl -fsSk -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"id\":\"$TASK\",\"scriptName\":\"true.sh\",\"script\":\"true\",\"osUser\":\"$(id -un)\"}" "$BASE/api/v1/tasks"
for action in request approve; do
  curl -fsSk -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"action\":\"$action\"}" "$BASE/api/v1/tasks/$TASK/approval"
done

say "Haechi: $STEPS task steps running 'true' on $NODE"
haechi=()
for r in $(seq 1 "$RUNS"); do
  out="$(python3 bench/workflow.py tasks "$BASE" "$TOKEN" "$STEPS" "$TASK" "$NODE")"
  echo "run $r: $(head -n1 <<<"$out")"
  haechi+=("$(sed -n 's/^RESULT .*wall_s=\([0-9.]*\).*/\1/p' <<<"$out")")
done

say "ansible-playbook: $STEPS 'command: true' tasks on localhost (local connection)"
{
  echo "- hosts: localhost"
  echo "  connection: local"
  echo "  gather_facts: false"
  echo "  tasks:"
  for i in $(seq 1 "$STEPS"); do
    echo "    - name: step $i"
    echo "      command: 'true'"
  done
} >"$WORK/playbook.yml"
ansible=()
for r in $(seq 1 "$RUNS"); do
  start=$(date +%s.%N)
  ANSIBLE_PYTHON_INTERPRETER="$(command -v python3)" ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
    ansible-playbook -i localhost, "$WORK/playbook.yml" >"$WORK/ansible-$r.log" 2>&1 ||
    { cat "$WORK/ansible-$r.log" >&2; exit 1; }
  end=$(date +%s.%N)
  t="$(python3 -c "print(f'{$end - $start:.3f}')")"
  echo "run $r: ${t} s ($(grep -c '^TASK' "$WORK/ansible-$r.log") tasks)"
  ansible+=("$t")
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
h="$(median "${haechi[@]}")"; a="$(median "${ansible[@]}")"
say "summary ($(nproc) CPUs)"
echo "Haechi  $STEPS task steps: median ${h} s (runs: ${haechi[*]})"
echo "Ansible $STEPS tasks:      median ${a} s (runs: ${ansible[*]})"
python3 -c "print(f'Haechi is {$a / $h:.1f}x faster (goal >= 10x)')"
