#!/usr/bin/env bash
# bench/realistic.sh: the realistic-traffic benchmark of issue 18, one command from a fresh
# clone, reproducible with SEED. See bench/README.md ("realistic.sh").
#
# One origin (examples/report_origin.rs --reports N --seed SEED): N warm reports of seeded
# log-normal sizes (2 KiB..2 MiB, median 40 KiB) answered at once, cold reports (ids above N)
# answered after a seeded 1-5 s, all with Cache-Control: public, max-age=86400. In front of
# it, one system at a time, each with CACHE_MEM of memory for its cache, on free 127.0.0.1
# ports under a temp dir:
#   slate-memory   [store] kind = "memory", memory_limit = CACHE_MEM
#   slate-l1       kind = "redis", l1 = L1 (the in-process tier), Redis maxmemory CACHE_MEM
#   slate-redis    kind = "redis", l1 = "0": every hit a Redis read
#   slate-3x       three slates, one Redis, one namespace, l1 = THREE_L1 ("0"); the driver
#                  spreads its connections over the three
#   slate-cluster  kind = "redis-cluster" on a three-master Redis Cluster, l1 = CLUSTER_L1 ("0")
#   nginx          proxy_cache (max_size CACHE_MEM) + proxy_cache_lock, gzip on (level 1, its default)
#   varnish        -s malloc,CACHE_MEM, do_gzip, grace 1h
# For each: a check (a second GET is a hit by the system's own header), the warm phase
# (examples/workload_client.rs --phase warm: every warm report once), then the measured
# phase (--phase measure, DURATION s, CONNECTIONS closed-loop connections, Zipf s=1.0 over
# the warm reports, 2% of requests to cold reports never asked before, 95% of clients
# sending Accept-Encoding: gzip, deflate, br, zstd). Around the measured phase: CPU of the
# system and of its Redis (/proc utime+stime), Redis GETs and bytes out (INFO), the
# origin's request count (/stats), RSS. One Markdown report, ratios to the faster of nginx
# and Varnish, written to bench/out/realistic-<timestamp>.md.
#
# Environment (defaults in brackets; QUICK=1 changes the defaults to a CI print of
# <= 60 s of load: REPORTS 2000, DURATION 5):
#   SEED [1]            the workload's seed (sizes, cold delays, every driver's choices)
#   REPORTS [10000]     warm reports;  DURATION [60]  seconds of the measured phase
#   CONNECTIONS [64]    closed-loop connections of the driver
#   COLD_SHARE [0.02]   share of measured requests to cold reports; GZIP_SHARE [0.95]
#   CACHE_MEM [1024]    MiB of cache memory for every system
#   L1 [64MiB]          slate-l1's in-process tier; THREE_L1, CLUSTER_L1 ["0"]
#   SYSTEMS [all]       space-separated subset of the systems above, in that order
#   PERF [0]            1: perf record slate-redis during its measured phase (top symbols)
#   SLATE_BIN           prebuilt slate: no build (the examples looked for beside it)
#   KEEP_TMP [0]        1: keep the temp dir (configs, logs, raw driver output)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export PATH="$PATH:/usr/sbin:/sbin"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    REPORTS="${REPORTS:-2000}"
    DURATION="${DURATION:-5}"
else
    REPORTS="${REPORTS:-10000}"
    DURATION="${DURATION:-60}"
fi
SEED="${SEED:-1}"
CONNECTIONS="${CONNECTIONS:-64}"
COLD_SHARE="${COLD_SHARE:-0.02}"
GZIP_SHARE="${GZIP_SHARE:-0.95}"
CACHE_MEM="${CACHE_MEM:-1024}"
L1="${L1:-64MiB}"
THREE_L1="${THREE_L1:-0}"
CLUSTER_L1="${CLUSTER_L1:-0}"
ALL_SYSTEMS="nginx varnish slate-memory slate-l1 slate-redis slate-3x slate-cluster"
SYSTEMS="${SYSTEMS:-$ALL_SYSTEMS}"
PERF="${PERF:-0}"
KEEP_TMP="${KEEP_TMP:-0}"
START_TIMEOUT_S=60
TOOLS="$REPO/bench/compare_tools.py"
BENCH_NAME=realistic
APT_INSTALL_ENV=(RUNLEVEL=1) # no system service starts on install

[[ "$SEED" =~ ^[0-9]{1,18}$ ]] || die "SEED must be a non-negative integer (at most 18 digits)"
int_in "$REPORTS" 10 1000000 || die "REPORTS must be 10..1000000"
int_in "$DURATION" 1 3600 || die "DURATION must be 1..3600 (seconds)"
int_in "$CONNECTIONS" 1 4096 || die "CONNECTIONS must be 1..4096"
int_in "$CACHE_MEM" 64 65536 || die "CACHE_MEM must be 64..65536 (MiB)"
for s in $SYSTEMS; do
    [[ " $ALL_SYSTEMS " == *" $s "* ]] || die "unknown system '$s' (one of: $ALL_SYSTEMS)"
done

# ---------------------------------------------------------------- prerequisites
ensure_servers
[[ "$PERF" == 1 ]] && ensure_cmd perf linux-perf

build_slate --bin slate --example report_origin --example workload_client
EX="$(dirname "$SLATE_BIN")/examples"
ORIGIN_BIN="$EX/report_origin"
DRIVER_BIN="$EX/workload_client"
for b in "$SLATE_BIN" "$ORIGIN_BIN" "$DRIVER_BIN"; do
    [[ -x "$b" ]] || die "binary not found or not executable: $b"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STAMP="$(date -u '+%Y%m%d-%H%M%S')"
mkdir -p "$REPO/bench/out"
REPORT="$REPO/bench/out/realistic-$STAMP.md"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

make_tmp slate-realistic
cleanup_extra_pids() { python3 "$TOOLS" tree "$1" 2>/dev/null; }
mkdir -p "$TMP/results"
meta() { printf '%s=%s\n' "$1" "$2" >>"$TMP/meta"; }

# stop NAME...: stops what `start NAME` started, and its children (SIGTERM, then SIGKILL).
stop() {
    local name pid tree i
    for name in "$@"; do
        pid="${PID_OF[$name]:-}"
        [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || continue
        tree="$(python3 "$TOOLS" tree "$pid" 2>/dev/null | tr '\n' ' ')"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        # shellcheck disable=SC2086 # a list of pids
        kill -KILL $tree 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------- the origin
free_port ORIGIN_PORT
log "starting the workload origin (report_origin --reports $REPORTS --seed $SEED) on 127.0.0.1:$ORIGIN_PORT"
start origin "$ORIGIN_BIN" --listen "127.0.0.1:$ORIGIN_PORT" --delay-ms 0 --reports "$REPORTS" --seed "$SEED"
wait_http origin "$LAST_PID" "http://127.0.0.1:$ORIGIN_PORT/__ready"
ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT"
origin_requests() { curl -fsS "$ORIGIN_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

# ---------------------------------------------------------------- redis
# start_redis_node NAME PORT [ARGS...]: a redis-server with maxmemory, no persistence.
start_redis_node() {
    local name="$1" port="$2" mem
    shift 2
    mem="${REDIS_MEM_MB:-$CACHE_MEM}"
    mkdir -p "$TMP/$name"
    start "$name" redis-server --bind 127.0.0.1 --port "$port" --dir "$TMP/$name" \
        --save '' --appendonly no --daemonize no --loglevel warning \
        --maxmemory "${mem}mb" --maxmemory-policy allkeys-lru "$@"
    wait_redis "$LAST_PID" "$port"
}
# start_cluster NAME: three masters, MiB CACHE_MEM/3 each; sets CLUSTER_PORTS.
start_cluster() {
    local i port addrs=()
    CLUSTER_PORTS=()
    for i in 1 2 3; do
        free_port port
        REDIS_MEM_MB=$((CACHE_MEM / 3)) start_redis_node "$1-$i" "$port" \
            --cluster-enabled yes --cluster-node-timeout 2000 --cluster-config-file nodes.conf
        CLUSTER_PORTS+=("$port")
        addrs+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$TMP/$1-create.log" 2>&1 ||
        die "redis-cli --cluster create failed: $(tail -n 5 "$TMP/$1-create.log")"
    for ((i = 0; i < 100; i++)); do
        local ok=1
        for port in "${CLUSTER_PORTS[@]}"; do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
        done
        ((ok)) && return 0
        sleep 0.1
    done
    die "the Redis Cluster did not reach cluster_state:ok"
}
# redis_sample PORT...: "GET calls, all calls, bytes out" summed over the nodes.
redis_sample() {
    local port g=0 c=0 b=0 x y z
    for port in "$@"; do
        read -r x y z < <(redis-cli -p "$port" info all | tr -d '\r' | awk -F'[:=,]' '
            $1 == "cmdstat_get" { g = $3 }
            $1 == "total_commands_processed" { c = $2 }
            $1 == "total_net_output_bytes" { b = $2 }
            END { printf "%.0f %.0f %.0f\n", g, c, b }')
        g=$((g + x)) c=$((c + y)) b=$((b + z))
    done
    printf '%s %s %s\n' "$g" "$c" "$b"
}

# ---------------------------------------------------------------- slate
# write_config NAME PROXY_PORT ADMIN_PORT NAMESPACE STORE_TOML (start_slate's)
write_config() {
    {
        echo "# generated by bench/realistic.sh"
        config_head "$2" "$3" "$ORIGIN_URL"
        # Cold reports arrive at 2% of the requests and take 1-5 s each: at thousands of
        # req/s hundreds are in flight. nginx and Varnish do not cap fills; neither does
        # slate here (max_fills = 16, the default, would queue them into 503s).
        printf 'timeout = "60s"\nmax_fills = 0\n'
        printf '[cache]\nnamespace = "%s"\ncompress = "gzip"\n' "$4"
        printf '[store]\n%s\n' "$5"
        echo "$CACHE_ALL"
    } >"$TMP/$1.toml"
}
redis_store() { printf 'kind = "redis"\nurl = "redis://127.0.0.1:%s"\nl1 = "%s"' "$1" "$2"; }

# ---------------------------------------------------------------- nginx and varnish
start_nginx() { # start_nginx PORT: proxy_cache as its users configure it, in $TMP/nginx
    local ngx="$TMP/nginx"
    mkdir -p "$ngx/cache" "$ngx/temp"
    cat >"$ngx/nginx.conf" <<EOF
# generated by bench/realistic.sh
$(nginx_conf_head "$ngx")
    proxy_cache_path $ngx/cache levels=1:2 keys_zone=realistic:32m max_size=${CACHE_MEM}m inactive=1d use_temp_path=off;

    gzip on;
    gzip_proxied any;
    gzip_types application/json;
    gzip_vary on;

    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$1 reuseport backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache realistic;
        proxy_cache_key \$request_uri;
        proxy_cache_lock on;
        proxy_cache_lock_timeout 30s;
        proxy_cache_lock_age 30s;
        proxy_read_timeout 60s;
        proxy_cache_use_stale updating error timeout;
        add_header X-Cache-Status \$upstream_cache_status always;
        location / {
            proxy_pass http://origin;
        }
    }
}
EOF
    nginx -t -q -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" >"$TMP/nginx-t.log" 2>&1 ||
        die "nginx -t rejected the generated config: $(cat "$TMP/nginx-t.log" "$ngx/error.log" 2>/dev/null)"
    start nginx nginx -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" -g 'daemon off;'
    wait_http nginx "$LAST_PID" "http://127.0.0.1:$1/report?id=1"
}
start_varnish() { # start_varnish PORT
    cat >"$TMP/realistic.vcl" <<EOF
# generated by bench/realistic.sh
vcl 4.1;
backend origin {
    .host = "127.0.0.1";
    .port = "$ORIGIN_PORT";
    .first_byte_timeout = 60s;
}
sub vcl_backend_response {
    # the origin's max-age (a day) is the TTL; stored gzip, gunzipped for identity clients
    set beresp.do_gzip = true;
    set beresp.grace = 1h;
}
sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
EOF
    start varnish varnishd -F -j none -n "$TMP/varnish" -a "127.0.0.1:$1" \
        -f "$TMP/realistic.vcl" -s "malloc,${CACHE_MEM}m" -T none
    wait_http varnish "$LAST_PID" "http://127.0.0.1:$1/report?id=1"
}

# ---------------------------------------------------------------- one system
declare -A LABEL=(
    [slate-memory]="slate memory"
    [slate-l1]="slate Redis + L1"
    [slate-redis]="slate Redis, no L1"
    [slate-3x]="3 slates, one Redis"
    [slate-cluster]="slate, Redis Cluster (3)"
    [nginx]="nginx"
    [varnish]="Varnish"
)
# up SYSTEM: starts SYSTEM (and its Redis); sets TARGETS (comma list), SERVERS, REDISES
# (names for stop and the CPU samples) and REDIS_PORTS.
up() {
    local sys="$1" sport i
    TARGETS="" SERVERS=() REDISES=() REDIS_PORTS=()
    case "$sys" in
    nginx | varnish)
        free_port sport
        log "starting $sys on 127.0.0.1:$sport"
        "start_$sys" "$sport"
        TARGETS="http://127.0.0.1:$sport" SERVERS=("$sys")
        ;;
    slate-memory)
        start_slate "$sys" "$sys" "kind = \"memory\"
memory_limit = \"${CACHE_MEM}MiB\""
        TARGETS="http://127.0.0.1:$LAST_PORT" SERVERS=("$sys")
        ;;
    slate-l1 | slate-redis | slate-3x)
        free_port sport
        log "starting redis-server for $sys on 127.0.0.1:$sport"
        start_redis_node "$sys-redis" "$sport"
        REDISES=("$sys-redis") REDIS_PORTS=("$sport")
        local l1="$L1" n=1
        [[ "$sys" == slate-redis ]] && l1=0
        [[ "$sys" == slate-3x ]] && l1="$THREE_L1" n=3
        for ((i = 1; i <= n; i++)); do
            start_slate "$sys-$i" "$sys" "$(redis_store "$sport" "$l1")"
            TARGETS+="${TARGETS:+,}http://127.0.0.1:$LAST_PORT"
            SERVERS+=("$sys-$i")
        done
        ;;
    slate-cluster)
        log "starting a three-master Redis Cluster for $sys"
        start_cluster "$sys-redis"
        REDISES=("$sys-redis-1" "$sys-redis-2" "$sys-redis-3") REDIS_PORTS=("${CLUSTER_PORTS[@]}")
        local nodes=""
        for sport in "${CLUSTER_PORTS[@]}"; do nodes+="${nodes:+, }\"redis://127.0.0.1:$sport\""; done
        start_slate "$sys" "$sys" "kind = \"redis-cluster\"
nodes = [$nodes]
l1 = \"$CLUSTER_L1\""
        TARGETS="http://127.0.0.1:$LAST_PORT" SERVERS=("$sys")
        ;;
    esac
}
pids_of() { local n; for n in "$@"; do printf '%s ' "${PID_OF[$n]}"; done; }
ticks() { [[ $# -gt 0 ]] && python3 "$TOOLS" ticks "$@" || echo 0; }
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(python3 "$TOOLS" rss "$p"))); done; echo "$t"; }
# hit_check URL: a second GET of report 1 (gzip client) says hit in the system's header.
hit_check() {
    curl -fsS -o /dev/null -H 'Accept-Encoding: gzip, deflate, br, zstd' "$1/report?id=1" || die "GET $1/report?id=1 failed"
    curl -fsS -o /dev/null -D "$TMP/headers" -H 'Accept-Encoding: gzip, deflate, br, zstd' "$1/report?id=1" ||
        die "GET $1/report?id=1 failed"
    local m
    m="$(header cache-status)$(header x-cache-status)$(header x-cache)"
    [[ "$m" == *hit* || "$m" == HIT ]] || die "$1: the second GET of /report?id=1 was no hit: $(tr -d '\r' <"$TMP/headers" | tr '\n' '|')"
    HIT_MARKER="$m; $(header content-encoding)"
}

run_system() {
    local sys="$1" t0 t1 r0 r1 o0 o1 o2 c0 c1 rss_w rss_m red_rss_w red_rss_m
    local -a server_pids redis_pids
    log "=== $sys"
    up "$sys"
    read -r -a server_pids <<<"$(pids_of "${SERVERS[@]}")"
    read -r -a redis_pids <<<"$(pids_of "${REDISES[@]}")"
    hit_check "${TARGETS%%,*}"
    local drive=("$DRIVER_BIN" --target "$TARGETS" --reports "$REPORTS" --seed "$SEED" --connections "$CONNECTIONS")
    o0="$(origin_requests)"
    log "$sys: warm phase ($REPORTS reports)"
    "${drive[@]}" --phase warm >"$TMP/results/$sys.warm.json" 2>"$TMP/$sys.warm.err" ||
        die "$sys: the warm phase failed: $(tail -n 5 "$TMP/$sys.warm.err")"
    rss_w="$(rss_kib "${server_pids[@]}")" red_rss_w="$(rss_kib "${redis_pids[@]}")"
    o1="$(origin_requests)"
    t0="$(ticks "${server_pids[@]}") $(ticks "${redis_pids[@]}")"
    r0="$( ((${#REDIS_PORTS[@]})) && redis_sample "${REDIS_PORTS[@]}" || echo 0 0 0)"
    c0="$(cpu_sample)"
    log "$sys: measured phase (${DURATION}s, $CONNECTIONS connections)"
    local perf_pid=""
    if [[ "$PERF" == 1 && "$sys" == slate-redis ]]; then
        perf record -F 499 -g -o "$TMP/perf.data" -p "${server_pids[0]}" -- sleep "$((DURATION > 4 ? DURATION - 2 : 2))" \
            >"$TMP/perf-record.log" 2>&1 &
        perf_pid=$!
    fi
    # RSS of the system over the measured phase, every DURATION/20 s (every 2 s below 40 s):
    # what "flat over a soak" is read from.
    local every=$((DURATION >= 40 ? DURATION / 20 : 2))
    (
        s0=$SECONDS
        while sleep "$every"; do
            printf '%d %d\n' "$((SECONDS - s0))" "$(rss_kib "${server_pids[@]}")" || break
        done
    ) >"$TMP/results/$sys.rss" 2>/dev/null &
    local rss_pid=$!
    "${drive[@]}" --phase measure --duration "$DURATION" --cold-share "$COLD_SHARE" --gzip-share "$GZIP_SHARE" \
        >"$TMP/results/$sys.json" 2>"$TMP/$sys.measure.err" ||
        die "$sys: the measured phase failed: $(tail -n 5 "$TMP/$sys.measure.err")"
    kill "$rss_pid" 2>/dev/null || true
    wait "$rss_pid" 2>/dev/null || true
    c1="$(cpu_sample)"
    t1="$(ticks "${server_pids[@]}") $(ticks "${redis_pids[@]}")"
    r1="$( ((${#REDIS_PORTS[@]})) && redis_sample "${REDIS_PORTS[@]}" || echo 0 0 0)"
    o2="$(origin_requests)"
    rss_m="$(rss_kib "${server_pids[@]}")" red_rss_m="$(rss_kib "${redis_pids[@]}")"
    [[ -n "$perf_pid" ]] && { wait "$perf_pid" || true; }
    # shellcheck disable=SC2086 # t0, t1, r0, r1: lists of numbers
    python3 - "$TMP/results/$sys.extra.json" "${LABEL[$sys]}" "$HIT_MARKER" "${#SERVERS[@]}" "${#REDIS_PORTS[@]}" \
        "$(getconf CLK_TCK)" "$(foreign_pct "$c0" "$c1")" $t0 $t1 $r0 $r1 "$o0" "$o1" "$o2" \
        "$rss_w" "$rss_m" "$red_rss_w" "$red_rss_m" <<'PY'
import json, sys
out, label, marker = sys.argv[1:4]
n = [int(x) for x in sys.argv[4:]]
(inst, nodes, tck, foreign, st0, rt0, st1, rt1, g0, c0, b0, g1, c1, b1, o0, o1, o2,
 rss_w, rss_m, rrss_w, rrss_m) = n
json.dump({
    "label": label, "hit_marker": marker, "instances": inst, "redis_nodes": nodes,
    "server_ticks": st1 - st0, "redis_ticks": rt1 - rt0, "clk_tck": tck,
    "redis_gets": g1 - g0, "redis_calls": c1 - c0, "redis_bytes_out": b1 - b0,
    "upstream_warm": o1 - o0, "upstream_measured": o2 - o1,
    "rss_kib_warm": rss_w, "rss_kib": rss_m, "redis_rss_kib_warm": rrss_w, "redis_rss_kib": rrss_m,
    "foreign_pct": foreign,
}, open(out, "w"))
PY
    log "$sys: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f req/s, hit p99 %s ms, %d errors" % (d["req_per_s"], d["hit_p99_ms"], d["errors"]))' "$TMP/results/$sys.json")"
    if [[ "$PERF" == 1 && "$sys" == slate-redis && -s "$TMP/perf.data" ]]; then
        perf report -i "$TMP/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
            grep -E '^ +[0-9]+\.[0-9]+%' | head -n 25 | sed -E 's/([[:space:]]+-)+[[:space:]]*$//' >"$TMP/perf.txt" || true
    fi
    stop "${SERVERS[@]}" "${REDISES[@]}"
}

SYSTEM_LIST=()
for s in $SYSTEMS; do SYSTEM_LIST+=("$s"); done
for s in "${SYSTEM_LIST[@]}"; do run_system "$s"; done

# ---------------------------------------------------------------- report
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] && COMMIT+=" with uncommitted changes in src/"
[[ -n "${SLATE_BIN_GIVEN:-}" ]] && COMMIT="(prebuilt SLATE_BIN=$SLATE_BIN; work tree at $COMMIT)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta commit "$COMMIT"
meta machine "$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"
meta versions "$("$SLATE_BIN" --version 2>&1 | head -n 1); $(nginx -v 2>&1 | head -n 1); $(varnishd -V 2>&1 | head -n 1); $(redis-server --version | cut -d' ' -f1-3)"
meta load "$LOAD_BEFORE"
meta systems "${SYSTEM_LIST[*]}"
REPRO=""
for v in QUICK=0 SEED=1 CONNECTIONS=64 COLD_SHARE=0.02 GZIP_SHARE=0.95 CACHE_MEM=1024 L1=64MiB THREE_L1=0 CLUSTER_L1=0; do
    name="${v%%=*}"
    [[ "${!name}" == "${v#*=}" ]] || REPRO+="$name=${!name@Q} "
done
[[ "$QUICK" == 1 && "$REPORTS" == 2000 || "$QUICK" != 1 && "$REPORTS" == 10000 ]] || REPRO+="REPORTS=$REPORTS "
[[ "$QUICK" == 1 && "$DURATION" == 5 || "$QUICK" != 1 && "$DURATION" == 60 ]] || REPRO+="DURATION=$DURATION "
meta repro "${REPRO}bash bench/realistic.sh"
for v in QUICK SEED REPORTS DURATION CONNECTIONS COLD_SHARE GZIP_SHARE CACHE_MEM L1 THREE_L1 CLUSTER_L1; do
    meta "$v" "${!v}"
done
[[ -s "$TMP/perf.txt" ]] && cp "$TMP/perf.txt" "$TMP/results/perf.txt"

python3 "$REPO/bench/realistic_report.py" "$TMP" >"$REPORT"
echo
cat "$REPORT"
echo
log "report written to ${REPORT#"$REPO"/}"
