# Shared by bench/fanout.sh and bench/ansible.sh: the release server and load tool, a throwaway
# server on 127.0.0.1 (SQLite in a temporary dir unless BENCH_DATABASE_URL, no local agent,
# self-approval on), the admin's login, tasks. Only 127.0.0.1 is contacted.
. bench/lib.sh

build() {
  build_release haechi-bench
  LOAD="$(dirname "$BIN")/haechi-loadagents"
  [ -x "$LOAD" ] || { echo "no load tool at $LOAD" >&2; exit 1; }
}

start_exec_server() {
  say "starting a release server (${BENCH_DATABASE_URL:+PostgreSQL, }data dir $WORK/data)"
  SERVER_ENV=(HAECHI_TASKS__ALLOW_SELF_APPROVAL=true)
  start_server "$WORK" --no-local-agent ${BENCH_DATABASE_URL:+--database-url "$BENCH_DATABASE_URL"}
  login_admin
}
