#!/usr/bin/env bash
# bench/compare.sh: slate against nginx proxy_cache, Varnish and two bare hyper ceilings,
# on loopback, in one command from a fresh clone (issue 8). See bench/README.md.
#
# Starts, each on a free 127.0.0.1 port, in front of one slow origin (`slate demo-origin`,
# 200 ms, 20 KiB body):
#   slate L1       [store] kind = "redis", l1 = "64MiB"   (hits from the in-process tier)
#   slate redis    [store] kind = "redis", l1 = "0"       (every hit is a Redis lookup)
#   slate redis, N URLs   the same instance, wrk spreading requests over SPREAD_KEYS URLs
#   slate memory   [store] kind = "memory"
#   nginx          proxy_cache + proxy_cache_lock, worker_processes auto, own prefix in $TMP
#   varnish        varnishd -F, -s malloc,256m, beresp.ttl = 1h, own workdir in $TMP
#   ceiling        slate demo-origin --delay 0ms: a bare hyper server, same bytes from memory
#   redis ceiling  examples/redis_ceiling.rs: a bare hyper server doing one Redis GET a request
#   raw ceiling    examples/raw_ceiling.rs: thread-per-core, no hyper, one write of prebuilt bytes
# warms and checks each (200, the full body, the second answer a hit), then drives each with
# wrk in interleaved rounds and reports medians; then measures the miss overhead, a cold
# stampede of concurrent identical requests, a prefix purge over many entries, and RSS.
# Prints one Markdown report and writes it to bench/out/compare-<timestamp>.md.
#
# Environment (defaults in brackets):
#   DURATION [10s]        length of each wrk run (s or m suffix, or plain seconds)
#   ROUNDS [3]            interleaved rounds; the report gives the median per system
#   THREADS [2]           wrk threads;  CONNECTIONS [64]  wrk connections (throughput runs)
#   BODY_SIZE [20480]     body size of the origins, bytes
#   STAMPEDE [1000]       concurrent identical requests of the cold-stampede test
#   PURGE_ENTRIES [100000] entries written before the prefix purge
#   SPREAD_KEYS [1000]    warmed URLs of the "slate redis, N URLs" row
#   SKIP [""]             space-separated phases to skip: stampede purge
#   WAIT_QUIET [0]        a wrk run during which processes outside the benchmark used 10% or
#                         more of the machine is done again (twice at most), after waiting
#                         for quiet; this many seconds of waiting in all, at most
#   SLATE_BIN             a prebuilt slate: no build; the two examples are then looked for
#                         in $(dirname SLATE_BIN)/examples (or REDIS_CEILING_BIN,
#                         COUNTING_ORIGIN_BIN)
#   CARGO_TARGET_DIR      where cargo builds (default target/)
#   KEEP_TMP [0]          1: keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export PATH="$PATH:/usr/sbin:/sbin"

DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
BODY_SIZE="${BODY_SIZE:-20480}"
STAMPEDE="${STAMPEDE:-1000}"
PURGE_ENTRIES="${PURGE_ENTRIES:-100000}"
SPREAD_KEYS="${SPREAD_KEYS:-1000}"
SKIP="${SKIP:-}"
WAIT_QUIET="${WAIT_QUIET:-0}"
KEEP_TMP="${KEEP_TMP:-0}"
URL_PATH="/report?id=1"
SLOW_DELAY="200ms"
STAMPEDE_DELAY_MS=1000
FILL_BODY_SIZE=1024    # body of the purge test's entries (100k x 20 KiB would be 2 GiB of Redis)
PURGE_WINDOW_S=6       # length of the hit-latency windows around the purge
START_TIMEOUT_S=60     # how long a started server may take to answer
TOOLS="$REPO/bench/compare_tools.py"
BENCH_NAME=compare     # die: "compare: error: ..."
# RUNLEVEL=1: invoke-rc.d starts no system service (nginx, varnish, redis) on install;
# this script runs its own copies on its own ports.
APT_INSTALL_ENV=(RUNLEVEL=1)

skipped() { [[ " $SKIP " == *" $1 "* ]]; }

[[ "$DURATION" =~ ^[0-9]+[sm]?$ ]] || die "DURATION must look like 10s, 2m or 10 (got '$DURATION')"
DURATION_S="$(seconds "$DURATION")"
((DURATION_S >= 1 && DURATION_S <= 600)) || die "DURATION must be between 1s and 10m"
int_in "$ROUNDS" 1 20 || die "ROUNDS must be 1..20"
int_in "$THREADS" 1 64 || die "THREADS must be 1..64"
int_in "$CONNECTIONS" "$THREADS" 10000 || die "CONNECTIONS must be THREADS..10000"
int_in "$BODY_SIZE" 64 67108864 || die "BODY_SIZE must be 64..64MiB"
int_in "$STAMPEDE" 1 10000 || die "STAMPEDE must be 1..10000"
int_in "$PURGE_ENTRIES" 2 1000000 || die "PURGE_ENTRIES must be 2..1000000"
int_in "$WAIT_QUIET" 0 3600 || die "WAIT_QUIET must be 0..3600 (seconds)"

# ---------------------------------------------------------------- prerequisites
ensure_cmd wrk wrk
ensure_servers

build_slate --bin slate --example redis_ceiling --example counting_origin --example raw_ceiling
REDIS_CEILING_BIN="${REDIS_CEILING_BIN:-$(dirname "$SLATE_BIN")/examples/redis_ceiling}"
COUNTING_ORIGIN_BIN="${COUNTING_ORIGIN_BIN:-$(dirname "$SLATE_BIN")/examples/counting_origin}"
RAW_CEILING_BIN="${RAW_CEILING_BIN:-$(dirname "$SLATE_BIN")/examples/raw_ceiling}"
for b in "$SLATE_BIN" "$REDIS_CEILING_BIN" "$COUNTING_ORIGIN_BIN"; do
    [[ -x "$b" ]] || die "binary not found or not executable: $b"
done

# More descriptors: the stampede opens STAMPEDE connections at once, through every proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STAMP="$(date -u '+%Y%m%d-%H%M%S')"
mkdir -p "$REPO/bench/out"
REPORT="$REPO/bench/out/compare-$STAMP.md"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- processes
make_tmp slate-compare
# cleanup (lib.sh) also stops what the started processes started in turn (nginx workers,
# varnish's child).
cleanup_extra_pids() { python3 "$TOOLS" tree "$1" 2>/dev/null; }

# ---------------------------------------------------------------- origins and redis
free_port SLOW_PORT
free_port CEILING_PORT
free_port COUNT_PORT
free_port FILL_PORT
free_port REDIS_PORT
free_port REDIS_CEILING_PORT
free_port RAW_CEILING_PORT

start_demo_origin origin "$SLOW_PORT" /__ready \
    "slow origin (demo-origin --delay $SLOW_DELAY --body-size $BODY_SIZE)" \
    --delay "$SLOW_DELAY" --body-size "$BODY_SIZE"
start_demo_origin ceiling "$CEILING_PORT" /__ready "ceiling (demo-origin --delay 0ms)" \
    --delay 0ms --body-size "$BODY_SIZE"
start_redis "$REDIS_PORT"

log "starting redis ceiling (examples/redis_ceiling) on 127.0.0.1:$REDIS_CEILING_PORT"
start redis-ceiling "$REDIS_CEILING_BIN" --listen "127.0.0.1:$REDIS_CEILING_PORT" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --key "bench:redis-ceiling" --body-size "$BODY_SIZE"
wait_http redis-ceiling "$LAST_PID" "http://127.0.0.1:$REDIS_CEILING_PORT/__ready"

log "starting raw ceiling (examples/raw_ceiling) on 127.0.0.1:$RAW_CEILING_PORT"
start raw-ceiling "$RAW_CEILING_BIN" --listen "127.0.0.1:$RAW_CEILING_PORT" --body-size "$BODY_SIZE"
wait_http raw-ceiling "$LAST_PID" "http://127.0.0.1:$RAW_CEILING_PORT/__ready"

# ---------------------------------------------------------------- slate instances
# write_config NAME PROXY_PORT ADMIN_PORT UPSTREAM_URL NAMESPACE STORE_TOML RULES_TOML
# (start_slate's)
write_config() {
    cat >"$TMP/$1.toml" <<EOF
# generated by bench/compare.sh
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"

[log]
level = "warn"          # no per-request logging cost in the numbers

[upstream]
url = "$4"

[cache]
namespace = "$5"
# wrk sends no Accept-Encoding and nginx and Varnish here store and serve identity: so
# does slate, for the same bytes on the wire (bench/codings.sh measures stored codings).
compress = "off"

[store]
$6

$7
EOF
}

# start_slate (lib.sh) NAME UPSTREAM_URL NAMESPACE STORE_TOML RULES_TOML: sets LAST_PORT.
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
SLOW_URL="http://127.0.0.1:$SLOW_PORT"

declare -A URL_OF=()
start_slate slate-l1 "$SLOW_URL" bench-l1 "kind = \"redis\"
url = \"$REDIS_URL\"
l1 = \"64MiB\"" "$CACHE_ALL"
URL_OF[slate-l1]="http://127.0.0.1:$LAST_PORT"
start_slate slate-redis "$SLOW_URL" bench-redis "kind = \"redis\"
url = \"$REDIS_URL\"
l1 = \"0\"" "$CACHE_ALL"
URL_OF[slate-redis]="http://127.0.0.1:$LAST_PORT"
start_slate slate-memory "$SLOW_URL" bench-memory 'kind = "memory"' "$CACHE_ALL"
URL_OF[slate-memory]="http://127.0.0.1:$LAST_PORT"
start_slate slate-pass "http://127.0.0.1:$CEILING_PORT" bench-pass 'kind = "memory"' "$PASS_ALL"
URL_OF[slate-pass]="http://127.0.0.1:$LAST_PORT"
URL_OF[ceiling]="http://127.0.0.1:$CEILING_PORT"
URL_OF[raw-ceiling]="http://127.0.0.1:$RAW_CEILING_PORT"
URL_OF[redis-ceiling]="http://127.0.0.1:$REDIS_CEILING_PORT"

# ---------------------------------------------------------------- nginx
free_port NGINX_PORT
nginx_prelude
cat >"$NGX/nginx.conf" <<EOF
# generated by bench/compare.sh: nginx proxy_cache, tuned as nginx's docs recommend
$(nginx_conf_head "$NGX")

    proxy_cache_path $NGX/cache levels=1:2 keys_zone=bench:32m max_size=2g inactive=1h use_temp_path=off;

    upstream slow {
        server 127.0.0.1:$SLOW_PORT;
        keepalive 64;
    }
    upstream counting {
        server 127.0.0.1:$COUNT_PORT;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache bench;
        proxy_cache_key \$request_uri;
        proxy_cache_valid 200 1h;
        proxy_cache_lock on;
        proxy_cache_lock_timeout 30s;
        proxy_cache_lock_age 30s;
        proxy_read_timeout 60s;
        add_header X-Cache-Status \$upstream_cache_status always;

        location / {
            proxy_pass http://slow;
        }
        location /cold/ {
            proxy_pass http://counting;
        }
    }
}
EOF
start_nginx "$NGINX_PORT"
URL_OF[nginx]="http://127.0.0.1:$NGINX_PORT"

# ---------------------------------------------------------------- varnish
free_port VARNISH_PORT
cat >"$TMP/bench.vcl" <<EOF
# generated by bench/compare.sh
vcl 4.1;

backend slow {
    .host = "127.0.0.1";
    .port = "$SLOW_PORT";
}
backend counting {
    .host = "127.0.0.1";
    .port = "$COUNT_PORT";
    .first_byte_timeout = 60s;
}

sub vcl_recv {
    if (req.url ~ "^/cold/") {
        set req.backend_hint = counting;
    } else {
        set req.backend_hint = slow;
    }
}

sub vcl_backend_response {
    set beresp.ttl = 1h;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
EOF
start_varnish "$VARNISH_PORT" "$TMP/bench.vcl"
URL_OF[varnish]="http://127.0.0.1:$VARNISH_PORT"

# ---------------------------------------------------------------- warm and check
# fetch URL [METHOD]: one request; sets F_STATUS, F_SIZE; headers in $TMP/headers.
fetch() {
    local out
    out="$(curl -sS --max-time 15 -X "${2:-GET}" -o "$TMP/body" -D "$TMP/headers" \
        -w '%{http_code} %{size_download} %{time_total}' "$1")" || die "${2:-GET} $1 failed"
    read -r F_STATUS F_SIZE F_TIME <<<"$out"
}
# hit_marker SYSTEM: how SYSTEM says "hit" in the last fetch; empty when it did not.
hit_marker() {
    local v
    case "$1" in
    slate-*)
        v="$(header cache-status)"
        [[ "$v" == *hit* ]] && printf 'Cache-Status: %s' "$v"
        ;;
    nginx)
        v="$(header x-cache-status)"
        [[ "$v" == HIT ]] && printf 'X-Cache-Status: %s' "$v"
        ;;
    varnish)
        v="$(header x-varnish)"
        [[ "$v" =~ ^[0-9]+\ [0-9]+$ ]] && printf 'X-Varnish: %s, Age: %s' "$v" "$(header age)"
        ;;
    *) printf 'n/a' ;;
    esac
    return 0
}
# check SYSTEM URL EXPECT_SIZE NEED_HIT: 200, the body size, and a hit when NEED_HIT is 1.
check() {
    local sys="$1" url="$2" size="$3" need_hit="$4" marker
    fetch "$url"
    [[ "$F_STATUS" == 200 ]] || die "$sys: GET $url answered $F_STATUS, expected 200"
    [[ "$F_SIZE" == "$size" ]] || die "$sys: GET $url returned $F_SIZE bytes, expected $size"
    marker="$(hit_marker "$sys")"
    if [[ "$need_hit" == 1 && -z "$marker" ]]; then
        die "$sys: the second GET $url was not a cache hit; headers: $(tr -d '\r' <"$TMP/headers" | tr '\n' '|')"
    fi
    CHECK_MARKER="$marker"
}

SYSTEMS=(slate-l1 slate-redis slate-redis-spread slate-memory nginx varnish ceiling redis-ceiling raw-ceiling)
declare -A LABEL=(
    [slate-l1]="slate L1"
    [slate-redis]="slate redis"
    [slate-redis-spread]="slate redis, $SPREAD_KEYS URLs"
    [slate-memory]="slate memory"
    [nginx]="nginx"
    [varnish]="varnish"
    [ceiling]="ceiling (hyper)"
    [raw-ceiling]="raw ceiling"
    [redis-ceiling]="redis ceiling"
    [overhead-direct]="origin direct, 1 conn"
    [overhead-slate]="slate cache=false, 1 conn"
)
# shellcheck disable=SC2016 # backquotes are Markdown here
declare -A WHAT=(
    [slate-l1]='slate, `kind = "redis"`, `l1 = "64MiB"`: hits from the in-process tier'
    [slate-redis]='slate, `kind = "redis"`, `l1 = "0"`: every hit a Redis lookup (lookups in flight together share one GET)'
    [slate-redis-spread]="the slate redis instance, wrk asking for $SPREAD_KEYS warmed URLs at random (bench/spread.lua): lookups rarely meet"
    [slate-memory]='slate, `kind = "memory"`'
    [nginx]='nginx `proxy_cache` + `proxy_cache_lock`, `worker_processes auto`'
    [varnish]='varnishd `-s malloc,256m`, `beresp.ttl = 1h`'
    [ceiling]='`slate demo-origin --delay 0ms`: hyper, same bytes from memory'
    [redis-ceiling]='`examples/redis_ceiling.rs`: hyper + one Redis GET'
    [raw-ceiling]='`examples/raw_ceiling.rs`: thread-per-core, no hyper, one write of prebuilt bytes'
)
URL_OF[slate-redis-spread]="${URL_OF[slate-redis]}"
log "warming $SPREAD_KEYS URLs /report?id=N on slate-redis"
seq 1 "$SPREAD_KEYS" | xargs -P 64 -I{} curl -fsS -o /dev/null --max-time 30 \
    "${URL_OF[slate-redis]}/report?id={}" || die "warming the $SPREAD_KEYS URLs failed"
declare -A HIT_NOTE=()
for sys in "${SYSTEMS[@]}"; do
    need=1
    [[ "$sys" == ceiling || "$sys" == redis-ceiling || "$sys" == raw-ceiling ]] && need=0
    check "$sys" "${URL_OF[$sys]}$URL_PATH" "$BODY_SIZE" 0
    first="$CHECK_MARKER"
    check "$sys" "${URL_OF[$sys]}$URL_PATH" "$BODY_SIZE" "$need"
    HIT_NOTE[$sys]="$CHECK_MARKER"
    log "warmed $sys: 200, $BODY_SIZE bytes; second answer: ${CHECK_MARKER:-n/a} (first: ${first:-not a hit})"
done
if [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern 'slate:bench-redis:*' | wc -l)" -lt 1 ]]; then
    die "slate redis answered a hit, but Redis holds no 'slate:bench-redis:*' key"
fi
check slate-pass "${URL_OF[slate-pass]}$URL_PATH" "$BODY_SIZE" 0
log "pass-through check: Cache-Status '$(header cache-status)'"
URL_OF[overhead-direct]="${URL_OF[ceiling]}"
URL_OF[overhead-slate]="${URL_OF[slate-pass]}"

# ---------------------------------------------------------------- wrk rounds
# run_wrk SYSTEM ROUND THREADS CONNECTIONS URL [WRK ARGS...]: writes one line to $TMP/last:
#   system|round|requests/s|p50 ms|p99 ms|errors|% of the machine used by others meanwhile|
#   server CPU µs/request|Redis GETs per request (for the rows that read Redis)
# server_pids SYSTEM: the processes that answer for SYSTEM (their children counted too),
# with the redis-server for the rows that read Redis: its work is part of their answer.
server_pids() {
    case "$1" in
    slate-l1 | slate-redis | redis-ceiling) echo "${PID_OF[$1]} ${PID_OF[redis]}" ;;
    slate-redis-spread) echo "${PID_OF[slate-redis]} ${PID_OF[redis]}" ;;
    overhead-*) echo "" ;;
    *) echo "${PID_OF[$1]}" ;;
    esac
}
CLK_TCK="$(getconf CLK_TCK)"
redis_gets() { # GET commands the bench's redis-server has answered so far
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats |
        sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' | head -n 1
}

run_wrk() {
    local sys="$1" round="$2" threads="$3" conns="$4" url="$5" raw before after stats pids t0=0 t1=0 cpu
    local g0="" g1="" gets="-"
    shift 5
    raw="$TMP/wrk-$sys-$round.txt"
    pids="$(server_pids "$sys")"
    log "round $round: wrk -t$threads -c$conns -d$DURATION --latency $url   ($sys)"
    before="$(cpu_sample)"
    # shellcheck disable=SC2086 # a list of pids
    [[ -n "$pids" ]] && t0="$(python3 "$TOOLS" ticks $pids)"
    [[ "$pids" == *" ${PID_OF[redis]}" ]] && g0="$(redis_gets)"
    timeout $((DURATION_S + 60)) wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 5s \
        --latency "$url" "$@" >"$raw" 2>&1 || die "wrk failed for $sys: $(cat "$raw")"
    [[ -n "$g0" ]] && g1="$(redis_gets)"
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && t1="$(python3 "$TOOLS" ticks $pids)"
    after="$(cpu_sample)"
    stats="$(wrk_stats "$raw")" || die "could not parse wrk output for $sys: $(cat "$raw")"
    # Server CPU per request (µs): what the system under test spent on each answer, which
    # the shared cores do not blur the way requests/s are (wrk takes what the server leaves).
    cpu="$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v rps="${stats%%|*}" -v s="$DURATION_S" \
        'BEGIN { n = rps * s; printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')"
    # Redis GETs per answer: how many lookups each GET served (redis-server counts them).
    [[ -n "$g1" ]] && gets="$(awk -v d="$((g1 - g0))" -v rps="${stats%%|*}" -v s="$DURATION_S" \
        'BEGIN { n = rps * s; printf "%.3f", (n > 0 ? d / n : 0) }')"
    printf '%s|%s|%s|%s|%s|%s\n' "$sys" "$round" "$stats" "$(foreign_pct "$before" "$after")" "$cpu" "$gets" >"$TMP/last"
    sleep 1 # let the servers settle between runs
}

QUIET_DEADLINE=$((SECONDS + WAIT_QUIET)) # wait_quiet's budget (lib.sh)

# measure SYSTEM ROUND: one wrk run, kept in $TMP/results. With WAIT_QUIET, a run during
# which other processes used 10% or more of the machine is done again (twice at most,
# while the WAIT_QUIET budget lasts).
REPEATED=0
measure() {
    local sys="$1" round="$2" attempt f
    for attempt in 1 2 3; do
        ((attempt == 1)) || wait_quiet
        case "$sys" in
        overhead-*) run_wrk "$sys" "$round" 1 1 "${URL_OF[$sys]}$URL_PATH" ;;
        slate-redis-spread) run_wrk "$sys" "$round" "$THREADS" "$CONNECTIONS" "${URL_OF[$sys]}" \
            -s "$REPO/bench/spread.lua" -- "$SPREAD_KEYS" ;;
        *) run_wrk "$sys" "$round" "$THREADS" "$CONNECTIONS" "${URL_OF[$sys]}$URL_PATH" ;;
        esac
        f="$(cut -d'|' -f7 "$TMP/last")"
        if ((f < 10 || WAIT_QUIET == 0 || attempt == 3 || SECONDS >= QUIET_DEADLINE)); then
            break
        fi
        log "other processes used $f% of the machine during that run: doing it again"
        REPEATED=$((REPEATED + 1))
    done
    cat "$TMP/last" >>"$TMP/results"
}

RUN_ORDER=("${SYSTEMS[@]}" overhead-direct overhead-slate)
: >"$TMP/results"
for ((round = 1; round <= ROUNDS; round++)); do
    n=${#RUN_ORDER[@]}
    # Each round starts one system further on, so no system always runs first or last.
    for ((k = 0; k < n; k++)); do
        measure "${RUN_ORDER[$(((k + round - 1) % n))]}" "$round"
    done
    log "round $round done; CPU used by other processes during its runs: $(awk -F'|' -v r="$round" \
        '$2 == r { printf "%s%s%%", (n++ ? ", " : ""), $7 }' "$TMP/results")"
done

# The caches must still be serving hits after the runs (a run full of misses would have
# measured the 200 ms origin, not the cache).
for sys in slate-l1 slate-redis slate-memory nginx varnish; do
    check "$sys" "${URL_OF[$sys]}$URL_PATH" "$BODY_SIZE" 1
done

# RSS after the runs, before the other tests start more servers.
declare -A RSS_KB=()
for sys in "${SYSTEMS[@]}" redis; do
    [[ "$sys" == slate-redis-spread ]] && continue # the slate redis process
    RSS_KB[$sys]="$(python3 "$TOOLS" rss "${PID_OF[$sys]}")"
done
NGINX_PROCS="$(python3 "$TOOLS" tree "${PID_OF[nginx]}" | wc -l)"
VARNISH_PROCS="$(python3 "$TOOLS" tree "${PID_OF[varnish]}" | wc -l)"

# median SYSTEM FIELD (3 = rps, 4 = p50, 5 = p99, 6 = errors: summed, 8 = server CPU µs/request,
# 9 = Redis GETs per request, "-" where Redis is not read)
median() {
    awk -F'|' -v s="$1" -v f="$2" '$1 == s { v[++n] = $f; sum += $f }
        END {
            if (n == 0 || v[1] == "-") { print (n ? "-" : "nan"); exit }
            if (f == 6) { print sum; exit }
            for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
            print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }' "$TMP/results"
}
declare -A RPS=() P50=() P99=() ERR=() CPU=() GETS=()
for sys in "${RUN_ORDER[@]}"; do
    CPU[$sys]="$(median "$sys" 8)"
    GETS[$sys]="$(median "$sys" 9)"
    RPS[$sys]="$(median "$sys" 3)"
    P50[$sys]="$(median "$sys" 4)"
    P99[$sys]="$(median "$sys" 5)"
    ERR[$sys]="$(median "$sys" 6)"
done

# ---------------------------------------------------------------- cold stampede
count_of() { # count_of PATH_PREFIX: upstream requests the counting origin saw
    curl -fsS --max-time 5 "http://127.0.0.1:$COUNT_PORT/__count?prefix=$1" || echo "?"
}
: >"$TMP/stampede"
if ! skipped stampede; then
    log "starting counting origin (examples/counting_origin, ${STAMPEDE_DELAY_MS} ms) on 127.0.0.1:$COUNT_PORT"
    start counting-origin "$COUNTING_ORIGIN_BIN" --listen "127.0.0.1:$COUNT_PORT" \
        --delay-ms "$STAMPEDE_DELAY_MS" --body-size "$BODY_SIZE"
    wait_http counting-origin "$LAST_PID" "http://127.0.0.1:$COUNT_PORT/__count"
    COUNT_URL="http://127.0.0.1:$COUNT_PORT"
    start_slate stampede-memory "$COUNT_URL" bench-stampede-memory 'kind = "memory"' "$CACHE_ALL"
    ST_MEMORY="127.0.0.1:$LAST_PORT"
    ST_REDIS=""
    for i in 1 2 3; do
        start_slate "stampede-redis-$i" "$COUNT_URL" bench-stampede "kind = \"redis\"
url = \"$REDIS_URL\"" "$CACHE_ALL"
        ST_REDIS+="${ST_REDIS:+,}127.0.0.1:$LAST_PORT"
    done
    # stampede LABEL TARGETS: STAMPEDE identical GETs of one cold URL, all at once.
    stampede() {
        local label="$1" targets="$2" path json upstream
        path="/cold/$(printf '%s' "$label" | tr -c 'a-zA-Z0-9' '-')-$STAMP?id=1"
        log "cold stampede: $STAMPEDE concurrent GET $path -> $label ($targets)"
        json="$TMP/stampede-$(printf '%s' "$label" | tr -c 'a-zA-Z0-9' '_').json"
        timeout 90 python3 "$TOOLS" stampede --targets "$targets" --path "$path" \
            --count "$STAMPEDE" --timeout 45 --expect-size "$BODY_SIZE" >"$json" ||
            die "the stampede client failed against $label"
        sleep 2 # anything that still goes upstream late is counted too
        upstream="$(count_of "${path%%\?*}")"
        python3 - "$json" "$label" "$upstream" >>"$TMP/stampede" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cache = ", ".join(f"{k}: {v}" for k, v in sorted(r["cache"].items(), key=lambda kv: -kv[1]))
errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
print("|".join([sys.argv[2], sys.argv[3], str(r["sent"]), str(r["ok"]),
                f'{r["connect_s"]:.2f}', f'{r["last_answer_s"]:.2f}', cache or "-", errors]))
PY
    }
    stampede "nginx" "127.0.0.1:$NGINX_PORT"
    stampede "varnish" "127.0.0.1:$VARNISH_PORT"
    stampede "slate memory" "$ST_MEMORY"
    stampede "slate redis x3" "$ST_REDIS"
fi

# ---------------------------------------------------------------- prefix purge
PURGE_DONE=0
if ! skipped purge; then
    start_demo_origin fill-origin "$FILL_PORT" /__ready \
        "fill origin (demo-origin --delay 0ms --body-size $FILL_BODY_SIZE)" \
        --delay 0ms --body-size "$FILL_BODY_SIZE"
    start_slate slate-purge "http://127.0.0.1:$FILL_PORT" bench-purge "kind = \"redis\"
url = \"$REDIS_URL\"
l1 = \"0\"" "$CACHE_ALL"
    PURGE_URL="http://127.0.0.1:$LAST_PORT"
    HOT="$PURGE_URL/h/hot?id=1"
    # (demo-origin pads its JSON to at least --body-size: take the size it really sends)
    fetch "http://127.0.0.1:$FILL_PORT/h/hot?id=1"
    FILL_SIZE="$F_SIZE"
    check slate-purge "$HOT" "$FILL_SIZE" 0
    check slate-purge "$HOT" "$FILL_SIZE" 1

    count_entries() {
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern 'slate:bench-purge:e:*' | wc -l
    }
    dbsize() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" dbsize; }
    per_thread=$(((PURGE_ENTRIES + THREADS - 1) / THREADS))
    log "filling $PURGE_ENTRIES entries /p/items?id=N through slate (wrk + bench/fill.lua, at most 240 s)"
    keys_before="$(dbsize)"
    fill_start="$(date +%s.%N)"
    # wrk's threads stop at their quota, but wrk itself waits out -d: watch the number of
    # keys in Redis and stop wrk (SIGINT: it prints its summary) once all entries are in.
    timeout 300 wrk -t"$THREADS" -c"$CONNECTIONS" -d240s --timeout 10s -s "$REPO/bench/fill.lua" \
        "$PURGE_URL" -- "$per_thread" "$THREADS" >"$TMP/wrk-fill.txt" 2>&1 &
    fill_pid=$!
    last_keys=-1
    stalled=0
    for ((i = 0; i < 2400; i++)); do # 0.1 s a turn: 240 s at most
        kill -0 "$fill_pid" 2>/dev/null || break
        sleep 0.1
        ((i % 5 == 4)) || continue
        keys="$(dbsize)"
        if ((keys - keys_before >= PURGE_ENTRIES)); then break; fi
        # Threads that all stopped short (errors, say) leave the count flat: give up after 5 s.
        if ((keys == last_keys)); then stalled=$((stalled + 1)); else stalled=0; fi
        ((stalled < 10)) || break
        last_keys="$keys"
    done
    fill_end="$(date +%s.%N)"
    kill -INT "$fill_pid" 2>/dev/null || true
    wait "$fill_pid" || log "wrk (fill) exited with status $?: $(tail -n 3 "$TMP/wrk-fill.txt")"
    FILL_S="$(awk -v a="$fill_start" -v b="$fill_end" 'BEGIN { printf "%.1f", b - a }')"
    FILL_NON2XX="$(awk '/Non-2xx/ { print $NF }' "$TMP/wrk-fill.txt")"
    FILL_NON2XX="${FILL_NON2XX:-0}"
    ENTRIES_BEFORE="$(count_entries)"
    FILL_RPS="$(awk -v n="$ENTRIES_BEFORE" -v t="$FILL_S" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')"
    log "filled: $ENTRIES_BEFORE entries in Redis in ${FILL_S}s ($FILL_RPS entries/s, $FILL_NON2XX non-2xx)"
    fetch "$PURGE_URL/p/items?id=7"
    PRE_STATUS="$(header cache-status)"
    [[ "$PRE_STATUS" == *hit* ]] || log "warning: /p/items?id=7 was not a hit before the purge: '$PRE_STATUS'"

    # hit_window LABEL PURGE_AT_S: wrk on the hot URL (every hit a Redis GET: l1 = "0"),
    # with redis-cli --latency beside it; with PURGE_AT_S, sends PURGE /p/* that many
    # seconds in.
    hit_window() {
        local label="$1" purge_at="${2:-}" wpid lpid
        timeout -s INT "$PURGE_WINDOW_S" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --latency --raw \
            >"$TMP/latency-$label.txt" 2>&1 &
        lpid=$!
        timeout $((PURGE_WINDOW_S + 30)) wrk -t1 -c16 -d"${PURGE_WINDOW_S}s" --timeout 5s --latency "$HOT" \
            >"$TMP/wrk-hot-$label.txt" 2>&1 &
        wpid=$!
        if [[ -n "$purge_at" ]]; then
            sleep "$purge_at"
            fetch "$PURGE_URL/p/*" PURGE
            PURGE_STATUS="$F_STATUS"
            PURGE_MS="$(awk -v t="$F_TIME" 'BEGIN { printf "%.2f", t * 1000 }')"
            PURGE_BODY="$(head -c 300 "$TMP/body" | tr -d '\n')"
        fi
        wait "$wpid" || die "wrk on the hot URL failed: $(cat "$TMP/wrk-hot-$label.txt")"
        wait "$lpid" || true
    }
    hot_stats() { # hot_stats LABEL: "p50 p99 max non2xx" in ms from the wrk output
        awk "$WRK_MS_AWK"'
            $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
            $1 == "Latency" && !max { max = ms($4) }
            /^Requests\/sec:/ { rps = $2 }
            /Non-2xx/ { bad = $NF }
            END { printf "%.3f %.3f %.3f %d %.0f\n", p50, p99, max, bad, rps }' "$TMP/wrk-hot-$1.txt"
    }
    redis_latency() { # "min max avg samples" (ms) of redis-cli --latency --raw, or "? ? ? ?"
        local l
        l="$(tail -n 1 "$TMP/latency-$1.txt" 2>/dev/null)"
        [[ "$l" =~ ^[0-9.]+\ [0-9.]+\ [0-9.]+\ [0-9]+$ ]] && printf '%s' "$l" || printf '? ? ? ?'
    }
    log "hit latency on $HOT for ${PURGE_WINDOW_S}s, no purge"
    hit_window before
    log "hit latency on $HOT for ${PURGE_WINDOW_S}s, PURGE /p/* after 2s"
    hit_window during 2
    read -r HB_P50 HB_P99 HB_MAX HB_BAD HB_RPS <<<"$(hot_stats before)"
    read -r HD_P50 HD_P99 HD_MAX HD_BAD HD_RPS <<<"$(hot_stats during)"
    read -r _ RB_MAX RB_AVG RB_N <<<"$(redis_latency before)"
    read -r _ RD_MAX RD_AVG RD_N <<<"$(redis_latency during)"
    fetch "$PURGE_URL/p/items?id=7"
    POST_STATUS="$(header cache-status)"
    fetch "$HOT"
    HOT_STATUS="$(header cache-status)"
    ENTRIES_AFTER="$(count_entries)"
    log "PURGE /p/*: $PURGE_STATUS in ${PURGE_MS} ms; then /p/items?id=7: '$POST_STATUS'; hot URL: '$HOT_STATUS'"
    PURGE_DONE=1
fi

# ---------------------------------------------------------------- report
fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "-"; else printf "%.2f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "nan" }'; }
verdict() { # verdict VALUE OP TARGET
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        if (v == "nan") { print "?"; exit }
        ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0)
        print ok ? "met" : "**missed**" }'
}
FASTER_CACHE=nginx
if awk -v a="${RPS[varnish]}" -v b="${RPS[nginx]}" 'BEGIN { exit !(a > b) }'; then FASTER_CACHE=varnish; fi
R_L1_CACHE="$(ratio "${RPS[slate-l1]}" "${RPS[$FASTER_CACHE]}")"
R_L1_CEIL="$(ratio "${RPS[slate-l1]}" "${RPS[ceiling]}")"
R_RAW_CACHE="$(ratio "${RPS[raw-ceiling]}" "${RPS[$FASTER_CACHE]}")"
R_L1_RAW="$(ratio "${RPS[slate-l1]}" "${RPS[raw-ceiling]}")"
R_REDIS_NGINX="$(ratio "${RPS[slate-redis]}" "${RPS[nginx]}")"
R_REDIS_CEIL="$(ratio "${RPS[slate-redis]}" "${RPS[redis-ceiling]}")"
R_SPREAD_NGINX="$(ratio "${RPS[slate-redis-spread]}" "${RPS[nginx]}")"
R_SPREAD_CEIL="$(ratio "${RPS[slate-redis-spread]}" "${RPS[redis-ceiling]}")"
P99_DIFF="$(awk -v a="${P99[slate-l1]}" -v b="${P99[nginx]}" 'BEGIN { printf "%.2f", a - b }')"
OVERHEAD="$(awk -v a="${P50[overhead-slate]}" -v b="${P50[overhead-direct]}" 'BEGIN { printf "%.3f", a - b }')"
FOREIGN_MAX="$(awk -F'|' '$7 > m { m = $7 } END { print m + 0 }' "$TMP/results")"
FOREIGN_BUSY="$(awk -F'|' '$7 >= 10 { n++ } END { print n + 0 }' "$TMP/results")"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    COMMIT+=" with uncommitted changes in src/"
fi
if [[ -n "${SLATE_BIN_GIVEN:-}" ]]; then
    COMMIT="(prebuilt SLATE_BIN=$SLATE_BIN; work tree at $COMMIT)"
fi
# The command that reproduces this run: the settings that differ from the defaults.
REPRO=""
for v in DURATION=10s ROUNDS=3 THREADS=2 CONNECTIONS=64 BODY_SIZE=20480 STAMPEDE=1000 PURGE_ENTRIES=100000 SPREAD_KEYS=1000 SKIP= WAIT_QUIET=0; do
    name="${v%%=*}"
    [[ "${!name}" == "${v#*=}" ]] || REPRO+="$name=${!name@Q} "
done

{
    echo "# slate vs nginx vs Varnish: bench/compare.sh"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT. Machine: $(nproc) cores," \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
        "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory."
    echo "$("$SLATE_BIN" --version 2>&1 | head -n 1); $(nginx -v 2>&1 | head -n 1);" \
        "$(varnishd -V 2>&1 | head -n 1); $(redis-server --version | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)."
    echo
    echo "Load average before the run: $LOAD_BEFORE. CPU used by processes outside the benchmark" \
        "during each wrk run (share of all cores, in brackets in the per-round table): at most $FOREIGN_MAX%;" \
        "$FOREIGN_BUSY of $(wc -l <"$TMP/results") runs at 10% or more; $REPEATED runs done again because of it (WAIT_QUIET=$WAIT_QUIET)."
    if ((FOREIGN_BUSY > 0)); then
        echo
        echo "**NOTE: something else used up to ${FOREIGN_MAX}% of the machine during $FOREIGN_BUSY runs: those numbers are noisy; rerun on a quiet machine (or with WAIT_QUIET).**"
    fi
    echo
    echo "Hits: \`GET $URL_PATH\` (one hot key, $BODY_SIZE-byte body, origin $SLOW_DELAY)," \
        "\`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\`, $ROUNDS interleaved rounds; medians."
    echo
    echo "| system | what answers | requests/s | p50 ms | p99 ms | errors | server CPU µs/req | Redis GETs/req | RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for sys in "${SYSTEMS[@]}"; do
        rss_note=""
        [[ "$sys" == nginx ]] && rss_note=" ($NGINX_PROCS procs)"
        [[ "$sys" == varnish ]] && rss_note=" ($VARNISH_PROCS procs)"
        rss="$(awk -v k="${RSS_KB[$sys]:-}" 'BEGIN { printf "%.1f", k / 1024 }')"
        [[ "$sys" == slate-redis-spread ]] && rss="(slate redis)"
        printf '| %s | %s | %.0f | %s | %s | %s | %.2f | %s | %s%s |\n' "${LABEL[$sys]}" "${WHAT[$sys]}" \
            "${RPS[$sys]}" "$(fmt_ms "${P50[$sys]}")" "$(fmt_ms "${P99[$sys]}")" "${ERR[$sys]}" "${CPU[$sys]}" \
            "${GETS[$sys]}" "$rss" "$rss_note"
    done
    printf '| redis-server | the Redis of slate L1, slate redis and the redis ceiling | | | | | | | %.1f |\n' \
        "$(awk -v k="${RSS_KB[redis]}" 'BEGIN { print k / 1024 }')"
    echo
    echo "Server CPU µs/req: the CPU time (user + system) the answering processes used during the run" \
        "(nginx and Varnish: every process of theirs; the Redis-backed rows: with redis-server)," \
        "divided by the requests answered; medians. wrk shares the two cores, so requests/s move with" \
        "what the server leaves to wrk; this column is the server's own cost per answer." \
        "Redis GETs/req: the GET commands redis-server answered during the run (\`INFO commandstats\`)," \
        "divided by the requests answered."
    echo
    printf 'Hit checks, the second answer after one warming request:'
    for sys in slate-l1 slate-redis slate-memory nginx varnish; do
        # shellcheck disable=SC2016 # Markdown backquotes
        printf ' %s `%s`;' "${LABEL[$sys]}" "${HIT_NOTE[$sys]}"
    done
    echo " all still hits after the runs."
    echo
    echo "| target | measured | goal | |"
    echo "|---|---:|---:|---|"
    echo "| slate L1 req/s ÷ faster of nginx/Varnish ($FASTER_CACHE) | ${R_L1_CACHE}x | ≥ 1.30x | $(verdict "$R_L1_CACHE" '>=' 1.3) |"
    echo "| slate L1 req/s ÷ ceiling | ${R_L1_CEIL}x | ≥ 0.90x | $(verdict "$R_L1_CEIL" '>=' 0.9) |"
    echo "| slate L1 p99 − nginx p99 | ${P99_DIFF} ms | ≤ 0 | $(verdict "$P99_DIFF" '<=' 0) |"
    echo "| slate redis req/s ÷ nginx | ${R_REDIS_NGINX}x | ≥ 0.90x | $(verdict "$R_REDIS_NGINX" '>=' 0.9) |"
    echo "| slate redis req/s ÷ redis ceiling | ${R_REDIS_CEIL}x | ≥ 0.85x | $(verdict "$R_REDIS_CEIL" '>=' 0.85) |"
    echo "| slate redis, $SPREAD_KEYS URLs, req/s ÷ nginx (one GET per hit; not a target row) | ${R_SPREAD_NGINX}x | ≥ 0.90x | $(verdict "$R_SPREAD_NGINX" '>=' 0.9) |"
    echo "| slate redis, $SPREAD_KEYS URLs, req/s ÷ redis ceiling (not a target row) | ${R_SPREAD_CEIL}x | ≥ 0.85x | $(verdict "$R_SPREAD_CEIL" '>=' 0.85) |"
    echo "| miss overhead, p50 (below) | ${OVERHEAD} ms | < 1 ms | $(verdict "$OVERHEAD" '<=' 0.999) |"
    echo
    echo "For scale, not targets: the raw ceiling (no HTTP library, no cache, one write of prebuilt" \
        "bytes) answers ${R_RAW_CACHE}x the requests/s of $FASTER_CACHE in this run: what any server can" \
        "reach on these cores beside wrk. slate L1 answers ${R_L1_RAW}x the raw ceiling's requests/s."
    echo
    echo "Miss overhead: \`wrk -t1 -c1 -d$DURATION\`, slate with \`[[rules]] path = \"/\" cache = false\`" \
        "in front of the 0 ms origin, against that origin directly (medians of $ROUNDS rounds):"
    echo
    echo "| path | requests/s | p50 ms | p99 ms | errors |"
    echo "|---|---:|---:|---:|---:|"
    for sys in overhead-direct overhead-slate; do
        printf '| %s | %.0f | %.3f | %.3f | %s |\n' "${LABEL[$sys]}" "${RPS[$sys]}" "${P50[$sys]}" "${P99[$sys]}" "${ERR[$sys]}"
    done
    echo
    echo "Requests/s per round (the order rotates each round; in brackets, the CPU other processes used during the run):"
    echo
    printf '| system |'
    for ((round = 1; round <= ROUNDS; round++)); do printf ' round %d |' "$round"; done
    printf '\n|---|'
    for ((round = 1; round <= ROUNDS; round++)); do printf -- '---:|'; done
    printf '\n'
    for sys in "${RUN_ORDER[@]}"; do
        printf '| %s |' "${LABEL[$sys]}"
        for ((round = 1; round <= ROUNDS; round++)); do
            awk -F'|' -v s="$sys" -v r="$round" '$1 == s && $2 == r { printf " %.0f (%d%%) |", $3, $7 }' "$TMP/results"
        done
        printf '\n'
    done
    if [[ -s "$TMP/stampede" ]]; then
        echo
        echo "Cold stampede: $STAMPEDE identical GETs of one cold URL, connections opened first, then all" \
            "requests written in one burst; origin (examples/counting_origin.rs) takes ${STAMPEDE_DELAY_MS} ms" \
            "and counts what reaches it. \"slate redis x3\": three slate instances on one Redis" \
            "(\`l1 = \"64MiB\"\`), requests spread round-robin."
        echo
        echo "| system | upstream requests | sent | 200 + full body | connect s | last answer s | cache header tally | errors |"
        echo "|---|---:|---:|---:|---:|---:|---|---|"
        awk -F'|' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$TMP/stampede"
    fi
    if [[ "$PURGE_DONE" == 1 ]]; then
        echo
        echo "Prefix purge: slate on Redis (\`l1 = \"0\"\`, so every hit below is a Redis GET)," \
            "filled through slate with $ENTRIES_BEFORE entries \`/p/items?id=N\` ($FILL_SIZE-byte bodies," \
            "wrk -t$THREADS -c$CONNECTIONS + bench/fill.lua: ${FILL_S} s, $FILL_RPS entries/s, $FILL_NON2XX non-2xx), then \`PURGE /p/*\`" \
            "while \`wrk -t1 -c16\` hits another URL."
        echo
        echo "| | value |"
        echo "|---|---|"
        echo "| \`PURGE /p/*\` answer | $PURGE_STATUS in **${PURGE_MS} ms**: \`$PURGE_BODY\` |"
        echo "| \`/p/items?id=7\` before / after | \`$PRE_STATUS\` / \`$POST_STATUS\` |"
        echo "| \`slate:bench-purge:e:*\` keys in Redis before / after | $ENTRIES_BEFORE / $ENTRIES_AFTER |"
        echo "| hits, ${PURGE_WINDOW_S} s without purge: p50 / p99 / max, req/s | $HB_P50 / $HB_P99 / $HB_MAX ms, $HB_RPS ($HB_BAD non-2xx) |"
        echo "| hits, ${PURGE_WINDOW_S} s with the purge: p50 / p99 / max, req/s | $HD_P50 / $HD_P99 / $HD_MAX ms, $HD_RPS ($HD_BAD non-2xx) |"
        echo "| \`redis-cli --latency\` max / avg, without / with the purge | $RB_MAX / $RB_AVG ms ($RB_N samples) / $RD_MAX / $RD_AVG ms ($RD_N samples) |"
        echo "| the hot URL after the purge | \`$HOT_STATUS\` |"
    fi
    echo
    echo "Reproduce: \`${REPRO}bash bench/compare.sh\`"
} >"$REPORT"

echo
cat "$REPORT"
echo
log "report written to ${REPORT#"$REPO"/}"
ERRORS_TOTAL="$(awk -F'|' '{ s += $6 } END { print s + 0 }' "$TMP/results")"
if ((ERRORS_TOTAL > 0)); then
    log "WARNING: some wrk runs had errors (non-2xx answers or socket errors): see the errors column"
fi
