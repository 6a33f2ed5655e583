#!/usr/bin/env bash
# bench/morning.sh: the 9:00 meeting of issue 15, on loopback, in one command from a fresh
# clone. See bench/README.md ("morning.sh") and bench/RESULTS.md ("The 9:00 morning").
#
# N distinct cold reports, each with its own fill time (seeded, uniform in MIN_MS..MAX_MS),
# each opened by M viewers at once, all N*M requests fired together
# (examples/morning_client.rs), through each system in turn, each in front of an origin of
# its own (examples/counting_origin.rs: takes the report's fill time, counts requests and
# the peak of requests in progress at once):
#   slate memory   one instance, [store] kind = "memory", upstream.max_fills = MAX_FILLS
#   slate redis    one instance, kind = "redis", max_fills = MAX_FILLS
#   slate x3       three instances on one redis-server, max_fills = MAX_FILLS over all three,
#                  the viewers spread round-robin over them
#   nginx          proxy_cache + proxy_cache_lock (timeout and age 60s), upstream server
#                  max_conns=MAX_FILLS with a shared zone (so the limit holds over workers)
#   varnish        backend .max_connections = MAX_FILLS, grace 1h
# Reported per system: upstream requests (target N), peak origin concurrency (target
# <= MAX_FILLS), viewers' p50/p99/max wait, non-200 answers.
#
# Then "a second morning" (skipped with SECOND=0): every report with a TTL short enough to run
# here, four systems side by side, each with an origin of its own: slate x3 with
# refresh_ahead, slate x3 without (today's behaviour), nginx and Varnish (as above, with that
# TTL; they serve stale while they refetch: proxy_cache_use_stale updating +
# proxy_cache_background_update, grace). On each: morning 1 as above; then one more viewer
# per report during its life (it is popular); then, once every entry of morning 1 is past its
# TTL, morning 2, the same N*M requests. Reported: the viewers of morning 2 that waited on a
# recompute (not a cache hit, or waited more than 500 ms; target 0), the stale answers, and
# the upstream requests of each phase.
#
# Environment (defaults in brackets):
#   N [60]  M [5]          reports, viewers of each
#   MAX_FILLS [4]          slate's upstream.max_fills, nginx's max_conns, Varnish's .max_connections
#   SEED [9]               seed of the fill times;  MIN_MS [1000]  MAX_MS [5000]
#   QUEUE_TIMEOUT [120s]   slate's upstream.queue_timeout (the default 30s is shorter than
#                          this morning's queue: N * 3 s / MAX_FILLS = 45 s)
#   SYSTEMS ["slate-memory slate-redis slate-x3 nginx varnish"]   part 1, in this order
#   SECOND [1]             0: no second morning
#   REFRESH_AHEAD [20]     seconds, slate's rule refresh_ahead in the second morning
#   TTL [computed]         seconds, the reports' TTL in the second morning: REFRESH_AHEAD +
#                          1.25 x the expected length of morning 1 + 15, so that morning 1
#                          ends well within every entry's life and the refreshed entries
#                          outlive morning 2
#   SLATE_BIN              a prebuilt slate: no build; the examples are then looked for in
#                          $(dirname SLATE_BIN)/examples (or COUNTING_ORIGIN_BIN, MORNING_CLIENT_BIN)
#   CARGO_TARGET_DIR       where cargo builds (default target/)
#   KEEP_TMP [0]           1: keep the temp dir (configs, logs, the driver's JSON)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export PATH="$PATH:/usr/sbin:/sbin"

N="${N:-60}"
M="${M:-5}"
MAX_FILLS="${MAX_FILLS:-4}"
SEED="${SEED:-9}"
MIN_MS="${MIN_MS:-1000}"
MAX_MS="${MAX_MS:-5000}"
QUEUE_TIMEOUT="${QUEUE_TIMEOUT:-120s}"
SYSTEMS="${SYSTEMS:-slate-memory slate-redis slate-x3 nginx varnish}"
SECOND="${SECOND:-1}"
REFRESH_AHEAD="${REFRESH_AHEAD:-20}"
KEEP_TMP="${KEEP_TMP:-0}"
SLOW_MS=500          # a morning-2 viewer that waited longer waited on a recompute
START_TIMEOUT_S=60
TOOLS="$REPO/bench/compare_tools.py"
BENCH_NAME=morning
APT_INSTALL_ENV=(RUNLEVEL=1) # no system service starts on install: this script runs its own

int_in "$N" 1 2000 || die "N must be 1..2000"
int_in "$M" 1 50 || die "M must be 1..50"
((N * M <= 20000)) || die "N * M must be at most 20000"
int_in "$MAX_FILLS" 1 1000 || die "MAX_FILLS must be 1..1000"
int_in "$SEED" 0 4294967295 || die "SEED must be a number"
int_in "$MIN_MS" 0 600000 || die "MIN_MS must be 0..600000"
int_in "$MAX_MS" "$MIN_MS" 600000 || die "MAX_MS must be MIN_MS..600000"
int_in "$REFRESH_AHEAD" 1 3600 || die "REFRESH_AHEAD must be 1..3600 (seconds)"
[[ "$QUEUE_TIMEOUT" =~ ^[0-9]+[sm]$ ]] || die "QUEUE_TIMEOUT must look like 120s or 2m"
for sys in $SYSTEMS; do
    case "$sys" in slate-memory | slate-redis | slate-x3 | nginx | varnish) ;;
    *) die "unknown system '$sys' in SYSTEMS" ;;
    esac
done

# ---------------------------------------------------------------- prerequisites
ensure_cmd redis-server redis-server
ensure_cmd redis-cli redis-tools
ensure_cmd nginx nginx-light
ensure_cmd varnishd varnish
ensure_cmd curl curl
ensure_cmd python3 python3
ensure_cmd cc gcc # varnishd compiles its VCL with the C compiler

build_slate --bin slate --example counting_origin --example morning_client
COUNTING_ORIGIN_BIN="${COUNTING_ORIGIN_BIN:-$(dirname "$SLATE_BIN")/examples/counting_origin}"
MORNING_CLIENT_BIN="${MORNING_CLIENT_BIN:-$(dirname "$SLATE_BIN")/examples/morning_client}"
for b in "$SLATE_BIN" "$COUNTING_ORIGIN_BIN" "$MORNING_CLIENT_BIN"; do
    [[ -x "$b" ]] || die "binary not found or not executable: $b"
done
# Every viewer holds a connection, through every proxy and to the origin.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The fill times of the seed: their sum over MAX_FILLS is the shortest a morning can take
# with MAX_FILLS fills at once (the longest fill, if that is longer).
DRIVER=("$MORNING_CLIENT_BIN" --reports "$N" --viewers "$M" --seed "$SEED" --min-ms "$MIN_MS"
    --max-ms "$MAX_MS" --slow-ms "$SLOW_MS")
read -r FILL_SUM_MS FILL_MAX_MS <<<"$("${DRIVER[@]}" --dry 1 | python3 -c '
import json, sys; d = json.load(sys.stdin); print(d["fill_ms_sum"], d["fill_ms_max"])')"
IDEAL_S="$(awk -v s="$FILL_SUM_MS" -v m="$FILL_MAX_MS" -v f="$MAX_FILLS" 'BEGIN {
    t = s / f / 1000; if (m / 1000 > t) t = m / 1000; printf "%.1f", t }')"
TTL="${TTL:-$(awk -v i="$IDEAL_S" -v r="$REFRESH_AHEAD" 'BEGIN { printf "%d", r + 1.25 * i + 15 + 0.999 }')}"
int_in "$TTL" 2 86400 || die "TTL must be 2..86400 (seconds)"
((TTL > REFRESH_AHEAD)) || die "TTL ($TTL) must be more than REFRESH_AHEAD ($REFRESH_AHEAD)"
log "$N reports x $M viewers, fill times $MIN_MS-$MAX_MS ms (seed $SEED): sum ${FILL_SUM_MS} ms," \
    "longest ${FILL_MAX_MS} ms; with $MAX_FILLS at once a morning takes at least ${IDEAL_S}s"

STAMP="$(date -u '+%Y%m%d-%H%M%S')"
mkdir -p "$REPO/bench/out"
REPORT="$REPO/bench/out/morning-$STAMP.md"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

make_tmp slate-morning
cleanup_extra_pids() { python3 "$TOOLS" tree "$1" 2>/dev/null; }
mkdir -p "$TMP/out"

# ---------------------------------------------------------------- origins and redis
# One origin per system and part, so each one's counts and peak are its own.
PART1_SYSTEMS=(slate-memory slate-redis slate-x3 nginx varnish)
PART2_SYSTEMS=(ahead plain nginx2 varnish2)
declare -A ORIGIN_PORT=()
for o in "${PART1_SYSTEMS[@]}" "${PART2_SYSTEMS[@]}"; do
    free_port "ORIGIN_PORT[$o]"
    log "starting origin for $o (examples/counting_origin) on 127.0.0.1:${ORIGIN_PORT[$o]}"
    start "origin-$o" "$COUNTING_ORIGIN_BIN" --listen "127.0.0.1:${ORIGIN_PORT[$o]}" --delay-ms 0 \
        --body-size 20480
    wait_http "origin-$o" "$LAST_PID" "http://127.0.0.1:${ORIGIN_PORT[$o]}/stats"
done
free_port REDIS_PORT
start_redis "$REDIS_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

# ---------------------------------------------------------------- slate
# write_config NAME PROXY_PORT ADMIN_PORT ORIGIN NAMESPACE STORE_TOML RULES_TOML (start_slate's)
write_config() {
    cat >"$TMP/$1.toml" <<EOF
# generated by bench/morning.sh
$(config_head "$2" "$3" "http://127.0.0.1:${ORIGIN_PORT[$4]}")
# The 9:00 queue: at most $MAX_FILLS reports computed at once (over every instance on the
# store); the rest wait their turn, up to queue_timeout (the default 30s is shorter than
# this morning's queue).
max_fills = $MAX_FILLS
queue_timeout = "$QUEUE_TIMEOUT"

[cache]
namespace = "$5"

[store]
$6

$7
EOF
}
declare -A TARGETS=() ADMINS=()
REDIS_STORE="kind = \"redis\"
url = \"$REDIS_URL\""
# slate_system SYS ORIGIN NAMESPACE INSTANCES STORE_TOML RULES_TOML: INSTANCES slates, their
# proxy URLs in TARGETS[SYS] and admin URLs in ADMINS[SYS] (comma-separated).
slate_system() {
    local sys="$1" origin="$2" ns="$3" n="$4" i admin
    for ((i = 1; i <= n; i++)); do
        start_slate "$sys-$i" "$origin" "$ns" "$5" "$6"
        admin="$(sed -n 's/^admin_listen = "\(.*\)"$/\1/p' "$TMP/$sys-$i.toml")"
        TARGETS[$sys]+="${TARGETS[$sys]:+,}http://127.0.0.1:$LAST_PORT"
        ADMINS[$sys]+="${ADMINS[$sys]:+,}http://$admin"
    done
}
slate_system slate-memory slate-memory m-memory 1 'kind = "memory"' "$CACHE_ALL"
slate_system slate-redis slate-redis m-redis 1 "$REDIS_STORE" "$CACHE_ALL"
slate_system slate-x3 slate-x3 m-x3 3 "$REDIS_STORE" "$CACHE_ALL"
if [[ "$SECOND" == 1 ]]; then
    slate_system ahead ahead m-ahead 3 "$REDIS_STORE" "[[rules]]
path = \"/\"
ttl = \"${TTL}s\"
refresh_ahead = \"${REFRESH_AHEAD}s\""
    slate_system plain plain m-plain 3 "$REDIS_STORE" "[[rules]]
path = \"/\"
ttl = \"${TTL}s\""
fi

# ---------------------------------------------------------------- nginx
# As its users would protect a back end: proxy_cache_lock (one request per report fills its
# cache element, the others wait for it, up to 60 s instead of the default 5 s, and no
# second request for it before 60 s either), the upstream's max_conns with a shared zone
# (without `zone`, the limit would be per worker), stale copies while a refresh runs
# (use_stale updating + background_update, nginx's grace). /p1/: part 1 (cached 1h); /p2/:
# the second morning (cached TTL s). nginx has no queue for max_conns (that is nginx Plus's
# `queue`): a request past the limit gets 502 at once.
free_port NGINX_PORT
nginx_prelude
mkdir -p "$NGX/cache2"
cat >"$NGX/nginx.conf" <<EOF
# generated by bench/morning.sh
$NGX_USER
worker_processes auto;
worker_rlimit_nofile 65536;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $NGX/temp/client;
    proxy_temp_path $NGX/temp/proxy;
    fastcgi_temp_path $NGX/temp/fastcgi;
    uwsgi_temp_path $NGX/temp/uwsgi;
    scgi_temp_path $NGX/temp/scgi;
    proxy_cache_path $NGX/cache levels=1:2 keys_zone=part1:16m inactive=1d use_temp_path=off;
    proxy_cache_path $NGX/cache2 levels=1:2 keys_zone=part2:16m inactive=1d use_temp_path=off;
    upstream reports1 {
        zone reports1 64k;
        server 127.0.0.1:${ORIGIN_PORT[nginx]} max_conns=$MAX_FILLS;
    }
    upstream reports2 {
        zone reports2 64k;
        server 127.0.0.1:${ORIGIN_PORT[nginx2]} max_conns=$MAX_FILLS;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        proxy_cache_key \$request_uri;
        proxy_cache_lock on;
        proxy_cache_lock_timeout 60s;
        proxy_cache_lock_age 60s;
        proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
        proxy_cache_background_update on;
        proxy_read_timeout 60s;
        add_header X-Cache-Status \$upstream_cache_status always;
        location = /__ready { return 200 "ok\n"; }
        location /p1/ {
            proxy_cache part1;
            proxy_cache_valid 200 1h;
            proxy_pass http://reports1;
        }
        location /p2/ {
            proxy_cache part2;
            proxy_cache_valid 200 ${TTL}s;
            proxy_pass http://reports2;
        }
    }
}
EOF
start_nginx "$NGINX_PORT"
TARGETS[nginx]="http://127.0.0.1:$NGINX_PORT"
TARGETS[nginx2]="http://127.0.0.1:$NGINX_PORT"

# ---------------------------------------------------------------- varnish
# Request coalescing is Varnish's own (the waiting list); the back end is protected by the
# backend's .max_connections (a fetch past it fails at once: 503 "Backend fetch failed", as
# Varnish 7.1 has no queue for backend connections), and grace serves a stale copy while
# one background fetch refreshes it. first_byte_timeout 60s: no fill is cut short.
free_port VARNISH_PORT
cat >"$TMP/morning.vcl" <<EOF
# generated by bench/morning.sh
vcl 4.1;

backend reports1 {
    .host = "127.0.0.1";
    .port = "${ORIGIN_PORT[varnish]}";
    .max_connections = $MAX_FILLS;
    .first_byte_timeout = 60s;
}
backend reports2 {
    .host = "127.0.0.1";
    .port = "${ORIGIN_PORT[varnish2]}";
    .max_connections = $MAX_FILLS;
    .first_byte_timeout = 60s;
}

sub vcl_recv {
    if (req.url == "/__ready") {
        return (synth(200, "ok"));
    }
    if (req.url ~ "^/p2/") {
        set req.backend_hint = reports2;
    } else {
        set req.backend_hint = reports1;
    }
}

sub vcl_backend_response {
    if (bereq.url ~ "^/p2/") {
        set beresp.ttl = ${TTL}s;
    } else {
        set beresp.ttl = 1h;
    }
    set beresp.grace = 1h;
}
EOF
start_varnish "$VARNISH_PORT" "$TMP/morning.vcl"
TARGETS[varnish]="http://127.0.0.1:$VARNISH_PORT"
TARGETS[varnish2]="http://127.0.0.1:$VARNISH_PORT"

# ---------------------------------------------------------------- measuring
origin_stats() { curl -fsS --max-time 5 "http://127.0.0.1:${ORIGIN_PORT[$1]}/stats"; }
# origin_idle ORIGIN: waits (at most 90 s) until nothing is in progress at the origin
# (background refreshes of nginx and Varnish end after their clients were answered).
origin_idle() {
    local i
    for ((i = 0; i < 900; i++)); do
        [[ "$(origin_stats "$1")" == *'"in_flight":0}'* ]] && return 0
        sleep 0.1
    done
    log "warning: the origin of $1 still has requests in progress after 90 s"
}
# slate_metrics SYS: the queue and refresh-ahead counters summed over SYS's instances, JSON.
slate_metrics() {
    local admins="${ADMINS[$1]:-}" a
    [[ -n "$admins" ]] || {
        printf 'null'
        return 0
    }
    for a in ${admins//,/ }; do
        curl -fsS --max-time 5 "$a/metrics" || true
    done | awk '
        BEGIN { split("slate_fill_queue_timeouts_total slate_fill_queue_refused_total slate_fill_queue_dropped_total slate_refreshed_ahead_total slate_misses_after_hits_total", names, " ")
                for (i in names) want[names[i]] = 1 }
        { n = $1; sub(/\{.*/, "", n) }
        (n in want) { sum[n] += $NF }
        END { printf "{"; sep = ""
              for (i = 1; i in names; i++) { printf "%s\"%s\":%d", sep, names[i], sum[names[i]]; sep = "," }
              printf "}" }'
}
# drive SYS PREFIX OUT [DRIVER_ARGS...]: the driver against SYS's targets; its JSON in OUT.
drive() {
    local sys="$1" prefix="$2" out="$3"
    shift 3
    "${DRIVER[@]}" --targets "${TARGETS[$sys]}" --prefix "$prefix" "$@" >"$out" 2>"$out.err" ||
        die "morning_client failed against $sys: $(cat "$out.err")"
}
# phase_json NAME ORIGIN: {"client":..., "origin":...} of a phase whose driver output is
# $TMP/out/NAME.json, once the origin is idle.
phase_json() {
    origin_idle "$2"
    printf '{"client":%s,"origin":%s}' "$(cat "$TMP/out/$1.json")" "$(origin_stats "$2")"
}

for sys in $SYSTEMS; do
    log "morning on $sys: $N reports x $M viewers at once (${TARGETS[$sys]})"
    drive "$sys" /p1/ "$TMP/out/p1-$sys.json"
    printf '{"sys":"%s","phase":%s,"metrics":%s}\n' "$sys" "$(phase_json "p1-$sys" "$sys")" \
        "$(slate_metrics "$sys")" >>"$TMP/part1.jsonl"
    log "  $(cut -c1-200 "$TMP/out/p1-$sys.json")"
done

# second_morning SYS: morning 1, one more viewer per report, morning 2 once every entry of
# morning 1 is past its TTL. One line of JSON in $TMP/part2-SYS.json.
second_morning() {
    local sys="$1" t0 max_s at now
    t0="$(date +%s.%N)"
    drive "$sys" /p2/ "$TMP/out/m1-$sys.json" --ttl-s "$TTL"
    local m1 again m2
    m1="$(phase_json "m1-$sys" "$sys")"
    drive "$sys" /p2/ "$TMP/out/again-$sys.json" --ttl-s "$TTL" --viewers 1
    again="$(phase_json "again-$sys" "$sys")"
    # The last entry of morning 1 was stored before its last viewer was answered.
    max_s="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["max_ms"] / 1000)' "$TMP/out/m1-$sys.json")"
    at="$(awk -v a="$t0" -v m="$max_s" -v t="$TTL" 'BEGIN { printf "%.1f", a + m + t + 3 }')"
    now="$(date +%s.%N)"
    log "second morning, $sys: morning 2 in $(awk -v a="$at" -v b="$now" 'BEGIN { printf "%.0f", a - b }')s"
    sleep "$(awk -v a="$at" -v b="$now" 'BEGIN { d = a - b; printf "%.1f", (d > 0 ? d : 0) }')"
    local before
    before="$(origin_stats "$sys")"
    drive "$sys" /p2/ "$TMP/out/m2-$sys.json" --ttl-s "$TTL"
    m2="$(phase_json "m2-$sys" "$sys")"
    printf '{"sys":"%s","m1":%s,"again":%s,"before_m2":%s,"m2":%s,"metrics":%s}\n' "$sys" \
        "$m1" "$again" "$before" "$m2" "$(slate_metrics "$sys")" >"$TMP/part2-$sys.json"
}
if [[ "$SECOND" == 1 ]]; then
    # Side by side: each waits out the TTL on its own clock; the waits dominate, not CPU.
    log "second morning (TTL ${TTL}s, refresh_ahead ${REFRESH_AHEAD}s) on ${PART2_SYSTEMS[*]}, side by side"
    pids=()
    for sys in "${PART2_SYSTEMS[@]}"; do
        second_morning "$sys" &
        pids+=("$!")
    done
    for p in "${pids[@]}"; do
        wait "$p" || die "the second morning failed (see above)"
    done
    cat "$TMP"/part2-*.json >"$TMP/part2.jsonl"
fi

# ---------------------------------------------------------------- report
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    COMMIT+=" with uncommitted changes in src/"
fi
[[ -n "${SLATE_BIN_GIVEN:-}" ]] && COMMIT="(prebuilt SLATE_BIN=$SLATE_BIN; work tree at $COMMIT)"
REPRO=""
for v in N=60 M=5 MAX_FILLS=4 SEED=9 MIN_MS=1000 MAX_MS=5000 QUEUE_TIMEOUT=120s SECOND=1 REFRESH_AHEAD=20; do
    name="${v%%=*}"
    [[ "${!name}" == "${v#*=}" ]] || REPRO+="$name=${!name@Q} "
done
[[ "$SYSTEMS" == "slate-memory slate-redis slate-x3 nginx varnish" ]] || REPRO+="SYSTEMS=${SYSTEMS@Q} "
{
    echo "# The 9:00 morning: bench/morning.sh"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT. Machine: $(nproc) cores," \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
        "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory;" \
        "load average before the run: $LOAD_BEFORE."
    echo "$("$SLATE_BIN" --version 2>&1 | head -n 1); $(nginx -v 2>&1 | head -n 1);" \
        "$(varnishd -V 2>&1 | head -n 1); $(redis-server --version | cut -d' ' -f1-3)."
    echo
    python3 - "$TMP/part1.jsonl" "$TMP/part2.jsonl" <<EOF
import json, sys
N, M, MAX_FILLS, TTL, RA = $N, $M, $MAX_FILLS, $TTL, $REFRESH_AHEAD
LABEL = {"slate-memory": "slate memory", "slate-redis": "slate redis", "slate-x3": "slate x3 (one Redis)",
         "nginx": "nginx", "varnish": "varnish", "ahead": "slate x3, refresh_ahead ${REFRESH_AHEAD}s",
         "plain": "slate x3, no refresh_ahead", "nginx2": "nginx (stale while updating)",
         "varnish2": "varnish (grace)"}
def lines(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip()]
    except FileNotFoundError:
        return []
def non200(c):
    bad = {k: v for k, v in c["status"].items() if k != "200"}
    return ", ".join(f"{v} × {k}" for k, v in sorted(bad.items())) or "0"
def tally(c):
    return "; ".join(f"\`{k}\` {v}" for k, v in sorted(c["cache"].items(), key=lambda kv: -kv[1]))
def s(ms):
    return f"{ms / 1000:.2f}"
def ok(cond):
    return "met" if cond else "**missed**"
print(f"{N} distinct cold reports, each opened by {M} viewers at once: {N * M} requests fired together "
      f"(each viewer on a connection of its own, opened first). Each report's fill time is drawn uniformly "
      f"from $MIN_MS-$MAX_MS ms (seed $SEED): {$FILL_SUM_MS / 1000:.1f} s in all, the longest {$FILL_MAX_MS / 1000:.1f} s, "
      f"so with {MAX_FILLS} fills at once the last report cannot be ready before **${IDEAL_S} s**. "
      f"Back-end limit: slate \`upstream.max_fills = {MAX_FILLS}\` (\`queue_timeout = \"$QUEUE_TIMEOUT\"\`), "
      f"nginx \`max_conns={MAX_FILLS}\`, Varnish \`.max_connections = {MAX_FILLS}\`. Waits: from the moment "
      f"all requests are sent to the last byte of each answer, over all viewers (errors included).")
print()
print(f"| system | upstream requests (target {N}) | peak origin concurrency (target ≤ {MAX_FILLS}) | "
      "viewers with 200 | non-200 / errors | p50 wait s | p99 wait s | max wait s | cache headers |")
print("|---|---:|---:|---:|---|---:|---:|---:|---|")
for r in lines(sys.argv[1]):
    c, o = r["phase"]["client"], r["phase"]["origin"]
    print(f"| {LABEL[r['sys']]} | {o['requests']} ({ok(o['requests'] == N)}) | {o['peak']} ({ok(o['peak'] <= MAX_FILLS)}) | "
          f"{c['ok']} of {c['count']} | {non200(c)} | {s(c['p50_ms'])} | {s(c['p99_ms'])} | {s(c['max_ms'])} | {tally(c)} |")
print()
part2 = {r["sys"]: r for r in lines(sys.argv[2])}
if part2:
    print(f"**A second morning.** Every report cached for {TTL} s (slate: the rule's \`ttl\`; nginx "
          f"\`proxy_cache_valid\`; Varnish \`beresp.ttl\`, grace 1h), four systems side by side, each with an "
          f"origin of its own. Morning 1 as above; then one more viewer per report during its life; then, "
          f"once every entry of morning 1 is past its TTL (the longest wait of morning 1 + {TTL} s + 3 s "
          f"after morning 1 started), morning 2: the same {N * M} requests. \"Waited on a recompute\": "
          f"a viewer of morning 2 whose answer was not a cache hit, or came after more than $SLOW_MS ms "
          f"(target 0). Stale: a hit past its freshness (slate \`ttl=-N\`, nginx \`STALE\`/\`UPDATING\`, "
          f"Varnish an \`Age\` above the TTL).")
    print()
    print("| system | morning 1: upstream, peak, max wait s, non-200 | refetched between the mornings | "
          "morning 2: waited on a recompute (target 0) | stale answers | p50 / p99 / max wait s | non-200 | "
          "morning 2 upstream | cache headers |")
    print("|---|---|---:|---:|---:|---|---|---:|---|")
    for sysname in ["ahead", "plain", "nginx2", "varnish2"]:
        r = part2.get(sysname)
        if not r:
            continue
        m1, a, b, m2 = r["m1"], r["again"], r["before_m2"], r["m2"]
        c1, c2 = m1["client"], m2["client"]
        between = b["requests"] - a["origin"]["requests"] + (a["origin"]["requests"] - m1["origin"]["requests"])
        print(f"| {LABEL[sysname]} | {m1['origin']['requests']}, {m1['origin']['peak']}, {s(c1['max_ms'])}, {non200(c1)} | "
              f"{between} | {c2['recompute']} of {c2['count']} ({ok(c2['recompute'] == 0)}) | {c2['stale']} | "
              f"{s(c2['p50_ms'])} / {s(c2['p99_ms'])} / {s(c2['max_ms'])} | {non200(c2)} | "
              f"{m2['origin']['requests'] - b['requests']} | {tally(c2)} |")
    print()
    ahead = part2.get("ahead", {}).get("metrics")
    if ahead:
        print(f"slate x3 with refresh_ahead, summed over its instances: \`slate_refreshed_ahead_total\` "
              f"{ahead['slate_refreshed_ahead_total']}, \`slate_misses_after_hits_total\` "
              f"{ahead['slate_misses_after_hits_total']}, queue timeouts {ahead['slate_fill_queue_timeouts_total']}, "
              f"503s from the queue {ahead['slate_fill_queue_refused_total']}. "
              f"\"Refetched between the mornings\": origin requests from the end of morning 1 to the start of "
              f"morning 2 (the one more viewer per report included: for a cache, hits that cost nothing). "
              f"\"Morning 2 upstream\": origin requests from the start of morning 2 until the origin was idle "
              f"again (nginx's and Varnish's background refreshes included).")
        print()
EOF
    echo "Reproduce: \`${REPRO}bash bench/morning.sh\`"
} >"$REPORT"

echo
cat "$REPORT"
echo
log "report written to ${REPORT#"$REPO"/}"
