#!/usr/bin/env bash
# Load comparison (DESIGN.md §10): tether vs HAProxy vs NGINX vs the tokio floor, one worker
# thread each, the same four backends, wrk as the client.
#
#   benches/load.sh [--only LIST] [--scenarios rr,cookie,hash] [--out FILE]
#
# Candidates (--only, comma-separated; default all, in this order):
#   haproxy         HAProxy                       nginx           NGINX as the proxy
#   floor-tokio     benches/floor_tokio.rs: the least a tokio + httparse proxy does per request
#                   (head forwarded as its own bytes + one header, pooled buffers; rr only:
#                   marked n/a for cookie and hash)
#   tether          tether (also accepted as tether-fast, its name when tether had two engines)
#
# Environment:
#   DURATION=15   seconds of each measured wrk run      WARMUP=3   seconds of warm-up before it
#   CONNS=50      wrk connections (one wrk thread)
#   RUNS=3        rounds: each measures every scenario on every candidate in turn; the table shows
#                 each candidate's median run (by req/s) and the min–max range (one run varies
#                 ±20% here), and the ratios to HAProxy as the median of per-round ratios
#   TETHER_BIN=$CARGO_TARGET_DIR/release/tether         (cargo build --release --locked)
#   FLOOR_TOKIO_BIN=$CARGO_TARGET_DIR/release/examples/floor-tokio  (--example floor-tokio)
#                 (CARGO_TARGET_DIR defaults to target/ in the repository)
#   PROXY_CPU=0   CPU the proxy is pinned to            CLIENT_CPU=1   CPU for wrk and backends
#   KEEP_TMP=1    keep the temp dir (configs, logs, raw wrk output) for inspection
#   PERF_RECORD=1 also `perf record -g` the proxy over each measured run (implies KEEP_TMP=1):
#                 $TMP/perf-<candidate>-<scenario>-<run>.data, for `perf report -i` or `perf diff`
#                 (sampling costs the proxy a little CPU: compare such runs only with each other)
#   H2=1          then the HTTP/2 comparison: benches/h2load.sh (h2load over TLS, ALPN h2) on the
#                 chosen candidates' HTTP/2 counterparts (haproxy; floor-tokio → floor-h2;
#                 tether → tether; its default scenarios), with the same DURATION, WARMUP, RUNS,
#                 CPUs, TETHER_BIN and CLIENTS=$CONNS, after this script's processes are stopped;
#                 H2_ARGS adds its options (e.g. "--protos h2,h1"); its report goes to
#                 benches/results-h2-<date>.md (see benches/h2load.sh --help)
#   Ports (127.0.0.1): backends 19001-19004, haproxy 18081, nginx 18082, tether 18083 (admin
#   18093), floor-tokio 18086; override with B1_PORT..B4_PORT HAPROXY_PORT NGINX_PORT
#   TETHER_PORT TETHER_ADMIN_PORT FLOOR_TOKIO_PORT (TETHER_FAST_PORT and TETHER_FAST_ADMIN_PORT
#   are still read when the TETHER_ names are unset).
#
# Scenarios (the same paths on every proxy):
#   rr      GET /rr      round-robin over the four backends
#   cookie  GET /cookie  affinity cookie: benches/load/cookie.lua sends back the first Set-Cookie
#                        (HAProxy "cookie ... insert", tether policy "cookie"); NGINX OSS cannot
#                        insert a cookie, so it hashes a client cookie (hash $cookie_bench_sid
#                        consistent) instead — marked in the table
#   hash    GET /hash    consistent hash of "X-User: user-<random>" (benches/load/hash.lua)
# Gateway scenarios (tether only; --scenarios rr,rl-local,...): the rr pool behind one more stage
# (benches/load/tether-gateway.toml). All of them send the same request head (X-User and an HS256
# Bearer token); the report adds each one's CPU µs/req minus the baseline's in the same round
# (median over rounds) — the cost of that stage:
#   rl-local   a local rate limit keyed on X-User (never refusing)
#   rl-redis   the same limit with store = "redis" (a redis-server the script starts on CLIENT_CPU,
#              port REDIS_PORT=16379)
#   jwt-hs256  an HS256 JWT check (secret_file) of the valid Bearer token
#   jwt-hs256-new  the same route, each request with the next of 4,096 valid HS256 tokens
#              (benches/load/tokens.lua; python3 makes them): four times the verified-token
#              cache's slots, so nearly every check verifies the signature — the cost of a new token
#   jwt-rs256  an RS256 JWT check (key_file, RSA 2048; wrk sends an RS256 token instead)
#   rr-bearer  the plain /rr route with the same request head: the baseline of the others when
#              chosen (else rr), so the table shows the stage, not the longer request head
#
# All candidates run side by side (idle ones cost nothing). Per candidate × scenario: a functional
# check with curl (round-robin reaches all four backends, the cookie/hash key sticks and hashing
# spreads keys over all four); then RUNS rounds, each measuring every scenario on every candidate
# in turn: WARMUP s of wrk, then `wrk -t1 -c$CONNS -d${DURATION}s --latency`.
# Proxy CPU time per request = Δ(utime+stime) of the proxy's processes over the measured run
# (from /proc/<pid>/stat, all threads and, for nginx, master + worker) ÷ requests completed.
# Ratios to HAProxy (CPU µs/req, req/s, p99): computed within each round against HAProxy's run of
# the same scenario in that round, then the median over the rounds.
# Results: a Markdown table on stdout and in benches/results-<date>.md (with raw wrk output).
# Every process the script starts is stopped on exit (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD_DIR=$ROOT/benches/load

DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-50}
RUNS=${RUNS:-3}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TETHER_BIN=${TETHER_BIN:-$TARGET_DIR/release/tether}
FLOOR_TOKIO_BIN=${FLOOR_TOKIO_BIN:-$TARGET_DIR/release/examples/floor-tokio}
case $TETHER_BIN in /*) ;; *) TETHER_BIN=$ROOT/$TETHER_BIN ;; esac
case $FLOOR_TOKIO_BIN in /*) ;; *) FLOOR_TOKIO_BIN=$ROOT/$FLOOR_TOKIO_BIN ;; esac
B1_PORT=${B1_PORT:-19001}
B2_PORT=${B2_PORT:-19002}
B3_PORT=${B3_PORT:-19003}
B4_PORT=${B4_PORT:-19004}
BACKEND_PORTS=("$B1_PORT" "$B2_PORT" "$B3_PORT" "$B4_PORT")
HAPROXY_PORT=${HAPROXY_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
TETHER_PORT=${TETHER_PORT:-${TETHER_FAST_PORT:-18083}}
TETHER_ADMIN_PORT=${TETHER_ADMIN_PORT:-${TETHER_FAST_ADMIN_PORT:-18093}}
FLOOR_TOKIO_PORT=${FLOOR_TOKIO_PORT:-18086}

ALL_CANDIDATES=(haproxy nginx floor-tokio tether)
ONLY=$(IFS=,; echo "${ALL_CANDIDATES[*]}")
SCENARIOS=rr,cookie,hash
GATEWAY=0
REDIS_PORT=${REDIS_PORT:-16379}
OUT=
[[ -z ${PERF_RECORD:-} ]] || KEEP_TMP=1

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
while (($#)); do
    case $1 in
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --scenarios) SCENARIOS=${2:?--scenarios needs a list}; shift 2 ;;
        --scenarios=*) SCENARIOS=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
IFS=, read -ra wanted <<<"$ONLY"
IFS=, read -ra SCENS <<<"$SCENARIOS"
# The chosen candidates, always in the order of ALL_CANDIDATES (HAProxy first: the reference).
chosen=" "
for p in "${wanted[@]}"; do
    case $p in
        haproxy | nginx | floor-tokio | tether) chosen+="$p " ;;
        tether-fast) chosen+="tether " ;; # the name from when tether had two engines
        *) echo "unknown candidate '$p' (${ALL_CANDIDATES[*]})" >&2; exit 2 ;;
    esac
done
PROXIES=()
for p in "${ALL_CANDIDATES[@]}"; do [[ $chosen == *" $p "* ]] && PROXIES+=("$p"); done
((${#PROXIES[@]})) || { echo "--only: no candidate given" >&2; exit 2; }
for s in "${SCENS[@]}"; do
    case $s in
        rr | cookie | hash) ;;
        rl-local | rl-redis | jwt-hs256 | jwt-hs256-new | jwt-rs256 | rr-bearer) GATEWAY=1 ;;
        *) echo "unknown scenario '$s' (rr, cookie, hash, rl-local, rl-redis, jwt-hs256, jwt-hs256-new, jwt-rs256, rr-bearer)" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/benches/results-$STAMP.md}

LOG_TAG=load
# shellcheck source-path=SCRIPTDIR source=load/lib.sh
source "$LOAD_DIR/lib.sh"

# Whether CANDIDATE serves SCENARIO at all (the floor only round-robins).
applies() {
    case $2 in
        rl-* | jwt-* | rr-bearer) [[ $1 == tether ]] ;;
        *) [[ $1 != floor* || $2 == rr ]] ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Tools (Debian packages).
need_tools wrk haproxy nginx curl taskset
[[ ${H2:-0} == [01] ]] || die "H2 must be 0 or 1"
[[ ${H2:-0} == 0 ]] || need_tools h2load openssl
HAPROXY=$(command -v haproxy)
NGINX=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------
# Processes: everything started (start_bg) goes into PIDS and is stopped on exit (lib.sh).
lib_init

# render TEMPLATE OUT: fill the @...@ placeholders.
render() {
    sed -e "s#@B1@#127.0.0.1:$B1_PORT#g" -e "s#@B2@#127.0.0.1:$B2_PORT#g" \
        -e "s#@B3@#127.0.0.1:$B3_PORT#g" -e "s#@B4@#127.0.0.1:$B4_PORT#g" \
        -e "s#@LISTEN@#127.0.0.1:$PORT#g" -e "s#@ADMIN@#127.0.0.1:${ADMIN_PORT:-0}#g" \
        -e "s#@PREFIX@#$PREFIX#g" -e "s#@PORT@#$PORT#g" -e "s#@BODY@#${BODY:-}#g" \
        -e "s#@GW@#$TMP/gateway#g" -e "s#@REDIS_PORT@#$REDIS_PORT#g" \
        "$1" >"$2"
}

BUSY_BEFORE=$(cpu_busy_pct)
if ((BUSY_BEFORE > 10)); then
    log "warning: the machine is ${BUSY_BEFORE}% busy before the benchmark; results will be noisy"
fi

# ---------------------------------------------------------------------------------------------
# Backends: four nginx instances on CLIENT_CPU, body "b1\n" … "b4\n" (3 bytes each).
for port in "${BACKEND_PORTS[@]}" "$HAPROXY_PORT" "$NGINX_PORT" "$FLOOR_TOKIO_PORT" \
    "$TETHER_PORT" "$TETHER_ADMIN_PORT"; do
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

# The Cookie header of the cookie scenario: "bench_sid=<n>" (the key NGINX hashes) plus the
# affinity cookie of the proxy's first Set-Cookie, if it sends one. One per proxy run.
bench_cookie() { # PORT
    local sid="bench_sid=$((RANDOM * 32768 + RANDOM))" set
    set=$(curl -s -m 2 -o /dev/null -D - -H "Cookie: $sid" "http://127.0.0.1:$1/cookie" |
        tr -d '\r' | awk -F': ' 'tolower($1)=="set-cookie"{split($2,a,";"); print a[1]; exit}' || true)
    echo "$sid${set:+; $set}"
}

# ---------------------------------------------------------------------------------------------
# Functional checks (curl): the proxy must do what the scenario claims, or numbers mean nothing.
body() { curl -s -m 2 "$@" || true; }

# Whether the concatenated bodies in $1 name every backend b1..b4.
all_backends() {
    local k
    for k in 1 2 3 4; do [[ $1 == *b$k* ]] || return 1; done
}

check_scenario() { # PORT SCENARIO → prints a short verdict
    local port=$1 scen=$2 url="http://127.0.0.1:$1/$2" seen="" b i first jar cookie
    case $scen in
        rr)
            for i in 1 2 3 4 5 6 7 8; do seen+="$(body "$url")"; done
            all_backends "$seen" && echo "ok: reaches all 4" || echo "FAIL: rr saw '$seen'"
            ;;
        cookie)
            cookie=$(bench_cookie "$port")
            jar=${cookie#bench_sid=*; }
            [[ $jar == "$cookie" ]] && jar=""
            first=$(body -H "Cookie: $cookie" "$url")
            local want=""
            for i in 1 2 3 4 5 6; do
                seen+="$(body -H "Cookie: $cookie" "$url")"
                want+=$first
            done
            if [[ -z $first ]]; then
                echo "FAIL: no response"
            elif [[ $seen != "$want" ]]; then
                echo "FAIL: not sticky ($seen)"
            elif [[ -n $jar ]]; then
                echo "ok: Set-Cookie ${jar%%=*}, sticky"
            else
                echo "ok: no Set-Cookie, sticky on bench_sid"
            fi
            ;;
        rl-* | jwt-* | rr-bearer)
            wrk_args "$scen" "$port"
            local hdrs=("${WRK_SCRIPT[@]}")
            # The many-token scenario's wrk script: curl sends its tokens in turn instead.
            [[ $scen == jwt-hs256-new ]] && mapfile -t -n 8 hdrs < <(sed 's/^/Authorization: Bearer /' "${WRK_SCRIPT_ARGS[1]}")
            for i in 1 2 3 4 5 6 7 8; do
                if [[ $scen == jwt-hs256-new ]]; then
                    seen+="$(body -H "X-User: bench-user" -H "${hdrs[i - 1]}" "$url")"
                else
                    seen+="$(body "${hdrs[@]}" "$url")"
                fi
            done
            local refused
            refused=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$url" || true)
            if ! all_backends "$seen"; then
                echo "FAIL: $scen saw '$seen'"
            elif [[ $scen == jwt-* && $refused != 401 ]]; then
                echo "FAIL: no token answered $refused, not 401"
            else
                echo "ok: reaches all 4${refused:+, no token/key → $refused}"
            fi
            ;;
        hash)
            # 40 keys: the chance that a fair hash leaves one of 4 backends unused is 4·0.75⁴⁰ ≈ 4e-5.
            local all="" bad=0
            for i in $(seq 1 40); do
                first=$(body -H "X-User: user-$i" "$url")
                b=$(body -H "X-User: user-$i" "$url")
                [[ -n $first && $first == "$b" ]] || bad=$((bad + 1))
                all+=$first
            done
            if ((bad)); then
                echo "FAIL: $bad of 40 keys moved"
            elif all_backends "$all"; then
                echo "ok: keys stick, all 4 used"
            else
                echo "FAIL: keys on $(grep -o 'b[0-9]' <<<"$all" | sort -u | tr -d '\n') only"
            fi
            ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# wrk runs and parsing.
# wrk_args SCENARIO PORT: sets WRK_SCRIPT (options before the URL) and WRK_SCRIPT_ARGS (after it).
wrk_args() {
    WRK_SCRIPT=()
    WRK_SCRIPT_ARGS=()
    case $1 in
        rr) ;;
        cookie)
            WRK_SCRIPT=(-s "$LOAD_DIR/cookie.lua")
            WRK_SCRIPT_ARGS=(-- "$(bench_cookie "$2")")
            ;;
        hash) WRK_SCRIPT=(-s "$LOAD_DIR/hash.lua") ;;
        # Every gateway scenario sends the same request head (an X-User and an HS256 Bearer
        # token; jwt-rs256 its RS256 token instead), so that rr-bearer, which sends it to the
        # plain /rr route, is the baseline of each: the difference is the stage, not the head.
        rl-* | jwt-hs256 | rr-bearer) WRK_SCRIPT=(-H "X-User: bench-user" -H "Authorization: Bearer ${TOKEN[jwt-hs256]}") ;;
        jwt-rs256) WRK_SCRIPT=(-H "X-User: bench-user" -H "Authorization: Bearer ${TOKEN[jwt-rs256]}") ;;
        jwt-hs256-new)
            WRK_SCRIPT=(-s "$LOAD_DIR/tokens.lua")
            WRK_SCRIPT_ARGS=(-- "$TMP/gateway/hs256-tokens.txt")
            ;;
    esac
}

to_ms() { # "1.23ms" | "812.00us" | "1.01s" → milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", "?" }'
}

# Results of every measured run, keyed "candidate/scenario/run"; the table shows, per candidate
# and scenario, the run with the median req/s.
declare -A RPS P50 P99 CPUREQ CPUPCT ERRS CHECK
RAW=$TMP/raw.md
: >"$RAW"

measure() { # CANDIDATE SCENARIO RUN
    local proxy=$1 scen=$2 run=$3 port=${PROXY_PORT[$1]} pid=${PROXY_PID[$1]}
    local key="$1/$2/$3" url="http://127.0.0.1:${PROXY_PORT[$1]}/$2" out
    wrk_args "$scen" "$port"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${WRK_SCRIPT[@]}" "$url" "${WRK_SCRIPT_ARGS[@]}" >/dev/null
    out=$TMP/wrk-$proxy-$scen-$run.txt
    log "run $run/$RUNS $proxy $scen: wrk -t1 -c$CONNS -d${DURATION}s --latency ${WRK_SCRIPT[*]} $url ${WRK_SCRIPT_ARGS[*]}"
    local t0 t1 w0 w1 perf_pid=
    if [[ -n ${PERF_RECORD:-} ]]; then
        taskset -c "$CLIENT_CPU" perf record -q -F 2999 -g -p "$pid" -o "$TMP/perf-$proxy-$scen-$run.data" \
            -- sleep "$DURATION" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    t0=$(cpu_ticks "$pid")
    w0=$(date +%s.%N)
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${WRK_SCRIPT[@]}" "$url" "${WRK_SCRIPT_ARGS[@]}" >"$out"
    w1=$(date +%s.%N)
    t1=$(cpu_ticks "$pid")
    [[ -z $perf_pid ]] || wait "$perf_pid" || true

    local reqs rps p50 p99 errs
    reqs=$(awk '/ requests in /{print $1; exit}' "$out")
    rps=$(awk '/^Requests\/sec:/{print $2; exit}' "$out")
    p50=$(to_ms "$(awk '/Latency Distribution/{d=1} d && $1=="50%"{print $2; exit}' "$out")")
    p99=$(to_ms "$(awk '/Latency Distribution/{d=1} d && $1=="99%"{print $2; exit}' "$out")")
    errs=$(awk '/Non-2xx or 3xx responses:/{n+=$NF}
                /Socket errors:/{gsub(/,/,""); n+=$4+$6+$8+$10}
                END{print n+0}' "$out")
    RPS[$key]=${rps:-0}
    P50[$key]=$p50
    P99[$key]=$p99
    ERRS[$key]=$errs
    CPUREQ[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", d / hz / n * 1e6; else print "?" }')
    CPUPCT[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" \
        'BEGIN { printf "%.0f", d / hz / (b - a) * 100 }')
    log "run $run/$RUNS $proxy $scen: ${RPS[$key]} req/s, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms, ${CPUREQ[$key]} µs CPU/req (${CPUPCT[$key]}% CPU), errors $errs"
    {
        printf '### %s / %s, run %s\n\n```\n' "$proxy" "$scen" "$run"
        cat "$out"
        printf '```\n\n'
    } >>"$RAW"
}

# ---------------------------------------------------------------------------------------------
# Candidates. Each: render config, validate, start pinned to PROXY_CPU. All run side by side (an
# idle proxy costs nothing), so that the measured runs can be interleaved: round after round,
# every candidate in turn, which spreads drifting background load over all of them.
declare -A VERSION SKIPPED NOTE PROXY_PID PROXY_PORT
VERSION[haproxy]=$("$HAPROXY" -v 2>&1 | sed -n 1p)
VERSION[nginx]=$("$NGINX" -v 2>&1 | sed -n 1p)
VERSION[wrk]=$(wrk --version 2>&1 | sed -n 1p || true)
NOTE[nginx]="cookie scenario: \`hash \$cookie_bench_sid consistent\` (NGINX OSS has no cookie insert)"

skip() { # CANDIDATE REASON
    SKIPPED[$1]=$2
    log "$1: SKIPPED — $2"
}

start_proxy() { # CANDIDATE
    local proxy=$1
    PREFIX=$TMP/$proxy
    mkdir -p "$PREFIX"
    case $proxy in
        haproxy)
            PORT=$HAPROXY_PORT
            render "$LOAD_DIR/haproxy.cfg" "$PREFIX/haproxy.cfg"
            "$HAPROXY" -c -q -f "$PREFIX/haproxy.cfg" || die "haproxy config check failed"
            start_bg haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$PREFIX/haproxy.cfg"
            ;;
        nginx)
            PORT=$NGINX_PORT
            render "$LOAD_DIR/nginx-proxy.conf" "$PREFIX/nginx.conf"
            "$NGINX" -q -t -p "$PREFIX/" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log" ||
                die "nginx config check failed"
            start_bg nginx "$PROXY_CPU" "$NGINX" -p "$PREFIX/" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log"
            ;;
        floor-tokio)
            PORT=$FLOOR_TOKIO_PORT
            if [[ ! -x $FLOOR_TOKIO_BIN ]]; then
                skip floor-tokio "binary $FLOOR_TOKIO_BIN not found (cargo build --release --example floor-tokio, or set FLOOR_TOKIO_BIN)"
                return 0
            fi
            VERSION[floor-tokio]="benches/floor_tokio.rs ($FLOOR_TOKIO_BIN, built $(date -r "$FLOOR_TOKIO_BIN" '+%F %T'))"
            start_bg floor-tokio "$PROXY_CPU" "$FLOOR_TOKIO_BIN" "127.0.0.1:$PORT" \
                "127.0.0.1:$B1_PORT" "127.0.0.1:$B2_PORT" "127.0.0.1:$B3_PORT" "127.0.0.1:$B4_PORT"
            ;;
        tether)
            PORT=$TETHER_PORT ADMIN_PORT=$TETHER_ADMIN_PORT
            if [[ ! -x $TETHER_BIN ]]; then
                skip "$proxy" "binary $TETHER_BIN not found (cargo build --release --locked, or set TETHER_BIN)"
                return 0
            fi
            VERSION[tether]="$("$TETHER_BIN" --version 2>&1 | sed -n 1p || true) ($TETHER_BIN, built $(date -r "$TETHER_BIN" '+%F %T'))"
            render "$LOAD_DIR/tether.toml" "$PREFIX/tether.toml"
            if ((GATEWAY)); then
                render "$LOAD_DIR/tether-gateway.toml" "$PREFIX/gateway.toml"
                cat "$PREFIX/gateway.toml" >>"$PREFIX/tether.toml"
            fi
            if ! "$TETHER_BIN" check -c "$PREFIX/tether.toml" >"$PREFIX/check.log" 2>&1; then
                cat "$PREFIX/check.log" >&2
                skip "$proxy" "\`tether check\` rejected benches/load/tether.toml (errors above)"
                return 0
            fi
            start_bg "$proxy" "$PROXY_CPU" env RUST_LOG=info "$TETHER_BIN" run -c "$PREFIX/tether.toml"
            ;;
    esac
    PROXY_PID[$proxy]=$STARTED_PID
    PROXY_PORT[$proxy]=$PORT
    wait_http "$proxy" "$STARTED_PID" "http://127.0.0.1:$PORT/rr"
    log "$proxy up on 127.0.0.1:$PORT (pid $STARTED_PID, CPU $PROXY_CPU)"
}

# Gateway scenarios: keys, tokens and a Redis for the stages of benches/load/tether-gateway.toml.
declare -A TOKEN
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
gateway_setup() {
    local gw=$TMP/gateway head payload
    mkdir -p "$gw"
    need_tools openssl redis-server
    head -c 32 /dev/urandom | base64 -w0 >"$gw/hs256.secret"
    openssl genrsa -out "$gw/rs256.pem" 2048 2>/dev/null
    openssl rsa -in "$gw/rs256.pem" -pubout -out "$gw/rs256.pub.pem" 2>/dev/null
    payload=$(printf '{"sub":"bench-user","exp":%d}' $(($(date +%s) + 31536000)) | b64url)
    head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
    TOKEN[jwt-hs256]="$head.$payload.$(printf '%s' "$head.$payload" |
        openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$gw/hs256.secret")" -binary | b64url)"
    need_tools python3
    python3 - "$gw/hs256.secret" "$gw/hs256-tokens.txt" <<'PY'
import base64, hmac, hashlib, json, sys, time
secret = open(sys.argv[1], "rb").read()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(b'{"alg":"HS256","typ":"JWT"}')
exp = int(time.time()) + 31536000
with open(sys.argv[2], "w") as out:
    for i in range(4096):
        msg = head + "." + b64(json.dumps({"sub": "user-%04d" % i, "exp": exp}, separators=(",", ":")).encode())
        out.write(msg + "." + b64(hmac.new(secret, msg.encode(), hashlib.sha256).digest()) + "\n")
PY
    head=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
    TOKEN[jwt-rs256]="$head.$payload.$(printf '%s' "$head.$payload" |
        openssl dgst -sha256 -sign "$gw/rs256.pem" -binary | b64url)"
    start_bg redis "$CLIENT_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$gw"
    local i
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    VERSION[redis]=$(redis-server --version | sed -n 1p)
    log "gateway: HS256 and RS256 tokens, redis on 127.0.0.1:$REDIS_PORT (CPU $CLIENT_CPU)"
}
((GATEWAY)) && gateway_setup

ACTIVE=()
for p in "${PROXIES[@]}"; do
    start_proxy "$p"
    [[ -n ${SKIPPED[$p]:-} ]] || ACTIVE+=("$p")
done
((${#ACTIVE[@]})) || die "no candidate could be started"
for p in "${ACTIVE[@]}"; do
    for s in "${SCENS[@]}"; do
        if applies "$p" "$s"; then
            CHECK[$p/$s]=$(check_scenario "${PROXY_PORT[$p]}" "$s")
        else
            CHECK[$p/$s]="n/a"
        fi
        log "$p $s: check ${CHECK[$p/$s]}"
    done
done
for ((run = 1; run <= RUNS; run++)); do
    for s in "${SCENS[@]}"; do
        for p in "${ACTIVE[@]}"; do
            if applies "$p" "$s"; then measure "$p" "$s" "$run"; fi
        done
    done
done

# ---------------------------------------------------------------------------------------------
# Report.
HAVE_HAPROXY=0
[[ " ${ACTIVE[*]} " == *" haproxy "* ]] && HAVE_HAPROXY=1

report() {
    local p s key flagged=0 failed=0
    echo "# Load comparison — $STAMP"
    echo
    echo "- host: $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "- ${VERSION[haproxy]}; ${VERSION[nginx]}; ${VERSION[wrk]}"
    [[ -n ${VERSION[tether]:-} ]] && echo "- tether: ${VERSION[tether]}"
    [[ -n ${VERSION[floor-tokio]:-} ]] && echo "- floor-tokio: ${VERSION[floor-tokio]}: tokio + httparse, head forwarded as its own bytes + X-Forwarded-For, pooled buffers, rr only"
    echo "- $RUNS round(s), candidates interleaved; each measured run: wrk -t1 -c$CONNS -d${DURATION}s --latency after ${WARMUP}s warm-up; a row shows the run with the median req/s; proxy on CPU $PROXY_CPU, wrk and four nginx backends on CPU $CLIENT_CPU; all on 127.0.0.1"
    echo "- one worker thread per proxy, upstream keep-alive, no access logs, no health checks; 3-byte body"
    echo "- machine CPU busy before the run: ${BUSY_BEFORE}% (other load skews every number; rerun on an idle machine if high)"
    echo "- CPU/req: Δ(utime+stime) of the proxy's processes over the measured run ÷ requests; CPU %: of one core over the run (≈100% = the proxy was the bottleneck)"
    echo "- ×HAProxy columns: each round's value ÷ HAProxy's in the same round and scenario, median over the $RUNS round(s) (CPU/req and p99: lower is better; req/s: higher is better)"
    echo
    echo "| candidate | scenario | req/s$( ((RUNS > 1)) && echo " (min–max)") | p50 ms | p99 ms | CPU µs/req | CPU % | errors | CPU/req ×HAProxy | req/s ×HAProxy | p99 ×HAProxy | check |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for s in "${SCENS[@]}"; do
        for p in "${PROXIES[@]}"; do
            if [[ -n ${SKIPPED[$p]:-} ]]; then
                echo "| $p | $s | skipped ² | | | | | | | | | |"
                continue
            fi
            if ! applies "$p" "$s"; then
                echo "| $p | $s | n/a | | | | | | | | | round robin only |"
                continue
            fi
            key=$p/$s/$(median_run "$p/$s")
            local range="" rcpu="" rrps="" rp99=""
            if ((RUNS > 1)); then
                range=$(for ((r = 1; r <= RUNS; r++)); do echo "${RPS[$p/$s/$r]}"; done |
                    sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf " (%.0f–%.0f)", lo, hi }')
            fi
            if ((HAVE_HAPROXY)); then
                rcpu=$(ratio_median CPUREQ "$p" "$s")
                rrps=$(ratio_median RPS "$p" "$s")
                rp99=$(ratio_median P99 "$p" "$s")
            fi
            local label=$s
            [[ $p == nginx && $s == cookie ]] && label="cookie ¹"
            local pct=${CPUPCT[$key]}
            if ((pct < 90)); then pct="$pct ⚠"; flagged=1; fi
            local errs=0 r
            for ((r = 1; r <= RUNS; r++)); do errs=$((errs + ${ERRS[$p/$s/$r]:-0})); done
            [[ ${CHECK[$p/$s]} == ok* ]] || failed=1
            echo "| $p | $label | ${RPS[$key]}$range | ${P50[$key]} | ${P99[$key]} | ${CPUREQ[$key]} | $pct | $errs | $rcpu | $rrps | $rp99 | ${CHECK[$p/$s]} |"
        done
    done
    echo
    echo "errors: non-2xx responses + socket errors, summed over all $RUNS measured run(s)."
    echo
    if ((GATEWAY)) && [[ " ${SCENS[*]} " == *" rr "* || " ${SCENS[*]} " == *" rr-bearer "* ]]; then
        local base=rr
        [[ " ${SCENS[*]} " == *" rr-bearer "* ]] && base=rr-bearer
        echo "Gateway stage cost: CPU µs/req of the scenario minus that of the baseline (rr-bearer — the same request head to the plain /rr route — when measured, else rr), same candidate and round, median over the $RUNS round(s) (${VERSION[redis]:-})"
        echo
        echo "| candidate | stage | baseline | +CPU µs/req (median) | per round |"
        echo "|---|---|---|---:|---|"
        for s in "${SCENS[@]}"; do
            [[ $s == rl-* || $s == jwt-* || $s == rr-bearer ]] || continue
            local b=$base
            if [[ $s == rr-bearer ]]; then
                [[ " ${SCENS[*]} " == *" rr "* ]] || continue
                b=rr
            fi
            for p in "${PROXIES[@]}"; do
                [[ $p == tether && -z ${SKIPPED[$p]:-} ]] || continue
                local deltas
                deltas=$(for ((r = 1; r <= RUNS; r++)); do
                    awk -v a="${CPUREQ[$p/$s/$r]}" -v b="${CPUREQ[$p/$b/$r]}" 'BEGIN { printf "%.2f\n", a - b }'
                done)
                echo "| $p | $s | $b | $(sort -g <<<"$deltas" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }') | $(tr '\n' ' ' <<<"$deltas") |"
            done
        done
        echo
    fi
    if [[ " ${PROXIES[*]} " == *" nginx "* && " ${SCENS[*]} " == *" cookie "* ]]; then
        echo "¹ ${NOTE[nginx]}."
        echo
    fi
    if ((flagged)); then
        echo "⚠ proxy below 90% of its core: it was not the bottleneck (the client core, or other load on the machine, was), so req/s and latency understate it; CPU µs/req still holds roughly."
        echo
    fi
    if ((failed)); then
        echo "A functional check FAILED: that row's numbers do not measure what the scenario claims."
        echo
    fi
    for p in "${PROXIES[@]}"; do
        [[ -n ${SKIPPED[$p]:-} ]] && echo "² $p skipped: ${SKIPPED[$p]}." && echo
    done
    echo "Configs: benches/load/ (haproxy.cfg, nginx-proxy.conf, tether.toml, backend.nginx.conf, cookie.lua, hash.lua); floor-tokio: benches/floor_tokio.rs."
    echo
    echo "<details><summary>raw wrk output</summary>"
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

# ---------------------------------------------------------------------------------------------
# H2=1: the HTTP/2 comparison, with this script's processes stopped first (no shared cores).
if [[ ${H2:-0} == 1 ]]; then
    h2_only=""
    for p in "${PROXIES[@]}"; do
        case $p in
            haproxy) h2_only+=,haproxy ;;
            floor-tokio) h2_only+=,floor-h2 ;;
            tether) h2_only+=,tether ;;
        esac
    done
    h2_only=${h2_only#,}
    [[ -n $h2_only ]] || die "H2=1: none of ${PROXIES[*]} has an HTTP/2 counterpart (haproxy, floor-tokio, tether)"
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
    read -ra h2_args <<<"${H2_ARGS:-}"
    log "H2=1: benches/h2load.sh --only $h2_only ${h2_args[*]}"
    DURATION=$DURATION WARMUP=$WARMUP RUNS=$RUNS PROXY_CPU=$PROXY_CPU CLIENT_CPU=$CLIENT_CPU \
        TETHER_BIN=$TETHER_BIN CLIENTS=${CLIENTS:-$CONNS} KEEP_TMP=${KEEP_TMP:-0} \
        "$ROOT/benches/h2load.sh" --only "$h2_only" "${h2_args[@]}"
fi
