#!/usr/bin/env bash
# HTTP/2 load comparison (issue 9.6, issue 15): HAProxy, a minimal HTTP/2 floor on the h2 crate
# and tether in one run, each terminating TLS with ALPN h2, one worker thread each, the same four
# backends (HTTP/1.1 keep-alive upstream), h2load as the client.
#
#   benches/h2load.sh [--only LIST] [--scenarios rr,cookie] [--protos h2,h1] [--out FILE]
#   H2=1 benches/load.sh ...      runs this script after the HTTP/1.1 comparison (same environment)
#
# Candidates (--only, comma-separated; default haproxy,floor-h2,tether; always in this order):
#   haproxy   HAProxy: bind ... ssl crt <pem> alpn h2,http/1.1 (benches/load/haproxy-h2.cfg)
#   floor-h2  benches/floor_h2.rs: the least a tokio-rustls + h2-crate + httparse proxy does per
#             request (one thread, mimalloc, pooled upstream connections, no application logic);
#             h2 only (its ALPN offers http/1.1 but it closes such connections: h1 rows are n/a);
#             build: cargo build --release --locked --example floor-h2
#   tether    the tether binary, one [[server.tls]] listener (benches/load/tether-h2.toml); the
#             old name tether-fast is accepted as an alias
#
# Scenarios (--scenarios, comma-separated; default rr,cookie), the same paths on every candidate:
#   rr      GET /rr      round robin over the four backends
#   cookie  GET /cookie  affinity: every request carries "cookie: bench_sid=<random>" plus the
#                        affinity cookie of the candidate's first Set-Cookie (fetched once per
#                        candidate with curl over HTTP/2): HAProxy "cookie haproxy_bench insert
#                        indirect nocache" (be_cookie), tether a policy = "cookie" pool; the floor
#                        sets no cookie and picks backend bench_sid % 4 (its stand-in for affinity)
# Protocols (--protos, comma-separated; default h2), for every scenario:
#   h2      HTTP/2 over TLS: h2load -t1 -c$CLIENTS -m$STREAMS (STREAMS concurrent streams/connection)
#   h1      HTTP/1.1 over TLS: h2load --h1 -t1 -c$CLIENTS -m1 (no pipelining): the TLS cost alone
#
# Environment:
#   DURATION=15   seconds of each measured h2load run   WARMUP=3   seconds of warm-up run before it
#   CLIENTS=64    h2load connections                     STREAMS=10 concurrent streams each (h2)
#   TLS13_CIPHERS=TLS_AES_128_GCM_SHA256  the only TLS 1.3 suite h2load offers (--tls13-ciphers):
#                 left to themselves HAProxy (OpenSSL) picks AES-256-GCM and rustls (tether, the
#                 floor) AES-128-GCM, so the default pins all to the same suite
#   RUNS=3        rounds: each measures every scenario × protocol on every candidate in turn; a row
#                 shows the candidate's median run (by req/s) and the min–max range, the ratios to
#                 HAProxy are the median of per-round ratios
#   TETHER_BIN=$CARGO_TARGET_DIR/release/tether  (cargo build --release --locked)
#   FLOOR_H2_BIN=$CARGO_TARGET_DIR/release/examples/floor-h2  (--example floor-h2)
#                 (CARGO_TARGET_DIR defaults to target/ in the repository)
#   PROXY_CPU=0   CPU the proxy is pinned to            CLIENT_CPU=1   CPU for h2load and backends
#   KEEP_TMP=1    keep the temp dir (configs, certificate, logs, raw h2load output)
#   Ports (127.0.0.1): backends 19101-19104; haproxy 18181 (TLS 18481); floor-h2 TLS 18482;
#   tether 18183 (TLS 18483, admin 18193). The plain-HTTP ports only serve the start-up probe (the
#   floor has none: it is probed over TLS). Override with H2_B1_PORT..H2_B4_PORT, H2_HAPROXY_PORT,
#   H2_HAPROXY_TLS_PORT, H2_FLOOR_H2_TLS_PORT, H2_TETHER_PORT, H2_TETHER_TLS_PORT,
#   H2_TETHER_ADMIN_PORT (the older H2_TETHER_FAST_PORT, H2_TETHER_FAST_TLS_PORT and
#   H2_TETHER_FAST_ADMIN_PORT still work).
#
# The TLS certificate (ECDSA P-256, self-signed, CN/SAN localhost and 127.0.0.1) is generated
# with openssl in the temp dir at every run; every candidate serves the same one, and the report
# names the TLS version, cipher and ALPN protocol h2load negotiated (a run that did not get the
# wanted protocol fails its check).
# Per candidate × scenario × protocol: a functional check with curl over the wanted HTTP version
# (rr: round robin reaches all four backends; cookie: the same cookie sticks to one backend);
# then RUNS rounds, each measuring every scenario × protocol on every candidate in turn: WARMUP s
# of h2load, then the measured `h2load -D $DURATION --log-file=...`. The measured run makes its
# own CLIENTS TLS handshakes (a one-off cost inside the run, the same for every candidate).
# Latency: h2load prints only min/max/mean/sd of "time for request"; the mean and max come from
# there, p50 and p99 are computed by this script from h2load's per-request log (--log-file: time
# from a request's start to its stream's close, one line per completed request).
# Proxy CPU time per request = Δ(utime+stime) of the proxy's processes over the measured run
# (/proc/<pid>/stat) ÷ requests done. Ratios to HAProxy (CPU µs/req, req/s, p99): within each
# round against HAProxy's run of the same scenario and protocol, then the median over the rounds.
# Results: a Markdown table on stdout and in benches/results-h2-<date>.md (with raw h2load output).
# Every process the script starts is stopped on exit (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD_DIR=$ROOT/benches/load

DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CLIENTS=${CLIENTS:-64}
STREAMS=${STREAMS:-10}
TLS13_CIPHERS=${TLS13_CIPHERS:-TLS_AES_128_GCM_SHA256}
RUNS=${RUNS:-3}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TETHER_BIN=${TETHER_BIN:-$TARGET_DIR/release/tether}
FLOOR_H2_BIN=${FLOOR_H2_BIN:-$TARGET_DIR/release/examples/floor-h2}
case $TETHER_BIN in /*) ;; *) TETHER_BIN=$ROOT/$TETHER_BIN ;; esac
case $FLOOR_H2_BIN in /*) ;; *) FLOOR_H2_BIN=$ROOT/$FLOOR_H2_BIN ;; esac
B1_PORT=${H2_B1_PORT:-19101}
B2_PORT=${H2_B2_PORT:-19102}
B3_PORT=${H2_B3_PORT:-19103}
B4_PORT=${H2_B4_PORT:-19104}
BACKEND_PORTS=("$B1_PORT" "$B2_PORT" "$B3_PORT" "$B4_PORT")
declare -A PLAIN_PORT TLS_PORT ADMIN_PORTS
PLAIN_PORT[haproxy]=${H2_HAPROXY_PORT:-18181}
TLS_PORT[haproxy]=${H2_HAPROXY_TLS_PORT:-18481}
TLS_PORT[floor-h2]=${H2_FLOOR_H2_TLS_PORT:-18482}
PLAIN_PORT[tether]=${H2_TETHER_PORT:-${H2_TETHER_FAST_PORT:-18183}}
TLS_PORT[tether]=${H2_TETHER_TLS_PORT:-${H2_TETHER_FAST_TLS_PORT:-18483}}
ADMIN_PORTS[tether]=${H2_TETHER_ADMIN_PORT:-${H2_TETHER_FAST_ADMIN_PORT:-18193}}

ALL_CANDIDATES=(haproxy floor-h2 tether)
ONLY=haproxy,floor-h2,tether
SCENARIOS=rr,cookie
PROTOS=h2
OUT=

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
while (($#)); do
    case $1 in
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --scenarios) SCENARIOS=${2:?--scenarios needs a list}; shift 2 ;;
        --scenarios=*) SCENARIOS=${1#*=}; shift ;;
        --protos) PROTOS=${2:?--protos needs a list}; shift 2 ;;
        --protos=*) PROTOS=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
IFS=, read -ra wanted <<<"$ONLY"
IFS=, read -ra SCENS <<<"$SCENARIOS"
IFS=, read -ra PROTS <<<"$PROTOS"
chosen=" "
for p in "${wanted[@]}"; do
    case $p in
        haproxy | floor-h2 | tether) chosen+="$p " ;;
        tether-fast) chosen+="tether " ;;
        *) echo "unknown candidate '$p' (${ALL_CANDIDATES[*]}; tether-fast = tether)" >&2; exit 2 ;;
    esac
done
PROXIES=()
for p in "${ALL_CANDIDATES[@]}"; do [[ $chosen == *" $p "* ]] && PROXIES+=("$p"); done
((${#PROXIES[@]})) || { echo "--only: no candidate given" >&2; exit 2; }
for s in "${SCENS[@]}"; do
    case $s in rr | cookie) ;; *) echo "unknown scenario '$s' (rr, cookie)" >&2; exit 2 ;; esac
done
for s in "${PROTS[@]}"; do
    case $s in h2 | h1) ;; *) echo "unknown protocol '$s' (h2, h1)" >&2; exit 2 ;; esac
done
((${#SCENS[@]} && ${#PROTS[@]})) || { echo "--scenarios and --protos need at least one each" >&2; exit 2; }
for v in RUNS CLIENTS STREAMS DURATION WARMUP; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/benches/results-h2-$STAMP.md}

LOG_TAG=h2load
# shellcheck source-path=SCRIPTDIR source=load/lib.sh
source "$LOAD_DIR/lib.sh"

need_tools h2load haproxy nginx curl openssl taskset
HAPROXY=$(command -v haproxy)
NGINX=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)
lib_init

BUSY_BEFORE=$(cpu_busy_pct)
if ((BUSY_BEFORE > 10)); then
    log "warning: the machine is ${BUSY_BEFORE}% busy before the benchmark; results will be noisy"
fi

# ---------------------------------------------------------------------------------------------
# The certificate, made fresh for this run.
CERT=$TMP/cert.pem KEY=$TMP/key.pem PEM=$TMP/cert+key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$KEY" -out "$CERT" 2>"$TMP/openssl.log" || { cat "$TMP/openssl.log" >&2; die "openssl req failed"; }
cat "$CERT" "$KEY" >"$PEM"

# render TEMPLATE OUT: fill the @...@ placeholders.
render() {
    sed -e "s#@B1@#127.0.0.1:$B1_PORT#g" -e "s#@B2@#127.0.0.1:$B2_PORT#g" \
        -e "s#@B3@#127.0.0.1:$B3_PORT#g" -e "s#@B4@#127.0.0.1:$B4_PORT#g" \
        -e "s#@LISTEN@#127.0.0.1:$PORT#g" -e "s#@TLS@#127.0.0.1:${TLS:-0}#g" \
        -e "s#@ADMIN@#127.0.0.1:${ADMIN_PORT:-0}#g" -e "s#@CERT@#$CERT#g" -e "s#@KEY@#$KEY#g" \
        -e "s#@PEM@#$PEM#g" -e "s#@PREFIX@#$PREFIX#g" -e "s#@PORT@#$PORT#g" \
        -e "s#@BODY@#${BODY:-}#g" "$1" >"$2"
}

# ---------------------------------------------------------------------------------------------
# Backends: four nginx instances on CLIENT_CPU, body "b1\n" … "b4\n" (as in load.sh).
for p in "${PROXIES[@]}"; do
    for port in "${PLAIN_PORT[$p]:-}" "${TLS_PORT[$p]}" "${ADMIN_PORTS[$p]:-}"; do
        [[ -n $port ]] && port_busy "$port" && die "port $port on 127.0.0.1 is already in use"
    done
done
for port in "${BACKEND_PORTS[@]}"; do
    port_busy "$port" && die "port $port on 127.0.0.1 is already in use"
done
n=0
for port in "${BACKEND_PORTS[@]}"; do
    n=$((n + 1))
    PREFIX=$TMP/backend$n PORT=$port BODY=b$n
    mkdir -p "$PREFIX"
    render "$LOAD_DIR/backend.nginx.conf" "$PREFIX/nginx.conf"
    start_bg "backend$n" "$CLIENT_CPU" "$NGINX" -p "$PREFIX/" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log"
    wait_http "backend$n" "$STARTED_PID" "http://127.0.0.1:$port/"
done
unset BODY
log "backends up on 127.0.0.1:${BACKEND_PORTS[*]} (CPU $CLIENT_CPU)"

# ---------------------------------------------------------------------------------------------
# Whether CANDIDATE serves PROTO at all (the floor only speaks h2).
applies() { [[ $1 != floor-h2 || $2 == h2 ]]; }

# The Cookie header of the cookie scenario: "bench_sid=<n>" (the floor's key) plus the affinity
# cookie of the candidate's first Set-Cookie (HAProxy's inserted one, tether's signed one), asked
# once per candidate over HTTP/2 (as load.sh's bench_cookie does over HTTP/1.1).
bench_cookie() { # TLS_PORT
    local sid="bench_sid=$((RANDOM * 32768 + RANDOM))" set
    set=$(curl -sk -m 2 --http2 -o /dev/null -D - -H "Cookie: $sid" "https://127.0.0.1:$1/cookie" |
        tr -d '\r' | awk -F': ' 'tolower($1)=="set-cookie"{split($2,a,";"); print a[1]; exit}' || true)
    echo "$sid${set:+; $set}"
}

# Functional check over TLS with the protocol's HTTP version: rr reaches all 4 backends in 8
# requests; cookie: 8 requests with the candidate's cookie all reach the same backend.
check() { # CANDIDATE SCENARIO PROTO → prints a short verdict
    local url="https://127.0.0.1:${TLS_PORT[$1]}/$2" flag=--http2 want=2 seen="" versions="" out k
    local -a hdr=()
    [[ $3 == h1 ]] && flag=--http1.1 want=1.1
    [[ $2 == cookie ]] && hdr=(-H "Cookie: ${COOKIE[$1]}")
    for _ in 1 2 3 4 5 6 7 8; do
        out=$(curl -sk -m 2 "$flag" "${hdr[@]}" -w ' %{http_version}' "$url" || true)
        seen+="${out%% *}"
        versions+=" ${out##* }"
    done
    for k in $versions; do
        [[ $k == "$want" ]] || { echo "FAIL: HTTP versions$versions (want $want)"; return; }
    done
    seen=$(tr -d '\n' <<<"$seen")
    if [[ $2 == rr ]]; then
        for k in 1 2 3 4; do
            [[ $seen == *b$k* ]] || { echo "FAIL: rr saw '$seen'"; return; }
        done
        echo "ok: reaches all 4 over HTTP/$want"
        return
    fi
    local first=${seen:0:2}
    [[ $first == b[1-4] && $seen == "$first$first$first$first$first$first$first$first" ]] ||
        { echo "FAIL: cookie not sticky ('$seen')"; return; }
    local jar=${COOKIE[$1]#bench_sid=*; }
    if [[ $jar != "${COOKIE[$1]}" ]]; then
        echo "ok: Set-Cookie ${jar%%=*}, sticky over HTTP/$want"
    else
        echo "ok: no Set-Cookie, sticky on bench_sid over HTTP/$want"
    fi
}

# ---------------------------------------------------------------------------------------------
# h2load runs and parsing.
to_ms() { # "449us" | "6.17ms" | "1.01s" → milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", "?" }'
}

# Percentiles (nearest rank) of column 3 (µs) of an h2load --log-file, in ms: prints "p50 p99".
log_percentiles() { # LOGFILE
    cut -f3 "$1" | sort -n | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "? ?"; exit }
              i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
              i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
              printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}

# Results keyed "candidate/scenario-protocol/run" (lib.sh's median_run and ratio_median).
declare -A RPS MEAN P50 P99 MAX CPUREQ CPUPCT ERRS ALPN TLSINFO CHECK COOKIE
RAW=$TMP/raw.md
: >"$RAW"

measure() { # CANDIDATE SCENARIO PROTO RUN
    local proxy=$1 scen=$2 proto=$3 run=$4 pid=${PROXY_PID[$1]}
    local key="$1/$2-$3/$4" url="https://127.0.0.1:${TLS_PORT[$1]}/$2" out lf
    local -a args=(-t1 -c"$CLIENTS" -m"$STREAMS" --tls13-ciphers="$TLS13_CIPHERS")
    [[ $proto == h1 ]] && args=(--h1 -t1 -c"$CLIENTS" -m1 --tls13-ciphers="$TLS13_CIPHERS")
    [[ $scen == cookie ]] && args+=(-H "cookie: ${COOKIE[$proxy]}")
    taskset -c "$CLIENT_CPU" h2load "${args[@]}" -D "$WARMUP" "$url" >/dev/null
    out=$TMP/h2load-$proxy-$scen-$proto-$run.txt
    lf=$TMP/h2load-$proxy-$scen-$proto-$run.tsv
    log "run $run/$RUNS $proxy $scen $proto: h2load ${args[*]} -D $DURATION $url"
    local t0 t1 w0 w1
    t0=$(cpu_ticks "$pid")
    w0=$(date +%s.%N)
    taskset -c "$CLIENT_CPU" h2load "${args[@]}" -D "$DURATION" --log-file="$lf" "$url" >"$out"
    w1=$(date +%s.%N)
    t1=$(cpu_ticks "$pid")

    local done_ rps errs p50 p99
    rps=$(awk '/^finished in /{ sub(/,$/, "", $4); print $4; exit }' "$out")
    # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
    done_=$(awk '/^requests: /{ print $6; exit }' "$out")
    # errors: failed requests + non-2xx answers ("status codes: N 2xx, N 3xx, N 4xx, N 5xx").
    errs=$(awk '/^requests: /{ n += $10 } /^status codes: /{ n += $5 + $7 + $9 } END { print n + 0 }' "$out")
    RPS[$key]=${rps:-0}
    MEAN[$key]=$(to_ms "$(awk '/^time for request:/{ print $6; exit }' "$out")")
    MAX[$key]=$(to_ms "$(awk '/^time for request:/{ print $5; exit }' "$out")")
    read -r p50 p99 < <(log_percentiles "$lf")
    P50[$key]=$p50
    P99[$key]=$p99
    ERRS[$key]=$errs
    ALPN[$key]=$(awk -F': ' '/^Application protocol:/{ print $2; exit }' "$out")
    TLSINFO[$key]="$(awk -F': ' '/^TLS Protocol:/{ print $2; exit }' "$out") $(awk -F': ' '/^Cipher:/{ print $2; exit }' "$out")"
    CPUREQ[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${done_:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", d / hz / n * 1e6; else print "?" }')
    CPUPCT[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" \
        'BEGIN { printf "%.0f", d / hz / (b - a) * 100 }')
    log "run $run/$RUNS $proxy $scen $proto: ${RPS[$key]} req/s, mean ${MEAN[$key]} ms, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms, ${CPUREQ[$key]} µs CPU/req (${CPUPCT[$key]}% CPU), errors $errs, ${TLSINFO[$key]} ALPN ${ALPN[$key]:-none}"
    {
        printf '### %s / %s / %s, run %s\n\n```\n' "$proxy" "$scen" "$proto" "$run"
        grep -v '^progress: ' "$out"
        printf '```\n\n'
    } >>"$RAW"
    rm -f "$lf"
}

# ---------------------------------------------------------------------------------------------
# Candidates: render config, validate, start pinned to PROXY_CPU; all side by side (an idle one
# costs nothing) so that the rounds can interleave them, as load.sh does.
declare -A VERSION SKIPPED PROXY_PID
VERSION[haproxy]=$("$HAPROXY" -v 2>&1 | sed -n 1p)
VERSION[h2load]=$(h2load --version 2>&1 | sed -n 1p || true)
VERSION[openssl]=$(openssl version 2>&1 | sed -n 1p)

skip() { # CANDIDATE REASON
    SKIPPED[$1]=$2
    log "$1: SKIPPED — $2"
}

start_proxy() { # CANDIDATE
    local proxy=$1 probe
    local -a probe_args=()
    PREFIX=$TMP/$proxy PORT=${PLAIN_PORT[$1]:-0} TLS=${TLS_PORT[$1]} ADMIN_PORT=${ADMIN_PORTS[$1]:-}
    probe=http://127.0.0.1:$PORT/rr
    mkdir -p "$PREFIX"
    case $proxy in
        haproxy)
            render "$LOAD_DIR/haproxy-h2.cfg" "$PREFIX/haproxy.cfg"
            "$HAPROXY" -c -q -f "$PREFIX/haproxy.cfg" || die "haproxy config check failed"
            start_bg haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$PREFIX/haproxy.cfg"
            ;;
        floor-h2)
            if [[ ! -x $FLOOR_H2_BIN ]]; then
                skip floor-h2 "binary $FLOOR_H2_BIN not found (cargo build --release --locked --example floor-h2, or set FLOOR_H2_BIN)"
                return 0
            fi
            VERSION[floor-h2]="benches/floor_h2.rs ($FLOOR_H2_BIN, built $(date -r "$FLOOR_H2_BIN" '+%F %T'))"
            start_bg floor-h2 "$PROXY_CPU" "$FLOOR_H2_BIN" "127.0.0.1:$TLS" "$CERT" "$KEY" \
                "127.0.0.1:$B1_PORT" "127.0.0.1:$B2_PORT" "127.0.0.1:$B3_PORT" "127.0.0.1:$B4_PORT"
            probe=https://127.0.0.1:$TLS/rr probe_args=(-k --http2)
            ;;
        tether)
            if [[ ! -x $TETHER_BIN ]]; then
                skip tether "binary $TETHER_BIN not found (cargo build --release --locked, or set TETHER_BIN)"
                return 0
            fi
            VERSION[tether]="$("$TETHER_BIN" --version 2>&1 | sed -n 1p || true) ($TETHER_BIN, built $(date -r "$TETHER_BIN" '+%F %T'))"
            render "$LOAD_DIR/tether-h2.toml" "$PREFIX/tether.toml"
            if ! "$TETHER_BIN" check -c "$PREFIX/tether.toml" >"$PREFIX/check.log" 2>&1; then
                cat "$PREFIX/check.log" >&2
                skip tether "\`tether check\` rejected benches/load/tether-h2.toml (errors above)"
                return 0
            fi
            start_bg tether "$PROXY_CPU" env RUST_LOG=info "$TETHER_BIN" run -c "$PREFIX/tether.toml"
            ;;
    esac
    PROXY_PID[$proxy]=$STARTED_PID
    # The floor has no plain listener: probed over TLS (curl -k; it answers only HTTP/2).
    wait_http "$proxy" "$STARTED_PID" "$probe" "${probe_args[@]}"
    log "$proxy up on 127.0.0.1:$TLS (TLS; pid $STARTED_PID, CPU $PROXY_CPU)"
}

ACTIVE=()
for p in "${PROXIES[@]}"; do
    start_proxy "$p"
    [[ -n ${SKIPPED[$p]:-} ]] || ACTIVE+=("$p")
done
((${#ACTIVE[@]})) || die "no candidate could be started"
for p in "${ACTIVE[@]}"; do
    [[ " ${SCENS[*]} " == *" cookie "* ]] && COOKIE[$p]=$(bench_cookie "${TLS_PORT[$p]}")
    for s in "${SCENS[@]}"; do
        for q in "${PROTS[@]}"; do
            if applies "$p" "$q"; then CHECK[$p/$s-$q]=$(check "$p" "$s" "$q"); else CHECK[$p/$s-$q]=n/a; fi
            log "$p $s $q: check ${CHECK[$p/$s-$q]}"
        done
    done
done
for ((run = 1; run <= RUNS; run++)); do
    for s in "${SCENS[@]}"; do
        for q in "${PROTS[@]}"; do
            for p in "${ACTIVE[@]}"; do
                if applies "$p" "$q"; then measure "$p" "$s" "$q" "$run"; fi
            done
        done
    done
done

# ---------------------------------------------------------------------------------------------
# Report.
HAVE_HAPROXY=0
[[ " ${ACTIVE[*]} " == *" haproxy "* ]] && HAVE_HAPROXY=1

report() {
    local p s q key flagged=0 failed=0 r
    echo "# HTTP/2 load comparison — $STAMP"
    echo
    echo "- host: $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "- ${VERSION[haproxy]}; ${VERSION[h2load]}; ${VERSION[openssl]}"
    [[ -n ${VERSION[floor-h2]:-} ]] && echo "- floor-h2: ${VERSION[floor-h2]}: tokio-rustls + h2 crate + httparse, one thread, no application logic; cookie scenario: backend bench_sid % 4, no cookie of its own; h2 only"
    [[ -n ${VERSION[tether]:-} ]] && echo "- tether: ${VERSION[tether]}"
    echo "- $RUNS round(s), candidates interleaved; each measured run: h2load -t1 -c$CLIENTS -m$STREAMS -D $DURATION (h2) / h2load --h1 -t1 -c$CLIENTS -m1 -D $DURATION (h1) after a ${WARMUP} s warm-up run; GET https://127.0.0.1:PORT/rr (round robin) and /cookie (with -H 'cookie: bench_sid=<n>; <the candidate's affinity cookie>'); a row shows the run with the median req/s; proxy on CPU $PROXY_CPU, h2load and four nginx backends on CPU $CLIENT_CPU"
    echo "- TLS: one self-signed ECDSA P-256 certificate generated for this run, served by every candidate; h2load offers only TLS 1.3 suite(s) $TLS13_CIPHERS; the measured run includes its $CLIENTS handshakes"
    echo "- one worker thread per proxy, HTTP/1.1 keep-alive to the backends, no access logs, no health checks; 3-byte body"
    echo "- machine CPU busy before the run: ${BUSY_BEFORE}% (other load skews every number; rerun on an idle machine if high)"
    echo "- latency: mean and max are h2load's \"time for request\" (it reports only min/max/mean/sd); p50 and p99 are computed from h2load's per-request log (--log-file), nearest rank"
    echo "- CPU/req: Δ(utime+stime) of the proxy's processes over the measured run ÷ requests done; CPU %: of one core over the run (≈100% = the proxy was the bottleneck)"
    echo "- ×HAProxy columns: each round's value ÷ HAProxy's in the same round, scenario and protocol, median over the $RUNS round(s) (CPU/req and p99: lower is better; req/s: higher is better)"
    echo
    echo "| candidate | scenario | protocol | req/s$( ((RUNS > 1)) && echo " (min–max)") | mean ms | p50 ms | p99 ms | max ms | CPU µs/req | CPU % | errors | CPU/req ×HAProxy | req/s ×HAProxy | p99 ×HAProxy | negotiated | check |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for s in "${SCENS[@]}"; do
        for q in "${PROTS[@]}"; do
            local want=h2 sq=$s-$q
            [[ $q == h1 ]] && want=http/1.1
            for p in "${PROXIES[@]}"; do
                if [[ -n ${SKIPPED[$p]:-} ]]; then
                    echo "| $p | $s | $q | skipped ¹ | | | | | | | | | | | | |"
                    continue
                fi
                if ! applies "$p" "$q"; then
                    echo "| $p | $s | $q | n/a | | | | | | | | | | | | HTTP/2 only |"
                    continue
                fi
                key=$p/$sq/$(median_run "$p/$sq")
                local range="" rcpu="" rrps="" rp99="" errs=0 check=${CHECK[$p/$sq]} bad=""
                if ((RUNS > 1)); then
                    range=$(for ((r = 1; r <= RUNS; r++)); do echo "${RPS[$p/$sq/$r]}"; done |
                        sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf " (%.0f–%.0f)", lo, hi }')
                fi
                if ((HAVE_HAPROXY)); then
                    rcpu=$(ratio_median CPUREQ "$p" "$sq")
                    rrps=$(ratio_median RPS "$p" "$sq")
                    rp99=$(ratio_median P99 "$p" "$sq")
                fi
                for ((r = 1; r <= RUNS; r++)); do
                    errs=$((errs + ${ERRS[$p/$sq/$r]:-0}))
                    [[ ${ALPN[$p/$sq/$r]:-} == "$want" ]] || bad+=" run $r: ${ALPN[$p/$sq/$r]:-none}"
                done
                [[ -n $bad ]] && check="FAIL: h2load ALPN${bad} (want $want); $check"
                [[ $check == ok* ]] || failed=1
                local pct=${CPUPCT[$key]}
                if ((pct < 90)); then pct="$pct ⚠"; flagged=1; fi
                echo "| $p | $s | $q | ${RPS[$key]}$range | ${MEAN[$key]} | ${P50[$key]} | ${P99[$key]} | ${MAX[$key]} | ${CPUREQ[$key]} | $pct | $errs | $rcpu | $rrps | $rp99 | ${TLSINFO[$key]}, ${ALPN[$key]:-none} | $check |"
            done
        done
    done
    echo
    echo "errors: failed requests + non-2xx responses, summed over all $RUNS measured run(s)."
    echo
    if ((flagged)); then
        echo "⚠ proxy below 90% of its core: it was not the bottleneck (the client core, or other load on the machine, was), so req/s and latency understate it; CPU µs/req still holds roughly."
        echo
    fi
    if ((failed)); then
        echo "A functional check FAILED: that row's numbers do not measure what it claims."
        echo
    fi
    for p in "${PROXIES[@]}"; do
        [[ -n ${SKIPPED[$p]:-} ]] && echo "¹ $p skipped: ${SKIPPED[$p]}." && echo
    done
    echo "Configs: benches/load/ (haproxy-h2.cfg, tether-h2.toml, backend.nginx.conf); floor: benches/floor_h2.rs."
    echo
    echo "<details><summary>raw h2load output</summary>"
    echo
    cat "$RAW"
    echo "</details>"
}
report >"$OUT"
echo
sed -n '/^| candidate/,/^$/p' "$OUT"
for p in "${PROXIES[@]}"; do
    [[ -n ${SKIPPED[$p]:-} ]] && echo "$p: skipped — ${SKIPPED[$p]}"
done
log "report written to $OUT"
