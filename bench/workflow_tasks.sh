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
NODE="bench-local"
. bench/lib.sh
need python3

if ! command -v ansible-playbook >/dev/null; then
  say "pip install ansible-core"
  python3 -m pip install --quiet ansible-core
fi
ansible-playbook --version | head -n1 >&2

build_release

say "starting a release server with its local agent (node $NODE)"
SERVER_ENV=(HAECHI_TASKS__ALLOW_SELF_APPROVAL=true HAECHI_AGENTS__LOCAL_NODE_ID="$NODE")
start_server "$WORK"
login_admin
for _ in $(seq 1 300); do
  curl -fsSk -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/nodes/$NODE" 2>/dev/null | grep -q '"connected":true' && break
  sleep 0.1
done
curl -fsSk -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/nodes/$NODE" | grep -q '"connected":true' ||
  { echo "the local agent did not connect" >&2; cat "$SERVER_LOG" >&2; exit 1; }

TASK="bench-true"
make_task "$TASK" true

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

h="$(median "${haechi[@]}")"; a="$(median "${ansible[@]}")"
say "summary ($(nproc) CPUs)"
echo "Haechi  $STEPS task steps: median ${h} s (runs: ${haechi[*]})"
echo "Ansible $STEPS tasks:      median ${a} s (runs: ${ansible[*]})"
python3 -c "print(f'Haechi is {$a / $h:.1f}x faster (goal >= 10x)')"
