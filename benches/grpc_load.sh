#!/usr/bin/env bash
# gRPC unary load comparison (issue 16.6): HAProxy ("proto h2" on bind and server lines) and
# tether ([server] h2c, [pool] protocol = "h2c") in one run, one worker thread each, in front of
# the same four gRPC backends (benches/grpc_backend.rs: h2c on the h2 crate), h2load as the gRPC
# client (a fixed length-prefixed message POSTed with content-type application/grpc and
# te: trailers; each answer is one message and grpc-status 0 in trailers).
#
#   benches/grpc_load.sh [--out FILE]
#
# Environment:
#   DURATION=10 WARMUP=2 RUNS=3   seconds per measured run, warm-up seconds, interleaved rounds
#   CLIENTS=64 STREAMS=10         h2load connections and concurrent streams per connection
#   TETHER_BIN=$CARGO_TARGET_DIR/release/tether           (cargo build --release --locked)
#   BACKEND_BIN=$CARGO_TARGET_DIR/release/examples/grpc-backend  (--example grpc-backend)
#   PROXY_CPU=0 CLIENT_CPU=1      the proxy alone on one CPU; h2load and the backends on the other
#   Ports (127.0.0.1): backends 19201-19204, haproxy 18281, tether 18283 (admin 18293).
#
# Per candidate: a functional check (curl --http2-prior-knowledge: 8 calls reach all four
# backends, each with grpc-status 0 in its trailers), then RUNS rounds measuring each candidate
# in turn. CPU µs per request = Δ(utime+stime) of the proxy over the measured run ÷ requests;
# p50/p99 from h2load's per-request log. Ratios to HAProxy: per round, then the median.
# No floor program runs here: floor-h2 (benches/h2load.sh) speaks HTTP/1.1 to its backends.
# Results: a Markdown table on stdout and in benches/results-grpc-<date>.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD_DIR=$ROOT/benches/load
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-64}
STREAMS=${STREAMS:-10}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TETHER_BIN=${TETHER_BIN:-$TARGET_DIR/release/tether}
BACKEND_BIN=${BACKEND_BIN:-$TARGET_DIR/release/examples/grpc-backend}
BACKEND_PORTS=(19201 19202 19203 19204)
declare -A PORT=([haproxy]=18281 [tether]=18283)
ADMIN_PORT=18293
OUT=
while (($#)); do
    case $1 in
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$ROOT/benches/results-grpc-$(date +%Y-%m-%d-%H%M%S).md}
LOG_TAG=grpc
# shellcheck source-path=SCRIPTDIR source=load/lib.sh
source "$LOAD_DIR/lib.sh"
need_tools h2load haproxy curl taskset
CLK_TCK=$(getconf CLK_TCK)
lib_init
[[ -x $TETHER_BIN ]] || die "no $TETHER_BIN (cargo build --release --locked)"
[[ -x $BACKEND_BIN ]] || die "no $BACKEND_BIN (cargo build --release --locked --example grpc-backend)"

render() { # TEMPLATE OUT
    sed -e "s#@B1@#127.0.0.1:${BACKEND_PORTS[0]}#g" -e "s#@B2@#127.0.0.1:${BACKEND_PORTS[1]}#g" \
        -e "s#@B3@#127.0.0.1:${BACKEND_PORTS[2]}#g" -e "s#@B4@#127.0.0.1:${BACKEND_PORTS[3]}#g" \
        -e "s#@LISTEN@#127.0.0.1:$LPORT#g" -e "s#@ADMIN@#127.0.0.1:$ADMIN_PORT#g" \
        -e "s#@PREFIX@#$PREFIX#g" "$1" >"$2"
}

n=0
for port in "${BACKEND_PORTS[@]}"; do
    n=$((n + 1))
    port_busy "$port" && die "port $port is in use"
    start_bg "backend$n" "$CLIENT_CPU" "$BACKEND_BIN" "127.0.0.1:$port" "b$n"
done
sleep 0.3

# The request: one length-prefixed message "ping".
BODY=$TMP/request.bin
printf '\x00\x00\x00\x00\x04ping' >"$BODY"
H=(-H 'content-type: application/grpc' -H 'te: trailers')
URL_PATH=/bench.Echo/Unary

declare -A PID
for p in haproxy tether; do
    PREFIX=$TMP/$p LPORT=${PORT[$p]}
    mkdir -p "$PREFIX"
    port_busy "$LPORT" && die "port $LPORT is in use"
    case $p in
        haproxy)
            render "$LOAD_DIR/haproxy-grpc.cfg" "$PREFIX/haproxy.cfg"
            haproxy -c -q -f "$PREFIX/haproxy.cfg" || die "haproxy config check failed"
            start_bg haproxy "$PROXY_CPU" haproxy -db -f "$PREFIX/haproxy.cfg" ;;
        tether)
            render "$LOAD_DIR/tether-grpc.toml" "$PREFIX/tether.toml"
            "$TETHER_BIN" check -c "$PREFIX/tether.toml" >/dev/null || die "tether check failed"
            start_bg tether "$PROXY_CPU" "$TETHER_BIN" run -c "$PREFIX/tether.toml" ;;
    esac
    PID[$p]=$STARTED_PID
    wait_http "$p" "$STARTED_PID" "http://127.0.0.1:$LPORT$URL_PATH" --http2-prior-knowledge
done

declare -A CHECK
for p in haproxy tether; do
    seen="" bad=0
    for _ in 1 2 3 4 5 6 7 8; do
        out=$(curl -s -m 2 --http2-prior-knowledge "${H[@]}" --data-binary @"$BODY" -D - -o /dev/null \
            "http://127.0.0.1:${PORT[$p]}$URL_PATH" | tr -d '\r')
        seen+=$(awk -F': ' 'tolower($1)=="x-backend"{print $2}' <<<"$out")
        grep -qi '^grpc-status: 0' <<<"$out" || bad=1
    done
    ok=1
    for k in 1 2 3 4; do [[ $seen == *b$k* ]] || ok=0; done
    if ((ok && !bad)); then CHECK[$p]="ok: reaches all 4, grpc-status 0"; else CHECK[$p]="FAIL: saw '$seen' bad=$bad"; fi
    log "$p: check ${CHECK[$p]}"
done

log_percentiles() {
    cut -f3 "$1" | sort -n | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "? ?"; exit }
              i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
              i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
              printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}

declare -A RPS P50 P99 CPUREQ ERRS
ARGS=(-t1 -c"$CLIENTS" -m"$STREAMS" -d "$BODY" "${H[@]}")
for ((run = 1; run <= RUNS; run++)); do
    for p in haproxy tether; do
        url="http://127.0.0.1:${PORT[$p]}$URL_PATH" key="$p/grpc/$run"
        taskset -c "$CLIENT_CPU" h2load "${ARGS[@]}" -D "$WARMUP" "$url" >/dev/null
        out=$TMP/h2load-$p-$run.txt lf=$TMP/h2load-$p-$run.tsv
        t0=$(cpu_ticks "${PID[$p]}")
        taskset -c "$CLIENT_CPU" h2load "${ARGS[@]}" -D "$DURATION" --log-file="$lf" "$url" >"$out"
        t1=$(cpu_ticks "${PID[$p]}")
        RPS[$key]=$(awk '/^finished in /{ sub(/,$/, "", $4); print $4; exit }' "$out")
        done_=$(awk '/^requests: /{ print $6; exit }' "$out")
        ERRS[$key]=$(awk '/^requests: /{ n += $10 } /^status codes: /{ n += $5 + $7 + $9 } END { print n + 0 }' "$out")
        read -r P50[$key] P99[$key] < <(log_percentiles "$lf")
        CPUREQ[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${done_:-0}" \
            'BEGIN { if (n > 0) printf "%.1f", d / hz / n * 1e6; else print "?" }')
        log "run $run/$RUNS $p: ${RPS[$key]} req/s, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms, ${CPUREQ[$key]} µs CPU/req, errors ${ERRS[$key]}"
        rm -f "$lf"
    done
done

{
    echo "# gRPC unary load: HAProxy (proto h2) vs tether (protocol = \"h2c\"), $(date -u '+%F %T') UTC"
    echo
    echo "h2load -t1 -c$CLIENTS -m$STREAMS over h2c, ${DURATION}s per run after ${WARMUP}s warm-up, $RUNS interleaved rounds;"
    echo "proxies pinned to CPU $PROXY_CPU (one worker thread each), h2load and four grpc-backend processes on CPU $CLIENT_CPU."
    echo "$(haproxy -v 2>&1 | sed -n 1p); $("$TETHER_BIN" --version 2>&1 | sed -n 1p)."
    echo
    echo "| candidate | check | req/s (median run) | p50 ms | p99 ms | CPU µs/req | errors | CPU/req vs HAProxy | req/s vs HAProxy | p99 vs HAProxy |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in haproxy tether; do
        m=$(median_run "$p/grpc")
        k="$p/grpc/$m"
        echo "| $p | ${CHECK[$p]} | ${RPS[$k]} | ${P50[$k]} | ${P99[$k]} | ${CPUREQ[$k]} | ${ERRS[$k]} | $(ratio_median CPUREQ "$p" grpc) | $(ratio_median RPS "$p" grpc) | $(ratio_median P99 "$p" grpc) |"
    done
    echo
    echo "Every run (req/s, CPU µs/req, p99 ms):"
    echo
    for ((run = 1; run <= RUNS; run++)); do
        line="- round $run:"
        for p in haproxy tether; do
            k="$p/grpc/$run"
            line+=" $p ${RPS[$k]} req/s ${CPUREQ[$k]} µs ${P99[$k]} ms;"
        done
        echo "$line"
    done
} | tee "$OUT"
log "results in $OUT"
