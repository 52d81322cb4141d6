# shellcheck shell=bash
# Shared helpers of benches/load.sh, benches/h2load.sh, benches/idle.sh and benches/reload_load.sh
# (sourced, not run).
#
#   LOG_TAG=name; source benches/load/lib.sh; lib_init
#
# lib_init makes $TMP (a fresh temp dir) and installs the EXIT/INT/TERM traps: every process
# started with start_bg (or added to PIDS) is stopped on exit, by its PID and then its
# descendants' PIDs; $TMP is removed unless KEEP_TMP=1.

log() { printf '[%s] %s\n' "${LOG_TAG:-bench}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

lib_init() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/tether-${LOG_TAG:-bench}.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    # Every process gets as many descriptors as the hard limit allows (a proxy needs ~2 per
    # connection).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

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
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
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

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_bg NAME CPU CMD...: run CMD pinned to CPU, output to $TMP/NAME.log; sets STARTED_PID.
start_bg() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# wait_http NAME PID URL [CURL_OPTION...]: until URL answers with any HTTP status (10 s), or the
# process dies.
wait_http() {
    local name=$1 pid=$2 url=$3 i code
    shift 3
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$TMP/$name.log" >&2 || true
            die "$name exited during start-up (log above)"
        fi
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$@" "$url" || true)
        [[ $code != 000 && -n $code ]] && return 0
        sleep 0.1
    done
    tail -n 20 "$TMP/$name.log" >&2 || true
    die "$name did not answer on $url within 10 s"
}

# rss_kib PID...: VmRSS (KiB) summed over the PIDs and all their descendants.
rss_kib() {
    local total=0 pid p v
    for pid in "$@"; do
        for p in $(descendants "$pid"); do
            v=$(awk '/^VmRSS:/{print $2; exit}' "/proc/$p/status" 2>/dev/null || true)
            total=$((total + ${v:-0}))
        done
    done
    echo "$total"
}

# The tether engine a tether process logged at start-up ("fast", "pingora" or "?"): needs
# RUST_LOG to enable tether::app=debug (load.sh and idle.sh set "info,tether::app=debug").
logged_engine() { # LOGFILE
    local e
    e=$(grep -a 'HTTP/1.1 engine' "$1" 2>/dev/null | grep -ao 'engine="\{0,1\}[a-z]*' | head -n1 |
        sed 's/^engine="\{0,1\}//' || true)
    echo "${e:-?}"
}

# Tools (Debian packages): installs what is missing when root, else stops with the apt line.
need_tools() { # TOOL...
    local missing=() t pkgs=()
    for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
    ((${#missing[@]})) || return 0
    for t in "${missing[@]}"; do
        case $t in taskset) pkgs+=(util-linux) ;; python3) pkgs+=(python3) ;; *) pkgs+=("$t") ;; esac
    done
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2
    else
        die "missing ${missing[*]}: apt-get install -y ${pkgs[*]}"
    fi
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

# Results of measured runs live in associative arrays keyed "candidate/scenario/run" (RPS holds
# req/s); RUNS is the number of rounds (load.sh, h2load.sh).
# median_run CANDIDATE/SCENARIO: the run (1..RUNS) with the median req/s.
median_run() {
    local r
    for ((r = 1; r <= RUNS; r++)); do echo "${RPS[$1/$r]} $r"; done |
        sort -g | awk '{ runs[NR] = $2 } END { print runs[int((NR + 1) / 2)] }'
}

# ratio_median ARRAY CANDIDATE SCENARIO: the median over rounds of ARRAY[cand/scen/r] ÷
# ARRAY[haproxy/scen/r], each round's ratio taken within that round ("" without HAProxy).
ratio_median() {
    local -n arr=$1
    local cand=$2 scen=$3 r a b
    for ((r = 1; r <= RUNS; r++)); do
        a=${arr[$cand/$scen/$r]:-}
        b=${arr[haproxy/$scen/$r]:-}
        [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] || continue
        awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.6f\n", a / b }'
    done | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.2f×", m }'
}
