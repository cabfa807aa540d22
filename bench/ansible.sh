#!/usr/bin/env bash
# The same command on the same 100 local "nodes": Haechi (100 real `haechi agent` processes,
# each with its own data dir and node id) against Ansible ad-hoc (ansible-core from PyPI,
# an inventory of 100 hosts with ansible_connection=local, -f 100). Wall time from start to
# every result, RUNS times each; the goal is Haechi >= 10x faster.
#
#   bench/ansible.sh
#
# Only 127.0.0.1 is contacted. Tunables (environment): NODES=100 RUNS=3 SKIP_BUILD=
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${NODES:-100}"; RUNS="${RUNS:-3}"
COMMAND="echo hello"
. bench/exec_common.sh

if ! command -v ansible >/dev/null; then
  say "pip install ansible-core"
  python3 -m pip install --quiet ansible-core
fi
ansible --version >"$WORK/ansible.version" 2>&1 || true
head -n1 "$WORK/ansible.version" >&2

build
start_exec_server
make_task hello "$COMMAND"

say "starting $NODES haechi agents"
ENROLL="$(curl -fsSk -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"uses\":$NODES}" "$BASE/api/v1/agents/enrollment-tokens" | grep -o 'hce_[A-Za-z0-9_-]*')"
ids=()
for i in $(seq -f '%03g' 1 "$NODES"); do
  id="peer-$i"; ids+=("$id")
  "$BIN" agent --server "$BASE" --server-fingerprint "$FP" --enroll-token "$ENROLL" \
    --data-dir "$WORK/agents/$id" --node-id "$id" >"$WORK/agent-$id.log" 2>&1 </dev/null &
  EXTRA_PIDS+=("$!")
done
for _ in $(seq 1 600); do
  n="$(curl -fsSk -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/nodes?id=peer-&limit=1000" |
    python3 -c 'import sys, json; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["connected"]))')"
  [ "$n" = "$NODES" ] && break
  sleep 0.2
done
echo "$n of $NODES agents connected" >&2
NODE_LIST="$(IFS=,; echo "${ids[*]}")"

say "Haechi: '$COMMAND' on $NODES nodes"
haechi_times=()
for r in $(seq 1 "$RUNS"); do
  out="$("$LOAD" --server "$BASE" --fingerprint "$FP" run --admin-token "$TOKEN" --task hello --nodes "$NODE_LIST")"
  echo "run $r: $out"
  haechi_times+=("$(echo "$out" | sed -n 's/.* in \([0-9.]*\) s$/\1/p')")
done

say "Ansible ad-hoc: '$COMMAND' on $NODES local hosts, -f $NODES"
{
  echo "[nodes]"
  for id in "${ids[@]}"; do echo "$id ansible_connection=local ansible_python_interpreter=$(command -v python3)"; done
} >"$WORK/inventory"
ansible_times=()
for r in $(seq 1 "$RUNS"); do
  t0="$(date +%s.%N)"
  ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False \
    ansible nodes -i "$WORK/inventory" -m command -a "$COMMAND" -f "$NODES" >"$WORK/ansible.out" 2>&1
  t1="$(date +%s.%N)"
  ok="$(grep -c 'CHANGED' "$WORK/ansible.out" || true)"
  secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
  echo "run $r: $ok/$NODES hosts answered in $secs s"
  ansible_times+=("$secs")
done

best() { printf '%s\n' "$@" | sort -g | head -n1; }
hb="$(best "${haechi_times[@]}")"; ab="$(best "${ansible_times[@]}")"
say "result"
echo "best of $RUNS: Haechi $hb s, Ansible $ab s, Haechi is $(awk -v a="$ab" -v h="$hb" 'BEGIN { printf "%.1f", a / h }')x faster"
