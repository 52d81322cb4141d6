#!/usr/bin/env bash
# Soak (issue 14.4): the release tether under mixed traffic for DURATION seconds (default 600) —
# GET, POST with Content-Length and chunked bodies, cookie-pinned sessions, WebSocket tunnels,
# slow clients writing their heads a few bytes at a time — with a SIGHUP reload every 3 s and, every
# 60 s, one backend taken out (maint through the admin API, killed once it has nothing in flight,
# restarted 5 s later, made ready). Reports the proxy's RSS and open file descriptors at the start
# and the end (and sampled in between) and every failed request; exits non-zero on any failure.
#
#   benches/soak.sh [--duration S] [--out FILE]
#
# Environment: TETHER_BIN=$CARGO_TARGET_DIR/release/tether (cargo build --release --locked),
# WORKERS=4 (connections per traffic kind), PROXY_CPU=0 (tether is pinned there; the driver and
# its backends run on the other CPUs). Ports (127.0.0.1): tether 18383, admin 18393, backends
# 19301-19303. Loopback only; everything it starts is stopped by pid when it ends.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TETHER_BIN=${TETHER_BIN:-$TARGET_DIR/release/tether}
WORKERS=${WORKERS:-4}
PROXY_CPU=${PROXY_CPU:-0}
DURATION=600
OUT=
while (($#)); do
    case $1 in
        --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -x $TETHER_BIN ]] || { echo "tether binary $TETHER_BIN not found (cargo build --release --locked)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 2; }

# tether pinned to PROXY_CPU through a wrapper the driver starts (by pid) in its place.
wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
printf '#!/bin/sh\nexec taskset -c %s %q "$@"\n' "$PROXY_CPU" "$TETHER_BIN" >"$wrapper"
chmod +x "$wrapper"

report=$(mktemp)
status=0
python3 "$ROOT/benches/load/soak_driver.py" --tether "$wrapper" --duration "$DURATION" \
    --workers "$WORKERS" >"$report" || status=$?
cat "$report"
if [[ -n $OUT ]]; then
    {
        echo "# Soak — $(date '+%F %T')"
        echo
        echo "\`benches/soak.sh --duration $DURATION\` (WORKERS=$WORKERS), $($TETHER_BIN --version 2>&1 | head -n1), $(uname -srm), $(nproc) CPUs"
        echo
        echo '```json'
        cat "$report"
        echo '```'
    } >"$OUT"
fi
rm -f "$report"
exit "$status"
