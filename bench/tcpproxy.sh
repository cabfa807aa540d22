# A byte-copying TCP proxy as the floor of what any proxy costs, shared by pgbench.sh and
# sysbench.sh (`. bench/tcpproxy.sh`; defines functions only).
#
# HAProxy (Debian package) in `mode tcp`: it accepts a client, opens one connection to the
# database for it and copies bytes both ways without reading them. It parses nothing, checks
# nothing, audits nothing and pools nothing, so whatever it costs against direct is what one more
# process on the path of every statement costs on this machine, before any inspection.
# HAPROXY_THREADS (1 unless given) is its `nbthread`: one, like the gateway's one session thread.

# start_tcpproxy WORKDIR LISTEN_PORT SERVER: starts HAProxy on 127.0.0.1:LISTEN_PORT in the
# background, forwarding to SERVER (`host:port`, or `unix@/path/to/socket`), and sets
# TCPPROXY_PID (the caller's clean-up kills it).
start_tcpproxy() {
  local work=$1 port=$2 server=$3
  if ! command -v haproxy >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    else
      echo "missing tool: haproxy" >&2
      exit 1
    fi
  fi
  cat >"$work/haproxy.cfg" <<EOF
global
  nbthread ${HAPROXY_THREADS:-1}
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend bench
  bind 127.0.0.1:$port
  default_backend db
backend db
  server db $server
EOF
  haproxy -q -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  TCPPROXY_PID=$!
  local _
  for _ in $(seq 1 50); do
    (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "haproxy did not start:" >&2
  cat "$work/haproxy.log" >&2
  exit 1
}
