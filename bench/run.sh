#!/usr/bin/env bash
# bench/run.sh: a first, rough throughput/latency benchmark of slate on loopback.
#
# Starts, each on a free 127.0.0.1 port:
#   ceiling      slate demo-origin --delay 0ms   (a bare hyper server answering the same
#                                                 bytes from memory: the performance ceiling)
#   slow origin  slate demo-origin --delay 200ms (what slate caches)
#   redis-server (no persistence, in a temp dir)
#   slate-memory [store] kind = "memory", every path cached for 1h, upstream = slow origin
#   slate-redis  [store] kind = "redis", l1 = "0" (every hit is a Redis round trip)
#   slate-pass   [[rules]] cache = false, upstream = ceiling (the pass-through/miss path)
# then drives each with wrk and prints one table. See bench/README.md.
#
# Environment:
#   SLATE_BIN   slate binary to run. When unset: `cargo build --release` and use
#               ${CARGO_TARGET_DIR:-target}/release/slate. When set: used as is, no build.
#   DURATION    length of each wrk run (default 10s)
#   THREADS     wrk threads (default 2)
#   CONNECTIONS wrk connections for the throughput runs (default 64)
#   BODY_SIZE   response body size in bytes (default 20480)
#   KEEP_TMP    1: keep the temp dir (configs, logs, raw wrk output) after the run
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-10s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
BODY_SIZE="${BODY_SIZE:-20480}"
KEEP_TMP="${KEEP_TMP:-0}"
URL_PATH="/report?id=1"
SLOW_DELAY="200ms"
START_TIMEOUT_S=30 # how long a started server may take to answer

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- prerequisites
SUDO=()
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
APT_UPDATED=0
ensure_cmd() { # ensure_cmd COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$2"
    command -v "$1" >/dev/null 2>&1 || die "$1 still not found after installing $2"
}
ensure_cmd wrk wrk
ensure_cmd redis-server redis-server
ensure_cmd redis-cli redis-tools
ensure_cmd curl curl

if [[ -z "${SLATE_BIN:-}" ]]; then
    log "cargo build --release"
    cargo build --release
    SLATE_BIN="${CARGO_TARGET_DIR:-target}/release/slate"
else
    log "using SLATE_BIN=$SLATE_BIN (no build)"
fi
[[ -x "$SLATE_BIN" ]] || die "slate binary not found or not executable: $SLATE_BIN"

# Anything else running on the machine (a build, say) skews every number below.
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo unknown)"

# ---------------------------------------------------------------- processes and cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/slate-bench.XXXXXX")"
PIDS=()
NAMES=()

cleanup() {
    local status=$? i pid waited
    trap - EXIT INT TERM
    for i in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    done
    # Give everything up to 5 s to drain and exit, then kill what is left.
    for pid in "${PIDS[@]}"; do
        waited=0
        while kill -0 "$pid" 2>/dev/null && [[ "$waited" -lt 50 ]]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid did not exit after SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$status" -ne 0 ]]; then
        # Show what the servers said: usually the reason for the failure.
        for i in "${!NAMES[@]}"; do
            if [[ -s "$TMP/${NAMES[$i]}.log" ]]; then
                printf -- '--- last lines of %s.log ---\n' "${NAMES[$i]}" >&2
                tail -n 15 "$TMP/${NAMES[$i]}.log" >&2 || true
            fi
        done
    fi
    if [[ "$KEEP_TMP" == "1" ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs COMMAND in the background, output in $TMP/NAME.log.
start() {
    local name="$1"
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    LAST_PID="$!"
}

# free_port VAR: stores in VAR a loopback port that nothing listens on and that this
# script has not handed out yet.
USED_PORTS=" "
free_port() {
    local try p
    for try in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found after $try tries"
}

# wait_http NAME PID URL: waits until URL answers 2xx, at most START_TIMEOUT_S seconds.
wait_http() {
    local name="$1" pid="$2" url="$3" i
    for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see its log below)"
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer $url within ${START_TIMEOUT_S}s"
}

wait_redis() {
    local pid="$1" port="$2" i
    for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || die "redis-server exited during startup"
        if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "redis-server did not answer PING on port $port within ${START_TIMEOUT_S}s"
}

# ---------------------------------------------------------------- origins and redis
free_port CEILING_PORT
free_port SLOW_PORT
free_port REDIS_PORT

log "starting ceiling origin (demo-origin --delay 0ms) on 127.0.0.1:$CEILING_PORT"
start ceiling "$SLATE_BIN" demo-origin --listen "127.0.0.1:$CEILING_PORT" \
    --delay 0ms --body-size "$BODY_SIZE"
wait_http ceiling "$LAST_PID" "http://127.0.0.1:$CEILING_PORT$URL_PATH"

log "starting slow origin (demo-origin --delay $SLOW_DELAY) on 127.0.0.1:$SLOW_PORT"
start slow-origin "$SLATE_BIN" demo-origin --listen "127.0.0.1:$SLOW_PORT" \
    --delay "$SLOW_DELAY" --body-size "$BODY_SIZE"
wait_http slow-origin "$LAST_PID" "http://127.0.0.1:$SLOW_PORT$URL_PATH"

log "starting redis-server on 127.0.0.1:$REDIS_PORT"
mkdir -p "$TMP/redis"
start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP/redis" \
    --save '' --appendonly no --daemonize no --loglevel warning
wait_redis "$LAST_PID" "$REDIS_PORT"

# ---------------------------------------------------------------- slate instances
# write_config NAME PROXY_PORT ADMIN_PORT UPSTREAM_URL STORE_TOML RULES_TOML
write_config() {
    cat >"$TMP/$1.toml" <<EOF
# generated by bench/run.sh
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"

[log]
level = "warn"

[upstream]
url = "$4"

[store]
$5

$6
EOF
}

# start_slate NAME UPSTREAM_URL STORE_TOML RULES_TOML: sets LAST_PORT (the proxy port).
start_slate() {
    local name="$1" port admin
    free_port port
    free_port admin
    write_config "$name" "$port" "$admin" "$2" "$3" "$4"
    if ! "$SLATE_BIN" check-config "$TMP/$name.toml" >"$TMP/$name.check.log" 2>&1; then
        cat "$TMP/$name.check.log" >&2
        die "slate check-config rejected the generated $name config ($TMP/$name.toml)"
    fi
    log "starting $name on 127.0.0.1:$port (admin $admin)"
    start "$name" "$SLATE_BIN" --config "$TMP/$name.toml"
    wait_http "$name" "$LAST_PID" "http://127.0.0.1:$admin/healthz"
    LAST_PORT="$port"
}

CACHE_ALL='[[rules]]
path = "/"
ttl = "1h"'
PASS_ALL='[[rules]]
path = "/"
cache = false'

start_slate slate-memory "http://127.0.0.1:$SLOW_PORT" 'kind = "memory"' "$CACHE_ALL"
MEMORY_URL="http://127.0.0.1:$LAST_PORT$URL_PATH"
start_slate slate-redis "http://127.0.0.1:$SLOW_PORT" \
    "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\"
l1 = \"0\"" "$CACHE_ALL"
REDIS_URL="http://127.0.0.1:$LAST_PORT$URL_PATH"
start_slate slate-pass "http://127.0.0.1:$CEILING_PORT" 'kind = "memory"' "$PASS_ALL"
PASS_URL="http://127.0.0.1:$LAST_PORT$URL_PATH"
CEILING_URL="http://127.0.0.1:$CEILING_PORT$URL_PATH"

# ---------------------------------------------------------------- warm and sanity checks
# check_response NAME URL EXPECT: one GET; checks status 200, the body size, and that the
# Cache-Status header contains EXPECT (empty: no check). Prints the Cache-Status value.
check_response() {
    local name="$1" url="$2" expect="$3" out status size cache_status
    out="$(curl -sS --max-time 10 -o "$TMP/body" -D "$TMP/headers" \
        -w '%{http_code} %{size_download}' "$url")" || die "$name: GET $url failed"
    read -r status size <<<"$out"
    cache_status="$(tr -d '\r' <"$TMP/headers" | sed -n 's/^[Cc]ache-[Ss]tatus: *//p' | head -n 1)"
    [[ "$status" == "200" ]] || die "$name: GET $url answered $status, expected 200"
    [[ "$size" == "$BODY_SIZE" ]] ||
        die "$name: GET $url returned $size body bytes, expected $BODY_SIZE"
    if [[ -n "$expect" && "$cache_status" != *"$expect"* ]]; then
        die "$name: GET $url has Cache-Status '$cache_status', expected it to contain '$expect'"
    fi
    printf '%s' "$cache_status"
}

for name in slate-memory slate-redis; do
    url="$MEMORY_URL"
    if [[ "$name" == slate-redis ]]; then url="$REDIS_URL"; fi
    # (assigned first: a failed check inside $(...) must stop the script)
    first="$(check_response "$name" "$url" "")"
    second="$(check_response "$name" "$url" "hit")"
    log "warmed $name: Cache-Status '$first', then '$second'"
done
if [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern 'slate:*' | wc -l)" -lt 1 ]]; then
    die "slate-redis cached the warm-up response, but redis holds no 'slate:*' key"
fi
pass_status="$(check_response slate-pass "$PASS_URL" "")"
log "pass-through check: Cache-Status '$pass_status'"

# ---------------------------------------------------------------- wrk runs
# run_wrk LABEL CONNECTIONS URL: runs wrk, appends one parsed result line to $TMP/results:
#   label|requests/s|p50 ms|p99 ms|errors
run_wrk() {
    local label="$1" conns="$2" url="$3" threads="$THREADS" raw
    if ((threads > conns)); then threads="$conns"; fi
    raw="$TMP/wrk-$(printf '%s' "$label" | tr -c 'a-zA-Z0-9' '_').txt"
    log "wrk -t$threads -c$conns -d$DURATION --latency $url   ($label)"
    wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 5s --latency "$url" >"$raw" 2>&1 ||
        die "wrk failed for $label: $(cat "$raw")"
    awk -v label="$label" '
        function ms(v,   n) {             # wrk prints 512.00us, 1.20ms, 1.05s, 2.00m
            n = v + 0
            if (v ~ /us$/) return n / 1000
            if (v ~ /ms$/) return n
            if (v ~ /m$/)  return n * 60000
            if (v ~ /s$/)  return n * 1000
            return n
        }
        $1 == "50%"           { p50 = ms($2) }
        $1 == "99%"           { p99 = ms($2) }
        /^Requests\/sec:/     { rps = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ {
            for (i = 3; i <= NF; i += 2) { gsub(",", "", $(i + 1)); errors += $(i + 1) }
        }
        END {
            if (rps == "" || p50 == "") { exit 1 }
            printf "%s|%.2f|%.3f|%.3f|%d\n", label, rps, p50, p99, errors
        }' "$raw" >>"$TMP/results" || die "could not parse wrk output for $label: $(cat "$raw")"
    sleep 1 # let sockets in TIME_WAIT and the servers settle between runs
}

: >"$TMP/results"
run_wrk "ceiling (origin direct)" "$CONNECTIONS" "$CEILING_URL"
run_wrk "slate memory (hit)" "$CONNECTIONS" "$MEMORY_URL"
run_wrk "slate redis l1=0 (hit)" "$CONNECTIONS" "$REDIS_URL"
run_wrk "slate pass (cache=false)" "$CONNECTIONS" "$PASS_URL"
# Miss overhead: one connection, so latency is the cost of one request, not queueing.
run_wrk "overhead: origin direct" 1 "$CEILING_URL"
run_wrk "overhead: via slate" 1 "$PASS_URL"

# The caches must still be serving hits after the runs (a run full of misses measures
# the 200 ms origin, not slate).
check_response slate-memory "$MEMORY_URL" "hit" >/dev/null
check_response slate-redis "$REDIS_URL" "hit" >/dev/null

# ---------------------------------------------------------------- report
echo
echo "slate bench: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, body $BODY_SIZE bytes," \
    "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET $URL_PATH"
echo "slate: $("$SLATE_BIN" --version 2>/dev/null || echo unknown); load average before the run: $LOAD_BEFORE"
if awk -v l="$LOAD_BEFORE" 'BEGIN { exit !(l + 0 >= 1.0) }'; then
    echo "NOTE: the machine was busy before the run (load $LOAD_BEFORE): expect noisy numbers."
fi
echo
awk -F'|' '
    NR == 1 { ceiling = $2 }
    $1 !~ /^overhead:/ {
        if (!header++) {
            printf "%-26s %12s %10s %10s %9s %7s\n", "system", "requests/s", "p50", "p99", "vs ceil", "errors"
            printf "%-26s %12s %10s %10s %9s %7s\n", "------", "----------", "---", "---", "-------", "------"
        }
        printf "%-26s %12.0f %8.3fms %8.3fms %8.2fx %7d\n", $1, $2, $3, $4, (ceiling > 0 ? $2 / ceiling : 0), $5
    }
    $1 == "overhead: origin direct" { direct = $3; direct_err = $5 }
    $1 == "overhead: via slate"     { via = $3; via_err = $5 }
    END {
        printf "\nmiss overhead (cache=false, 0 ms origin, 1 connection): p50 direct %.3fms, via slate %.3fms, %+.3fms per request\n", direct, via, via - direct
        if (direct_err + via_err > 0) printf "  (errors: direct %d, via slate %d)\n", direct_err, via_err
    }' "$TMP/results"

if awk -F'|' '$5 > 0 { bad = 1 } END { exit !bad }' "$TMP/results"; then
    echo
    echo "WARNING: some runs had errors (non-2xx responses or socket errors); see the errors column."
    echo "         Rerun with KEEP_TMP=1 to keep the raw wrk output and the server logs."
fi
