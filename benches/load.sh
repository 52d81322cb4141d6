#!/usr/bin/env bash
# Load comparison: tether vs HAProxy vs NGINX (DESIGN.md §10), one worker thread each, the same two
# backends, wrk as the client.
#
#   benches/load.sh [--only tether,haproxy,nginx] [--scenarios rr,cookie,hash] [--out FILE]
#
# Environment:
#   DURATION=15   seconds of each measured wrk run      WARMUP=3   seconds of warm-up before it
#   CONNS=50      wrk connections (one wrk thread)      TETHER_BIN=target/release/tether
#   RUNS=3        measured runs per proxy × scenario, interleaved across proxies; the table shows
#                 the median run (by req/s) and the min–max range: one run varies ±20% here
#   PROXY_CPU=0   CPU the proxy is pinned to            CLIENT_CPU=1   CPU for wrk and backends
#   KEEP_TMP=1    keep the temp dir (configs, logs, raw wrk output) for inspection
#   Ports (127.0.0.1): backends 19001 19002, haproxy 18081, nginx 18082, tether 18083 (admin 18093);
#   override with B1_PORT B2_PORT HAPROXY_PORT NGINX_PORT TETHER_PORT TETHER_ADMIN_PORT.
#
# Scenarios (the same paths on every proxy):
#   rr      GET /rr      round-robin over both backends
#   cookie  GET /cookie  affinity cookie: benches/load/cookie.lua sends back the first Set-Cookie
#                        (HAProxy "cookie ... insert", tether policy "cookie"); NGINX OSS cannot
#                        insert a cookie, so it hashes a client cookie (hash $cookie_bench_sid
#                        consistent) instead — marked in the table
#   hash    GET /hash    consistent hash of "X-User: user-<random>" (benches/load/hash.lua)
#
# All proxies run side by side (idle ones cost nothing). Per proxy × scenario: a functional check
# with curl (round-robin alternates, the cookie/hash key sticks); then RUNS rounds, each measuring
# every scenario on every proxy in turn: WARMUP s of wrk, then
# `wrk -t1 -c$CONNS -d${DURATION}s --latency`.
# Proxy CPU time per request = Δ(utime+stime) of the proxy's processes over the measured run
# (from /proc/<pid>/stat, all threads and, for nginx, master + worker) ÷ requests completed.
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
TETHER_BIN=${TETHER_BIN:-target/release/tether}
case $TETHER_BIN in /*) ;; *) TETHER_BIN=$ROOT/$TETHER_BIN ;; esac
B1_PORT=${B1_PORT:-19001}
B2_PORT=${B2_PORT:-19002}
HAPROXY_PORT=${HAPROXY_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
TETHER_PORT=${TETHER_PORT:-18083}
TETHER_ADMIN_PORT=${TETHER_ADMIN_PORT:-18093}

ONLY=haproxy,nginx,tether
SCENARIOS=rr,cookie,hash
OUT=

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
IFS=, read -ra PROXIES <<<"$ONLY"
IFS=, read -ra SCENS <<<"$SCENARIOS"
for p in "${PROXIES[@]}"; do
    case $p in tether | haproxy | nginx) ;; *) echo "unknown proxy '$p' (tether, haproxy, nginx)" >&2; exit 2 ;; esac
done
for s in "${SCENS[@]}"; do
    case $s in rr | cookie | hash) ;; *) echo "unknown scenario '$s' (rr, cookie, hash)" >&2; exit 2 ;; esac
done
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-$ROOT/benches/results-$STAMP.md}

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools (Debian packages).
missing=()
for tool in wrk haproxy nginx curl taskset; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        pkgs=()
        for t in "${missing[@]}"; do
            case $t in taskset) pkgs+=(util-linux) ;; *) pkgs+=("$t") ;; esac
        done
        log "installing ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2
    else
        die "missing ${missing[*]}: apt-get install -y wrk haproxy nginx curl util-linux"
    fi
fi
HAPROXY=$(command -v haproxy)
NGINX=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)
# Every process gets as many descriptors as the hard limit allows (a proxy needs ~2 per connection).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# Processes: everything started goes into PIDS and is stopped on exit.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tether-load.XXXXXX")
PIDS=()

# The PID and all its descendants (nginx master → worker), children first.
descendants() {
    local pid=$1 child
    if [[ -r /proc/$pid/task/$pid/children ]]; then
        for child in $(<"/proc/$pid/task/$pid/children"); do
            descendants "$child"
        done
    fi
    echo "$pid"
}

stop_pid() {
    local pid=$1 all i p
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    all=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # Anything left (including a worker whose master is gone) is killed by its own PID.
    for p in $all; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_bg NAME CPU CMD...: run CMD pinned to CPU, output to $TMP/NAME.log; sets STARTED_PID.
start_bg() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# wait_http NAME PID URL: until URL answers with any HTTP status (10 s), or the process dies.
wait_http() {
    local name=$1 pid=$2 url=$3 i code
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$TMP/$name.log" >&2 || true
            die "$name exited during start-up (log above)"
        fi
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)
        [[ $code != 000 && -n $code ]] && return 0
        sleep 0.1
    done
    tail -n 20 "$TMP/$name.log" >&2 || true
    die "$name did not answer on $url within 10 s"
}

# render TEMPLATE OUT: fill the @...@ placeholders.
render() {
    sed -e "s#@B1@#127.0.0.1:$B1_PORT#g" -e "s#@B2@#127.0.0.1:$B2_PORT#g" \
        -e "s#@LISTEN@#127.0.0.1:$PORT#g" -e "s#@ADMIN@#127.0.0.1:$TETHER_ADMIN_PORT#g" \
        -e "s#@PREFIX@#$PREFIX#g" -e "s#@PORT@#$PORT#g" -e "s#@BODY@#${BODY:-}#g" \
        "$1" >"$2"
}

# CPU ticks (utime+stime) of the given PIDs and their descendants.
cpu_ticks() {
    local total=0 pid p stat
    local -a f
    for pid in "$@"; do
        for p in $(descendants "$pid"); do
            stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
            stat=${stat##*) }
            read -ra f <<<"$stat"
            total=$((total + f[11] + f[12]))
        done
    done
    echo "$total"
}

# Share of all CPUs busy over one second (from /proc/stat): other load skews every number here.
cpu_busy_pct() {
    local -a a b
    local idle total=0 k
    read -ra a </proc/stat
    sleep 1
    read -ra b </proc/stat
    idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    for k in 1 2 3 4 5 6 7 8; do total=$((total + b[k] - a[k])); done
    echo $((total > 0 ? 100 - 100 * idle / total : 0))
}
BUSY_BEFORE=$(cpu_busy_pct)
if ((BUSY_BEFORE > 10)); then
    log "warning: the machine is ${BUSY_BEFORE}% busy before the benchmark; results will be noisy"
fi

# ---------------------------------------------------------------------------------------------
# Backends: two nginx instances on CLIENT_CPU, body "b1\n" / "b2\n" (3 bytes each).
for port in "$B1_PORT" "$B2_PORT" "$HAPROXY_PORT" "$NGINX_PORT" "$TETHER_PORT" "$TETHER_ADMIN_PORT"; do
    port_busy "$port" && die "port $port on 127.0.0.1 is already in use"
done
n=0
for port in "$B1_PORT" "$B2_PORT"; do
    n=$((n + 1))
    PREFIX=$TMP/backend$n PORT=$port BODY=b$n
    mkdir -p "$PREFIX"
    render "$LOAD_DIR/backend.nginx.conf" "$PREFIX/nginx.conf"
    start_bg "backend$n" "$CLIENT_CPU" "$NGINX" -p "$PREFIX/" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log"
    wait_http "backend$n" "$STARTED_PID" "http://127.0.0.1:$port/"
done
unset BODY
log "backends up on 127.0.0.1:$B1_PORT and :$B2_PORT (CPU $CLIENT_CPU)"

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

check_scenario() { # PORT SCENARIO → prints a short verdict
    local port=$1 scen=$2 url="http://127.0.0.1:$1/$2" seen="" b i first jar cookie
    case $scen in
        rr)
            for i in 1 2 3 4 5 6; do seen+="$(body "$url")"; done
            [[ $seen == *b1* && $seen == *b2* ]] && echo "ok: alternates" || echo "FAIL: rr saw '$seen'"
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
        hash)
            local all="" bad=0
            for i in $(seq 1 20); do
                first=$(body -H "X-User: user-$i" "$url")
                b=$(body -H "X-User: user-$i" "$url")
                [[ -n $first && $first == "$b" ]] || bad=$((bad + 1))
                all+=$first
            done
            if ((bad)); then
                echo "FAIL: $bad of 20 keys moved"
            elif [[ $all == *b1* && $all == *b2* ]]; then
                echo "ok: keys stick, both used"
            else
                echo "FAIL: one backend only"
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

# Results of every measured run, keyed "proxy/scenario/run"; the table shows, per proxy and
# scenario, the run with the median req/s.
declare -A RPS P50 P99 CPUREQ CPUPCT ERRS CHECK
RAW=$TMP/raw.md
: >"$RAW"

measure() { # PROXY SCENARIO RUN
    local proxy=$1 scen=$2 run=$3 port=${PROXY_PORT[$1]} pid=${PROXY_PID[$1]}
    local key="$1/$2/$3" url="http://127.0.0.1:${PROXY_PORT[$1]}/$2" out
    wrk_args "$scen" "$port"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${WRK_SCRIPT[@]}" "$url" "${WRK_SCRIPT_ARGS[@]}" >/dev/null
    out=$TMP/wrk-$proxy-$scen-$run.txt
    log "run $run/$RUNS $proxy $scen: wrk -t1 -c$CONNS -d${DURATION}s --latency ${WRK_SCRIPT[*]} $url ${WRK_SCRIPT_ARGS[*]}"
    local t0 t1 w0 w1
    t0=$(cpu_ticks "$pid")
    w0=$(date +%s.%N)
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${WRK_SCRIPT[@]}" "$url" "${WRK_SCRIPT_ARGS[@]}" >"$out"
    w1=$(date +%s.%N)
    t1=$(cpu_ticks "$pid")

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

# The run (1..RUNS) with the median req/s for PROXY/SCENARIO.
median_run() {
    local r
    for ((r = 1; r <= RUNS; r++)); do echo "${RPS[$1/$r]} $r"; done |
        sort -g | awk '{ runs[NR] = $2 } END { print runs[int((NR + 1) / 2)] }'
}

# ---------------------------------------------------------------------------------------------
# Proxies. Each: render config, validate, start pinned to PROXY_CPU. All run side by side (an
# idle proxy costs nothing), so that the measured runs can be interleaved: round after round,
# every proxy in turn, which spreads drifting background load over all of them.
declare -A VERSION SKIPPED NOTE PROXY_PID PROXY_PORT
VERSION[haproxy]=$("$HAPROXY" -v 2>&1 | head -n1)
VERSION[nginx]=$("$NGINX" -v 2>&1 | head -n1)
VERSION[wrk]=$(wrk --version 2>&1 | head -n1 || true)
NOTE[nginx]="cookie scenario: \`hash \$cookie_bench_sid consistent\` (NGINX OSS has no cookie insert)"

start_proxy() { # PROXY
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
        tether)
            PORT=$TETHER_PORT
            if [[ ! -x $TETHER_BIN ]]; then
                SKIPPED[tether]="binary $TETHER_BIN not found (cargo build --release, or set TETHER_BIN)"
                log "tether: SKIPPED — ${SKIPPED[tether]}"
                return 0
            fi
            VERSION[tether]=$("$TETHER_BIN" --version 2>&1 | head -n1 || true)
            render "$LOAD_DIR/tether.toml" "$PREFIX/tether.toml"
            if ! "$TETHER_BIN" check -c "$PREFIX/tether.toml" >"$PREFIX/check.log" 2>&1; then
                cat "$PREFIX/check.log" >&2
                SKIPPED[tether]="\`tether check\` rejected benches/load/tether.toml (errors above)"
                log "tether: SKIPPED — ${SKIPPED[tether]}"
                return 0
            fi
            start_bg tether "$PROXY_CPU" "$TETHER_BIN" run -c "$PREFIX/tether.toml"
            ;;
    esac
    PROXY_PID[$proxy]=$STARTED_PID
    PROXY_PORT[$proxy]=$PORT
    wait_http "$proxy" "$STARTED_PID" "http://127.0.0.1:$PORT/rr"
    log "$proxy up on 127.0.0.1:$PORT (pid $STARTED_PID, CPU $PROXY_CPU)"
}

ACTIVE=()
for p in "${PROXIES[@]}"; do
    start_proxy "$p"
    [[ -n ${SKIPPED[$p]:-} ]] || ACTIVE+=("$p")
done
for p in "${ACTIVE[@]}"; do
    for s in "${SCENS[@]}"; do
        CHECK[$p/$s]=$(check_scenario "${PROXY_PORT[$p]}" "$s")
        log "$p $s: check ${CHECK[$p/$s]}"
    done
done
for ((run = 1; run <= RUNS; run++)); do
    for s in "${SCENS[@]}"; do
        for p in "${ACTIVE[@]}"; do measure "$p" "$s" "$run"; done
    done
done

# ---------------------------------------------------------------------------------------------
# Report.
report() {
    local p s key rel flagged=0
    echo "# Load comparison — $STAMP"
    echo
    echo "- host: $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "- ${VERSION[haproxy]}; ${VERSION[nginx]}; ${VERSION[wrk]}"
    [[ -n ${VERSION[tether]:-} ]] && echo "- tether: ${VERSION[tether]} ($TETHER_BIN)"
    echo "- $RUNS round(s), proxies interleaved; each measured run: wrk -t1 -c$CONNS -d${DURATION}s --latency after ${WARMUP}s warm-up; a row shows the run with the median req/s; proxy on CPU $PROXY_CPU, wrk and two nginx backends on CPU $CLIENT_CPU; all on 127.0.0.1"
    echo "- one worker thread per proxy, upstream keep-alive, no access logs, no health checks; 3-byte body"
    echo "- machine CPU busy before the run: ${BUSY_BEFORE}% (other load skews every number; rerun on an idle machine if high)"
    echo "- CPU/req: Δ(utime+stime) of the proxy's processes over the measured run ÷ requests; CPU %: of one core over the run (≈100% = the proxy was the bottleneck)"
    echo
    echo "| proxy | scenario | req/s$( ((RUNS > 1)) && echo " (min–max)") | vs HAProxy | p50 ms | p99 ms | proxy CPU µs/req | proxy CPU % | errors | check |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for s in "${SCENS[@]}"; do
        for p in "${PROXIES[@]}"; do
            key=$p/$s
            if [[ -n ${SKIPPED[$p]:-} ]]; then
                echo "| $p | $s | skipped ² | | | | | | | |"
                continue
            fi
            key=$p/$s/$(median_run "$p/$s")
            rel=""
            if [[ -n ${RPS[haproxy/$s/1]:-} ]]; then
                local hkey=haproxy/$s/$(median_run "haproxy/$s")
                rel=$(awk -v a="${RPS[$key]}" -v b="${RPS[$hkey]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b }')
            fi
            local range=""
            if ((RUNS > 1)); then
                range=$(for ((r = 1; r <= RUNS; r++)); do echo "${RPS[$p/$s/$r]}"; done |
                    sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf " (%.0f–%.0f)", lo, hi }')
            fi
            local label=$s
            [[ $p == nginx && $s == cookie ]] && label="cookie ¹"
            local pct=${CPUPCT[$key]}
            if ((pct < 90)); then pct="$pct ⚠"; flagged=1; fi
            echo "| $p | $label | ${RPS[$key]}$range | $rel | ${P50[$key]} | ${P99[$key]} | ${CPUREQ[$key]} | $pct | ${ERRS[$key]} | ${CHECK[$p/$s]} |"
        done
    done
    echo
    if [[ " ${PROXIES[*]} " == *" nginx "* && " ${SCENS[*]} " == *" cookie "* ]]; then
        echo "¹ ${NOTE[nginx]}."
        echo
    fi
    if ((flagged)); then
        echo "⚠ proxy below 90% of its core: it was not the bottleneck (the client core, or other load on the machine, was), so req/s and latency understate it; CPU µs/req still holds roughly."
        echo
    fi
    for p in "${PROXIES[@]}"; do
        [[ -n ${SKIPPED[$p]:-} ]] && echo "² $p skipped: ${SKIPPED[$p]}." && echo
    done
    echo "Configs: benches/load/ (haproxy.cfg, nginx-proxy.conf, tether.toml, backend.nginx.conf, cookie.lua, hash.lua)."
    echo
    echo "<details><summary>raw wrk output</summary>"
    echo
    cat "$RAW"
    echo "</details>"
}
report >"$OUT"
echo
sed -n '/^| proxy/,/^$/p' "$OUT"
[[ -n ${SKIPPED[tether]:-} ]] && echo "tether: skipped — ${SKIPPED[tether]}"
log "report written to $OUT"
