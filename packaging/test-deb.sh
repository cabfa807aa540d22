#!/usr/bin/env bash
# Builds the Debian package of Haechi, installs it with dpkg, starts the server as its systemd
# unit would, checks that it answers, writes an agent unit with `haechi agent install`, stops,
# purges, and checks that nothing is left. Run as root (CI does, from .ci/run).
#
# The binary is the one the build already made (target/$HAECHI_DEB_PROFILE/haechi, default
# debug: `cargo deb --no-build --profile dev`), so this adds no compilation beyond cargo-deb
# itself, installed with `cargo install --locked` when missing.
#
# When systemd is PID 1 the unit is started with systemctl. In CI (a container) it is not: the
# script then runs the unit's own ExecStart line as the unit's User, with the unit's
# environment, which is what systemd would run, minus its sandboxing (the unit's hardening is
# checked by `systemd-analyze verify` when that tool exists).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${HAECHI_DEB_PROFILE:-debug}
say() { printf '[test-deb] %s\n' "$*"; }
fail() { printf '[test-deb] FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i, a system user)"
if dpkg -s haechi >/dev/null 2>&1; then fail "a haechi package is already installed here"; fi

# A pinned cargo-deb: 3.8 still takes --profile dev (with a warning that later versions may
# refuse it; then set HAECHI_DEB_PROFILE=release).
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version 3.8.0
case "$PROFILE" in
  release) cargo_profile=release ;;
  debug) cargo_profile=dev ;;
  *) fail "HAECHI_DEB_PROFILE must be debug or release" ;;
esac
[ -x "target/$PROFILE/haechi" ] || cargo build -p haechi --locked --profile "$cargo_profile"

say "building the package from target/$PROFILE/haechi"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
cargo deb -p haechi --no-build --profile "$cargo_profile" --fast --output "$out/" 2>&1 >/dev/null \
  | grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' >&2 || true
ls "$out"/haechi_*.deb >/dev/null 2>&1 || fail "cargo deb made no package"
deb=$(ls "$out"/haechi_*.deb)
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/haechi ./etc/haechi/haechi.toml haechi.service haechi-agent.service; do
  grep -q "$f" <<<"$contents" || fail "the package lacks $f"
done

say "installing"
dpkg -i "$deb" >/dev/null
getent passwd haechi >/dev/null || fail "no haechi user"
uid=$(id -u haechi); [ "$uid" -lt 1000 ] || fail "haechi is not a system user (uid $uid)"
[ "$(getent passwd haechi | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the haechi user can log in"
[ "$(stat -c '%U %a' /var/lib/haechi)" = "haechi 700" ] || fail "/var/lib/haechi is $(stat -c '%U %a' /var/lib/haechi)"
[ "$(stat -c '%U:%G %a' /etc/haechi/haechi.toml)" = "root:haechi 640" ] || fail "/etc/haechi/haechi.toml is $(stat -c '%U:%G %a' /etc/haechi/haechi.toml)"
unit=$(ls /lib/systemd/system/haechi.service /usr/lib/systemd/system/haechi.service 2>/dev/null | head -n1)
[ -n "$unit" ] || fail "haechi.service is not installed"
for opt in 'User=haechi' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ReadWritePaths=\|StateDirectory=haechi'; do
  grep -q "^\($opt\)" "$unit" || fail "$unit lacks $opt"
done
if command -v systemd-analyze >/dev/null; then
  # In a container without systemd running, verify can complain about the machine itself:
  # show what it says without failing on it.
  systemd-analyze verify "$unit" || say "systemd-analyze verify reported the above (not fatal here)"
fi
haechi --version

say "starting the server"
log=$(mktemp)
if [ -d /run/systemd/system ]; then
  say "systemd runs this machine: systemctl start haechi"
  systemctl start haechi
  base=https://127.0.0.1:8443
  for _ in $(seq 1 100); do journalctl -u haechi --no-pager >"$log" 2>&1 || true; grep -q 'listening on' "$log" && break; sleep 0.2; done
else
  say "systemd is not PID 1 here: running the unit's ExecStart as its User (HAECHI_LISTEN picks a free port)"
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
  # StateDirectory/LogsDirectory are what systemd would create; the package made them.
  # setpriv execs the server in place: $! is the server itself, stopped below by its pid.
  (cd / && HAECHI_LISTEN=127.0.0.1:0 exec setpriv --reuid=haechi --regid=haechi --init-groups -- $exec_start >"$log" 2>&1) &
  runner=$!
  base=
  for _ in $(seq 1 300); do
    base=$(grep -o 'listening on https://[0-9.:]*' "$log" | sed 's/listening on //' || true)
    [ -n "$base" ] && break
    kill -0 "$runner" 2>/dev/null || { cat "$log"; fail "the server exited"; }
    sleep 0.2
  done
  [ -n "$base" ] || { cat "$log"; fail "the server did not start"; }
fi
code=$(curl -sk -o /dev/null -w '%{http_code}' "$base/api/v1/health")
[ "$code" = 200 ] || { cat "$log"; fail "health answered $code"; }
say "health at $base: 200"
[ "$(stat -c '%U %a' /var/lib/haechi/haechi.db)" = "haechi 600" ] || fail "the store is $(stat -c '%U %a' /var/lib/haechi/haechi.db)"
fingerprint=$(sed -n 's/.*fingerprint: //p' "$log" | head -n1)
password=$(sed -n 's/.*its password (shown once): //p' "$log" | head -n1)
[ -n "$password" ] || fail "no bootstrap password in the server's output"

# The doctor, as the haechi user, on the running installation.
HAECHI_LISTEN=${base#https://} setpriv --reuid=haechi --regid=haechi --init-groups -- haechi doctor --config /etc/haechi/haechi.toml \
  || fail "haechi doctor found a problem"

say "haechi agent install"
token=$(curl -sk "$base/api/v1/auth" -H 'Content-Type: application/json' \
  -d "{\"user_id\":\"admin\",\"pwd\":\"$password\"}" | sed -n 's/.*"token":"Bearer \([^"]*\)".*/\1/p')
enroll=$(curl -sk "$base/api/v1/agents/enrollment-tokens" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' -d '{"ttl_secs":600}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$enroll" ] || fail "no enrolment token"
haechi agent install --server "$base" --server-fingerprint "$fingerprint" --enroll-token "$enroll" >/dev/null
grep -q "^ExecStart=/usr/bin/haechi agent --server $base --data-dir /var/lib/haechi-agent --server-fingerprint" \
  /etc/systemd/system/haechi-agent.service || fail "the agent unit's ExecStart"
[ "$(stat -c '%a' /etc/haechi/agent.env)" = 600 ] || fail "agent.env is not 0600"
if grep -q "$enroll" /etc/systemd/system/haechi-agent.service; then fail "the enrolment token is in the unit"; fi
if haechi agent install --server "$base" --server-fingerprint "$fingerprint" --enroll-token x 2>/dev/null; then
  fail "agent install replaced an existing unit without --force"
fi

say "stopping"
if [ -d /run/systemd/system ]; then
  systemctl stop haechi
else
  kill -TERM "$runner"
  wait "$runner" || true
fi

say "purging"
dpkg --purge haechi >/dev/null
left=()
for p in /usr/bin/haechi /etc/haechi /var/lib/haechi /var/log/haechi /var/lib/haechi-agent \
         /lib/systemd/system/haechi.service /usr/lib/systemd/system/haechi.service \
         /lib/systemd/system/haechi-agent.service /usr/lib/systemd/system/haechi-agent.service \
         /etc/systemd/system/haechi-agent.service /etc/systemd/system/multi-user.target.wants/haechi.service; do
  [ -e "$p" ] && left+=("$p")
done
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
getent passwd haechi >/dev/null && fail "the haechi user is left after purge"
getent group haechi >/dev/null && fail "the haechi group is left after purge"
if dpkg -s haechi >/dev/null 2>&1; then fail "dpkg still knows haechi"; fi
say "1 passed, 0 failed: the package built, installed, started, answered, stopped and purged cleanly"
