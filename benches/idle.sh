#!/usr/bin/env bash
# Memory per idle keep-alive client connection (DESIGN.md §10: ≤ 2× HAProxy's): HAProxy vs
# tether, one worker thread each, in front of one nginx backend.
#
#   benches/idle.sh [--conns N] [--out FILE]
#
# For each proxy in turn (the others stopped): start it pinned to PROXY_CPU, warm it with a few
# requests, read its RSS (VmRSS from /proc/PID/status, summed over its processes), then let
# benches/load/idle_client.py open N keep-alive connections (at most 64 in progress at once), send
# one GET on each and read the response, and keep them all open and idle; SETTLE s later read the
# RSS again. KiB per idle connection = ΔRSS ÷ connections that completed their request. The
# client then checks that the proxy kept every connection open, closes them, and the proxy is
# stopped before the next one starts. Before the first reading, the proxy serves 64 concurrent
# connections once (the client's concurrency), so that memory it keeps from serving (allocator
# caches, upstream connections) is not counted per idle connection; what remains is bounded by
# those 64 connections' worth, small against N = 8000 (a smoke run with small N is less exact).
#
# Options / environment:
#   --conns N, CONNS=8000        connections per proxy (needs N + 256 descriptors: ulimit -Hn)
#   --proto P, PROTO=h1          h1 (HTTP/1.1 keep-alive, benches/load/idle_client.py), h2c
#                                (cleartext HTTP/2 with prior knowledge) or h2 (HTTP/2 over TLS
#                                with ALPN h2, a throwaway self-signed ECDSA P-256 certificate):
#                                benches/load/idle_h2_client.py, one GET on stream 1 per
#                                connection, then idle as a browser's connection to a site. The
#                                floor speaks HTTP/1.1 only: measured for h1 only.
#   FLOOR=1                      also measure the tokio floor (benches/floor_tokio.rs: a task that
#                                waits for readability holding only its socket; buffers from a
#                                per-thread pool only while bytes are in flight), when built:
#   FLOOR_TOKIO_BIN=$CARGO_TARGET_DIR/release/examples/floor-tokio (--example floor-tokio)
#   --out FILE                   also write the table (Markdown) to FILE
#   SETTLE=2                     seconds between the last response and the second RSS reading
#   TETHER_BIN=$CARGO_TARGET_DIR/release/tether (CARGO_TARGET_DIR defaults to target/)
#   PROXY_CPU=0 CLIENT_CPU=1     CPUs of the proxy, and of the client and backend
#   Ports (127.0.0.1): backend 19101, haproxy 18181, tether 18183, floor-tokio 18186; override
#   with BACKEND_PORT HAPROXY_PORT TETHER_PORT (or TETHER_FAST_PORT) FLOOR_TOKIO_PORT.
#   KEEP_TMP=1 keeps logs.
# Bounded: each client run gives up after 60 s of set-up and holds at most 60 s. Every process
# the script starts is stopped on exit (by PID). Loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD_DIR=$ROOT/benches/load
CONNS=${CONNS:-8000}
SETTLE=${SETTLE:-2}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TETHER_BIN=${TETHER_BIN:-$TARGET_DIR/release/tether}
FLOOR=${FLOOR:-1}
FLOOR_TOKIO_BIN=${FLOOR_TOKIO_BIN:-$TARGET_DIR/release/examples/floor-tokio}
FLOOR_TOKIO_PORT=${FLOOR_TOKIO_PORT:-18186}
case $TETHER_BIN in /*) ;; *) TETHER_BIN=$ROOT/$TETHER_BIN ;; esac
BACKEND_PORT=${BACKEND_PORT:-19101}
HAPROXY_PORT=${HAPROXY_PORT:-18181}
TETHER_PORT=${TETHER_PORT:-${TETHER_FAST_PORT:-18183}}
OUT=
PROTO=${PROTO:-h1}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
while (($#)); do
    case $1 in
        --conns) CONNS=${2:?--conns needs a number}; shift 2 ;;
        --conns=*) CONNS=${1#*=}; shift ;;
        # tether has one HTTP/1.1 engine now: the old "--engines fast" is still accepted.
        --engines) ENGINES=${2:?--engines needs a list}; shift 2 ;;
        --engines=*) ENGINES=${1#*=}; shift ;;
        --proto) PROTO=${2:?--proto needs h1, h2c or h2}; shift 2 ;;
        --proto=*) PROTO=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || { echo "--conns must be a positive integer" >&2; exit 2; }
case $PROTO in h1 | h2c | h2) ;; *) echo "--proto must be h1, h2c or h2" >&2; exit 2 ;; esac
[[ $PROTO == h1 ]] || FLOOR=0
[[ ${ENGINES:-fast} == fast ]] ||
    { echo "--engines/ENGINES: tether has one engine now; only 'fast' (the default) is accepted" >&2; exit 2; }
CANDIDATES=(haproxy)
if [[ $FLOOR == 1 && -x $FLOOR_TOKIO_BIN ]]; then
    CANDIDATES+=(floor-tokio)
elif [[ $FLOOR == 1 ]]; then
    echo "floor-tokio: $FLOOR_TOKIO_BIN not built (cargo build --release --example floor-tokio): skipped" >&2
fi
CANDIDATES+=(tether)

LOG_TAG=idle
# shellcheck source-path=SCRIPTDIR source=load/lib.sh
source "$LOAD_DIR/lib.sh"
need_tools haproxy nginx curl taskset python3 openssl
HAPROXY=$(command -v haproxy)
NGINX=$(command -v nginx)
lib_init
if (($(ulimit -n) < CONNS + 256)); then
    die "$CONNS connections need $((CONNS + 256)) descriptors; the hard limit is $(ulimit -Hn) (use --conns)"
fi
[[ -x $TETHER_BIN ]] || die "tether binary $TETHER_BIN not found (cargo build --release --locked, or set TETHER_BIN)"
for port in "$BACKEND_PORT" "$HAPROXY_PORT" "$TETHER_PORT" "$((TETHER_PORT + 1))" "$FLOOR_TOKIO_PORT"; do
    port_busy "$port" && die "port $port on 127.0.0.1 is already in use"
done

# ---------------------------------------------------------------------------------------------
# Backend: one nginx on CLIENT_CPU, 3-byte body.
mkdir -p "$TMP/backend"
sed -e "s#@PREFIX@#$TMP/backend#g" -e "s#@PORT@#$BACKEND_PORT#g" -e "s#@BODY@#b1#g" \
    "$LOAD_DIR/backend.nginx.conf" >"$TMP/backend/nginx.conf"
start_bg backend "$CLIENT_CPU" "$NGINX" -p "$TMP/backend/" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log"
wait_http backend "$STARTED_PID" "http://127.0.0.1:$BACKEND_PORT/"

# ---------------------------------------------------------------------------------------------
# Proxy configs: one worker thread, upstream keep-alive, no logs, client keep-alive ≥ the hold.
MAXCONN=$((CONNS + 1000))
# What the proxies' listeners speak, and how the driver reaches them.
BIND_OPTS="" CURL_OPTS=() SCHEME=http CLIENT=(python3 "$LOAD_DIR/idle_client.py")
case $PROTO in
    h2c)
        BIND_OPTS=" proto h2" CURL_OPTS=(--http2-prior-knowledge)
        CLIENT=(python3 "$LOAD_DIR/idle_h2_client.py")
        ;;
    h2)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null ||
            die "openssl could not make the test certificate"
        cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"
        BIND_OPTS=" ssl crt $TMP/haproxy.pem alpn h2" CURL_OPTS=(-k --http2) SCHEME=https
        CLIENT=(python3 "$LOAD_DIR/idle_h2_client.py" --tls)
        ;;
esac
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
defaults
    mode http
    option http-keep-alive
    http-reuse always
    maxconn $MAXCONN
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT$BIND_OPTS
    default_backend be
backend be
    server b1 127.0.0.1:$BACKEND_PORT
EOF
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "haproxy config check failed"

tether_config() { # PORT
    local listen=$1 extra=""
    case $PROTO in
        h2c) extra="h2c = true" ;;
        # The TLS listener is the measured one; the plain one only satisfies `listen`.
        h2)
            listen=$((TETHER_PORT + 1))
            extra="[[server.tls]]
listen = \"127.0.0.1:$1\"
certs = [{ cert = \"$TMP/cert.pem\", key = \"$TMP/key.pem\" }]"
            ;;
    esac
    mkdir -p "$TMP/tether"
    cat >"$TMP/tether/tether.toml" <<EOF
[server]
listen = ["127.0.0.1:$listen"]
threads = 1
admin = "off"
grace_period = "1s"
pid_file = "$TMP/tether/tether.pid"
upgrade_sock = "$TMP/tether/tether.sock"
$extra
[log]
access = false
[[route]]
pool = "idle"
[pool.idle]
policy = "round_robin"
[[pool.idle.backend]]
id = "b1"
addr = "127.0.0.1:$BACKEND_PORT"
EOF
    "$TETHER_BIN" check -c "$TMP/tether/tether.toml" >"$TMP/tether/check.log" 2>&1 ||
        { cat "$TMP/tether/check.log" >&2; die "tether check rejected the idle config"; }
}

declare -A PORT_OF BEFORE AFTER OK FAILED CLOSED ERRORS SETUP PER
PORT_OF[haproxy]=$HAPROXY_PORT
PORT_OF[floor-tokio]=$FLOOR_TOKIO_PORT
PORT_OF[tether]=$TETHER_PORT

# json_field FILE KEY: a top-level value of the client's one-line JSON summary.
json_field() {
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(json.dumps(v) if isinstance(v, dict) else v)' "$1" "$2"
}

measure() { # CANDIDATE
    local c=$1 port=${PORT_OF[$1]} pid i
    case $c in
        haproxy) start_bg haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" ;;
        floor-tokio)
            start_bg floor-tokio "$PROXY_CPU" "$FLOOR_TOKIO_BIN" "127.0.0.1:$port" "127.0.0.1:$BACKEND_PORT"
            ;;
        tether)
            tether_config "$port"
            start_bg tether "$PROXY_CPU" env RUST_LOG=info "$TETHER_BIN" run -c "$TMP/tether/tether.toml"
            ;;
    esac
    pid=$STARTED_PID
    wait_http "$c" "$pid" "$SCHEME://127.0.0.1:$port/" "${CURL_OPTS[@]}"
    for ((i = 0; i < 20; i++)); do
        [[ $(curl -s -m 2 "${CURL_OPTS[@]}" "$SCHEME://127.0.0.1:$port/") == b1 ]] ||
            die "$c: warm-up request failed"
    done
    # Warm-up at the client's concurrency: 64 connections at once, one request each, closed.
    # What a proxy keeps of them afterwards (allocator caches, upstream connections) is then in
    # the first reading, not counted against the idle connections.
    taskset -c "$CLIENT_CPU" "${CLIENT[@]}" --port "$port" --conns 64 --hold 0 \
        >"$TMP/$c.warm.json" 2>&1 || { cat "$TMP/$c.warm.json" >&2; die "$c: warm-up client failed"; }
    [[ $(json_field "$TMP/$c.warm.json" ok) == 64 ]] || die "$c: warm-up: $(cat "$TMP/$c.warm.json")"
    sleep 0.5
    BEFORE[$c]=$(rss_kib "$pid")

    local ready=$TMP/$c.ready release=$TMP/$c.release out=$TMP/$c.client.json cpid
    taskset -c "$CLIENT_CPU" "${CLIENT[@]}" --port "$port" --conns "$CONNS" \
        --ready "$ready" --release "$release" --timeout 60 --hold 60 >"$out" 2>"$TMP/$c.client.log" &
    cpid=$!
    PIDS+=("$cpid")
    for ((i = 0; i < 700; i++)); do # 70 s: the client's own set-up bound is 60 s
        [[ -e $ready ]] && break
        kill -0 "$cpid" 2>/dev/null || { cat "$TMP/$c.client.log" >&2; die "$c: idle client exited early"; }
        sleep 0.1
    done
    [[ -e $ready ]] || die "$c: idle client not ready within 70 s"
    sleep "$SETTLE"
    AFTER[$c]=$(rss_kib "$pid")
    kill -0 "$pid" 2>/dev/null || die "$c exited while holding the connections"
    touch "$release"
    wait "$cpid" || { cat "$TMP/$c.client.log" >&2; die "$c: idle client failed"; }
    OK[$c]=$(json_field "$out" ok)
    FAILED[$c]=$(json_field "$out" failed)
    CLOSED[$c]=$(json_field "$out" closed_by_peer)
    ERRORS[$c]=$(json_field "$out" errors)
    SETUP[$c]=$(json_field "$out" setup_s)
    PER[$c]=$(awk -v a="${AFTER[$c]}" -v b="${BEFORE[$c]}" -v n="${OK[$c]}" \
        'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "?" }')
    log "$c: ${OK[$c]}/$CONNS idle (set-up ${SETUP[$c]} s, ${FAILED[$c]} failed ${ERRORS[$c]}, ${CLOSED[$c]} closed by the proxy while held); RSS ${BEFORE[$c]} → ${AFTER[$c]} KiB: ${PER[$c]} KiB per idle connection"
    stop_pid "$pid"
}

for c in "${CANDIDATES[@]}"; do measure "$c"; done

# ---------------------------------------------------------------------------------------------
report() {
    local c ratio
    echo "| proxy | idle conns | RSS before KiB | RSS after KiB | KiB / idle conn | ×HAProxy | failed | closed by proxy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CANDIDATES[@]}"; do
        ratio=$(awk -v a="${PER[$c]}" -v b="${PER[haproxy]}" 'BEGIN { if (b > 0 && a ~ /^-?[0-9.]+$/) printf "%.1f×", a / b; else print "?" }')
        echo "| $c | ${OK[$c]} | ${BEFORE[$c]} | ${AFTER[$c]} | ${PER[$c]} | $ratio | ${FAILED[$c]} | ${CLOSED[$c]} |"
    done
    echo
    echo "$CONNS keep-alive $PROTO connections per proxy, one GET each, then idle ${SETTLE}s before the second RSS reading; one worker thread; $("$HAPROXY" -v 2>&1 | head -n1 | cut -d' ' -f1-3); $("$TETHER_BIN" --version 2>&1 | head -n1) ($TETHER_BIN). Target (DESIGN.md §10): tether ≤ 2× HAProxy."
}
echo
report | tee ${OUT:+"$OUT"}
