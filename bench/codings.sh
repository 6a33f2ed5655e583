#!/usr/bin/env bash
# bench/codings.sh: bodies stored compressed (issue 14, "one report, one computation"), the
# performance part, on loopback, in one command from a fresh clone. See bench/README.md.
#
# An origin of generated JSON sales reports (examples/report_origin.rs: rows of dates,
# regions, products and numbers, identity only, /report?id=N&size=S) and, in front of it:
#   1. Redis bytes per report: three slates on one Redis (l1 = "0"), `cache.compress` gzip,
#      zstd and off, filled with SIZES reports of 20 KB to 2 MB; STRLEN of each entry's key
#      against the report's size.
#   2. Hits for gzip clients (wrk -H 'Accept-Encoding: gzip') on a HOT_SIZE (150 KiB)
#      report: slate L1 (kind = "redis", l1 = "64MiB"), slate memory, nginx proxy_cache with
#      `gzip on` (its default gzip_comp_level 1, and a second server at level 6) and Varnish
#      with `beresp.do_gzip = true`; req/s, p50/p99, server CPU and bytes on the wire per
#      answer, in interleaved rounds.
#   3. Hits for identity clients (no Accept-Encoding) on the same report, same rounds: slate
#      decodes its gzip per hit, Varnish gunzips, nginx sends the identity it cached.
#   4. The miss cost of compressing at fill time: a 2 MB report, every request a new URL, one
#      connection, slate with compress = "gzip" against compress = "off" (and the origin
#      directly), for identity and for gzip clients; p50 of each and the differences.
# Each system is checked first (and again after the rounds): gzip to a gzip client that
# gunzips to the origin's bytes, identity to the others, the second request a hit.
# Prints one Markdown report and writes it to bench/out/codings-<timestamp>.md.
#
# Environment (defaults in brackets):
#   DURATION [8s]        length of each hit run;  MISS_DURATION [5s]  of each miss run
#   ROUNDS [3]           interleaved rounds (medians reported)
#   THREADS [2], CONNECTIONS [64]   wrk, hit runs (miss runs: one connection)
#   HOT_SIZE [153600]    the hit runs' report, bytes;  MISS_SIZE [2097152]  the miss runs'
#   SIZES [20]           reports of the Redis-bytes test, sizes spread 20 KB .. 2 MB
#   ORIGIN_DELAY_MS [200] the delay of the origin behind the hit systems
#   WAIT_QUIET [0]       redo a run during which other processes used >= 10% of the machine,
#                        waiting for quiet: this many seconds of waiting in all, at most
#   PERF [0]             1: after the rounds, `perf record` slate L1 during one gzip and one
#                        identity run; the top symbols go into the report
#   SLATE_BIN            a prebuilt slate: no build; report_origin is then looked for in
#                        $(dirname SLATE_BIN)/examples (or REPORT_ORIGIN_BIN)
#   CARGO_TARGET_DIR     where cargo builds (default target/)
#   KEEP_TMP [0]         1: keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export PATH="$PATH:/usr/sbin:/sbin"

DURATION="${DURATION:-8s}"
MISS_DURATION="${MISS_DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
HOT_SIZE="${HOT_SIZE:-153600}"
MISS_SIZE="${MISS_SIZE:-2097152}"
SIZES="${SIZES:-20}"
ORIGIN_DELAY_MS="${ORIGIN_DELAY_MS:-200}"
WAIT_QUIET="${WAIT_QUIET:-0}"
PERF="${PERF:-0}"
KEEP_TMP="${KEEP_TMP:-0}"
SMALLEST=20480  # the Redis-bytes test's sizes: SMALLEST .. LARGEST, geometric
LARGEST=2097152
START_TIMEOUT_S=60
TOOLS="$REPO/bench/compare_tools.py"
BENCH_NAME=codings
APT_INSTALL_ENV=(RUNLEVEL=1) # no system nginx/varnish/redis service starts on install

for d in DURATION MISS_DURATION; do
    [[ "${!d}" =~ ^[0-9]+[sm]?$ ]] || die "$d must look like 10s, 2m or 10 (got '${!d}')"
done
DURATION_S="$(seconds "$DURATION")"
MISS_DURATION_S="$(seconds "$MISS_DURATION")"
int_in "$DURATION_S" 1 600 || die "DURATION must be 1s..10m"
int_in "$MISS_DURATION_S" 1 600 || die "MISS_DURATION must be 1s..10m"
int_in "$ROUNDS" 1 20 || die "ROUNDS must be 1..20"
int_in "$THREADS" 1 64 || die "THREADS must be 1..64"
int_in "$CONNECTIONS" "$THREADS" 10000 || die "CONNECTIONS must be THREADS..10000"
int_in "$HOT_SIZE" 1024 8000000 || die "HOT_SIZE must be 1024..8000000"
int_in "$MISS_SIZE" 1024 8000000 || die "MISS_SIZE must be 1024..8000000 (slate's max_object_size is 8 MiB)"
int_in "$SIZES" 2 200 || die "SIZES must be 2..200"
int_in "$ORIGIN_DELAY_MS" 0 10000 || die "ORIGIN_DELAY_MS must be 0..10000"
int_in "$WAIT_QUIET" 0 3600 || die "WAIT_QUIET must be 0..3600 (seconds)"

# ---------------------------------------------------------------- prerequisites
ensure_cmd wrk wrk
ensure_servers
ensure_cmd gzip gzip
if [[ "$PERF" == 1 ]]; then ensure_cmd perf linux-perf; fi

build_slate --bin slate --example report_origin
REPORT_ORIGIN_BIN="${REPORT_ORIGIN_BIN:-$(dirname "$SLATE_BIN")/examples/report_origin}"
for b in "$SLATE_BIN" "$REPORT_ORIGIN_BIN"; do
    [[ -x "$b" ]] || die "binary not found or not executable: $b (cargo build --release --bin slate --example report_origin)"
done

STAMP="$(date -u '+%Y%m%d-%H%M%S')"
mkdir -p "$REPO/bench/out"
REPORT="$REPO/bench/out/codings-$STAMP.md"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
make_tmp slate-codings
cleanup_extra_pids() { python3 "$TOOLS" tree "$1" 2>/dev/null; }
META="$TMP/meta" # key=value lines for the report
: >"$META"
meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }

# ---------------------------------------------------------------- origins, redis
free_port SLOW_PORT
free_port FAST_PORT
free_port REDIS_PORT
start_origin() { # start_origin NAME PORT DELAY_MS
    log "starting $1 (examples/report_origin, ${3} ms) on 127.0.0.1:$2"
    start "$1" "$REPORT_ORIGIN_BIN" --listen "127.0.0.1:$2" --delay-ms "$3"
    wait_http "$1" "$LAST_PID" "http://127.0.0.1:$2/__ready"
}
start_origin origin "$SLOW_PORT" "$ORIGIN_DELAY_MS"
# shellcheck disable=SC2153 # (free_port set it)
start_origin fast-origin "$FAST_PORT" 0
start_redis "$REDIS_PORT"
SLOW_URL="http://127.0.0.1:$SLOW_PORT"
FAST_URL="http://127.0.0.1:$FAST_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
HOT_PATH="/report?id=1&size=$HOT_SIZE"

# fetch URL AE OUT: one GET (with Accept-Encoding: AE unless AE is empty), the body as it
# came in OUT, headers in $TMP/headers; sets F_STATUS F_HEADER_BYTES F_BODY_BYTES.
fetch() {
    local out hdr=()
    [[ -n "$2" ]] && hdr=(-H "Accept-Encoding: $2")
    out="$(curl -sS --max-time 30 "${hdr[@]}" -o "$3" -D "$TMP/headers" \
        -w '%{http_code} %{size_header} %{size_download}' "$1")" || die "GET $1 failed"
    read -r F_STATUS F_HEADER_BYTES F_BODY_BYTES <<<"$out"
}
headers_line() { tr -d '\r' <"$TMP/headers" | tr '\n' '|'; }

# The reference bytes: the origin's own answer.
fetch "$FAST_URL$HOT_PATH" "" "$TMP/hot.json"
[[ "$F_STATUS" == 200 && "$F_BODY_BYTES" == "$HOT_SIZE" ]] ||
    die "origin: GET $HOT_PATH answered $F_STATUS with $F_BODY_BYTES bytes, expected 200 and $HOT_SIZE"
[[ "$(header content-type)" == application/json* && -z "$(header content-encoding)" ]] ||
    die "origin: expected identity application/json: $(headers_line)"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$TMP/hot.json" || die "origin: the report is not JSON"
meta hot_gzip6 "$(gzip -6 -c <"$TMP/hot.json" | wc -c)"
meta hot_gzip1 "$(gzip -1 -c <"$TMP/hot.json" | wc -c)"

# ---------------------------------------------------------------- slate instances
# write_config NAME PROXY_PORT ADMIN_PORT UPSTREAM_URL NAMESPACE STORE_TOML COMPRESS
write_config() {
    cat >"$TMP/$1.toml" <<EOF
# generated by bench/codings.sh
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"

[log]
level = "warn"

[upstream]
url = "$4"

[cache]
namespace = "$5"
compress = "$7"

[store]
$6

$CACHE_ALL
EOF
}
admin_of() { sed -n 's/^admin_listen = "\(.*\)"$/\1/p' "$TMP/$1.toml"; }

declare -A URL_OF=()
start_slate slate-l1 "$SLOW_URL" codings-l1 "kind = \"redis\"
url = \"$REDIS_URL\"
l1 = \"64MiB\"" gzip
URL_OF[slate-l1]="http://127.0.0.1:$LAST_PORT"
start_slate slate-memory "$SLOW_URL" codings-memory 'kind = "memory"' gzip
URL_OF[slate-memory]="http://127.0.0.1:$LAST_PORT"
for mode in gzip zstd off; do
    start_slate "size-$mode" "$FAST_URL" "codings-size-$mode" "kind = \"redis\"
url = \"$REDIS_URL\"
l1 = \"0\"" "$mode"
    URL_OF[size-$mode]="http://127.0.0.1:$LAST_PORT"
done
for mode in gzip off; do
    # every miss run stores up to a few hundred 2 MB entries: the memory bound evicts them
    start_slate "miss-$mode" "$FAST_URL" "codings-miss-$mode" 'kind = "memory"
memory_limit = "256MiB"' "$mode"
    URL_OF[miss-$mode]="http://127.0.0.1:$LAST_PORT"
done
URL_OF[miss-direct]="$FAST_URL"

# ---------------------------------------------------------------- nginx
# proxy_cache as in bench/compare.sh, plus gzip as its users turn it on. Two servers in one
# nginx: gzip_comp_level left at nginx's default (1), and at 6 (slate's and Varnish's level).
free_port NGINX_PORT
free_port NGINX6_PORT
nginx_prelude
ngx_server() { # ngx_server PORT EXTRA_DIRECTIVES
    cat <<EOF
    server {
        listen 127.0.0.1:$1 reuseport backlog=4096;
        $2
        location / {
            proxy_pass http://origin;
        }
    }
EOF
}
cat >"$NGX/nginx.conf" <<EOF
# generated by bench/codings.sh
$(nginx_conf_head "$NGX")
    proxy_cache_path $NGX/cache levels=1:2 keys_zone=codings:32m max_size=2g inactive=1h use_temp_path=off;

    # what its users write to have JSON answers compressed (nginx gzips each answer on the
    # fly; gzip_static applies to files, not to proxied answers)
    gzip on;
    gzip_proxied any;
    gzip_types application/json;
    gzip_vary on;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache codings;
    proxy_cache_key \$request_uri;
    proxy_cache_valid 200 1h;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 30s;
    add_header X-Cache-Status \$upstream_cache_status always;

    upstream origin {
        server 127.0.0.1:$SLOW_PORT;
        keepalive 64;
    }
$(ngx_server "$NGINX_PORT" "# gzip_comp_level: nginx's default, 1")
$(ngx_server "$NGINX6_PORT" "gzip_comp_level 6;")
}
EOF
start_nginx "$NGINX_PORT" "(gzip_comp_level 1) and :$NGINX6_PORT (6)"
URL_OF[nginx]="http://127.0.0.1:$NGINX_PORT"
URL_OF[nginx6]="http://127.0.0.1:$NGINX6_PORT"
PID_OF[nginx6]="${PID_OF[nginx]}"

# ---------------------------------------------------------------- varnish
free_port VARNISH_PORT
cat >"$TMP/codings.vcl" <<EOF
# generated by bench/codings.sh
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "$SLOW_PORT";
}

sub vcl_backend_response {
    set beresp.ttl = 1h;
    # store gzip; Varnish gunzips on delivery for clients without gzip
    set beresp.do_gzip = true;
}
EOF
start_varnish "$VARNISH_PORT" "$TMP/codings.vcl"
URL_OF[varnish]="http://127.0.0.1:$VARNISH_PORT"

# ---------------------------------------------------------------- checks
# hit_marker SYSTEM: how SYSTEM said "hit" in the last fetch; empty when it did not.
hit_marker() {
    local v
    case "$1" in
    slate-* | size-* | miss-*)
        v="$(header cache-status)"
        [[ "$v" == *hit* ]] && printf 'Cache-Status: %s' "$v"
        ;;
    nginx*)
        v="$(header x-cache-status)"
        [[ "$v" == HIT ]] && printf 'X-Cache-Status: %s' "$v"
        ;;
    varnish)
        v="$(header x-varnish)"
        [[ "$v" =~ ^[0-9]+\ [0-9]+$ ]] && printf 'X-Varnish: %s' "$v"
        ;;
    esac
    return 0
}
# check_answer SYSTEM URL AE CODING REF NEED_HIT: a GET (with Accept-Encoding: AE unless
# empty) answers 200 in CODING: gzip, `Content-Encoding: gzip` and a body that gunzips to
# REF; identity, no Content-Encoding and REF's bytes; a hit when NEED_HIT is 1. Sets WIRE
# (header + body bytes) and MARKER.
check_answer() {
    local sys="$1" url="$2" ae="$3" coding="$4" ref="$5" need_hit="$6" ce what="identity client"
    [[ -n "$ae" ]] && what="Accept-Encoding: $ae"
    fetch "$url" "$ae" "$TMP/answer"
    [[ "$F_STATUS" == 200 ]] || die "$sys ($what): GET $url answered $F_STATUS: $(headers_line)"
    ce="$(header content-encoding)"
    if [[ "$coding" == gzip ]]; then
        [[ "$ce" == gzip ]] || die "$sys ($what): expected Content-Encoding: gzip: $(headers_line)"
        gzip -dc <"$TMP/answer" >"$TMP/answer.decoded" 2>"$TMP/gunzip.log" ||
            die "$sys: the gzip body does not gunzip: $(cat "$TMP/gunzip.log")"
        cmp -s "$TMP/answer.decoded" "$ref" || die "$sys: the gzip body does not gunzip to the origin's report"
    else
        [[ -z "$ce" || "$ce" == identity ]] || die "$sys ($what): expected identity, got Content-Encoding: $ce"
        cmp -s "$TMP/answer" "$ref" ||
            die "$sys ($what): the body is not the origin's report ($F_BODY_BYTES bytes, expected $(wc -c <"$ref"))"
    fi
    WIRE=$((F_HEADER_BYTES + F_BODY_BYTES))
    MARKER="$(hit_marker "$sys")"
    if [[ "$need_hit" == 1 && -z "$MARKER" ]]; then
        die "$sys ($what): GET $url was not a cache hit: $(headers_line)"
    fi
}
HIT_SYSTEMS=(slate-l1 slate-memory nginx nginx6 varnish)
declare -A WIRE_OF=() NOTE_OF=()
check_hits() { # check_hits WHEN: every hit system, gzip and identity clients, hits
    local sys
    for sys in "${HIT_SYSTEMS[@]}"; do
        check_answer "$sys" "${URL_OF[$sys]}$HOT_PATH" gzip gzip "$TMP/hot.json" 1
        WIRE_OF[gz:$sys]="$WIRE"
        NOTE_OF[gz:$sys]="$MARKER, $(header content-encoding), $F_BODY_BYTES body bytes"
        check_answer "$sys" "${URL_OF[$sys]}$HOT_PATH" "" identity "$TMP/hot.json" 1
        WIRE_OF[id:$sys]="$WIRE"
        NOTE_OF[id:$sys]="$MARKER, identity, $F_BODY_BYTES body bytes"
        log "$1: $sys: gzip ${NOTE_OF[gz:$sys]}; identity ${NOTE_OF[id:$sys]}"
    done
}
for sys in "${HIT_SYSTEMS[@]}"; do
    check_answer "$sys" "${URL_OF[$sys]}$HOT_PATH" "" identity "$TMP/hot.json" 0 # fills
done
check_hits "checked"
for sys in "${HIT_SYSTEMS[@]}"; do
    meta "wire_gz_$sys" "${WIRE_OF[gz:$sys]}"
    meta "wire_id_$sys" "${WIRE_OF[id:$sys]}"
    meta "note_gz_$sys" "${NOTE_OF[gz:$sys]}"
    meta "note_id_$sys" "${NOTE_OF[id:$sys]}"
done

# ---------------------------------------------------------------- 1. Redis bytes per report
log "Redis bytes per report: $SIZES reports, $SMALLEST..$LARGEST bytes, compress = gzip, zstd, off"
keys_of() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern "slate:$1:e:*" | sort; }
: >"$TMP/sizes"
for ((i = 0; i < SIZES; i++)); do
    size="$(awk -v a="$SMALLEST" -v b="$LARGEST" -v i="$i" -v n="$SIZES" \
        'BEGIN { printf "%d", a * exp(log(b / a) * i / (n - 1)) + 0.5 }')"
    id=$((100 + i))
    path="/report?id=$id&size=$size"
    fetch "$FAST_URL$path" "" "$TMP/size-ref.json"
    [[ "$F_STATUS" == 200 && "$F_BODY_BYTES" == "$size" ]] || die "origin: GET $path: $F_STATUS, $F_BODY_BYTES bytes"
    line="$id|$size|$(gzip -6 -c <"$TMP/size-ref.json" | wc -c)"
    for mode in gzip zstd off; do
        keys_of "codings-size-$mode" >"$TMP/keys-before"
        check_answer "size-$mode" "${URL_OF[size-$mode]}$path" "" identity "$TMP/size-ref.json" 0
        # a gzip client gets the stored gzip, or identity decoded from zstd, or the identity stored
        coding=identity
        [[ "$mode" == gzip ]] && coding=gzip
        check_answer "size-$mode" "${URL_OF[size-$mode]}$path" gzip "$coding" "$TMP/size-ref.json" 1
        keys_of "codings-size-$mode" >"$TMP/keys-after"
        new="$(comm -13 "$TMP/keys-before" "$TMP/keys-after")"
        [[ -n "$new" ]] || die "size-$mode: no new slate:codings-size-$mode:e:* key in Redis after filling $path"
        bytes=0
        nkeys=0
        while read -r k; do
            [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" type "$k")" == string ]] || die "$k is not a Redis string"
            bytes=$((bytes + $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" strlen "$k")))
            nkeys=$((nkeys + 1))
        done <<<"$new"
        line+="|$bytes|$nkeys"
    done
    echo "$line" >>"$TMP/sizes"
done
# slate's own count of what it stored against the identity bytes (cross-check of STRLEN)
for mode in gzip zstd off; do
    curl -fsS --max-time 5 "http://$(admin_of "size-$mode")/metrics" >"$TMP/metrics-$mode" ||
        die "size-$mode: GET /metrics failed"
    meta "stored_$mode" "$(awk '/^slate_stored_body_bytes_total/ { print $2 }' "$TMP/metrics-$mode")"
    meta "stored_identity_$mode" "$(awk '/^slate_stored_identity_bytes_total/ { print $2 }' "$TMP/metrics-$mode")"
done

# ---------------------------------------------------------------- the miss runs' checks
# Every miss request is a new URL of the same report (the origin ignores `n`).
cat >"$TMP/miss.lua" <<'EOF'
-- every request a new URL: /report?id=7&size=SIZE&n=TAG-THREAD-COUNTER (args: SIZE TAG)
local threads = 0
function setup(thread)
   thread:set("tid", threads)
   threads = threads + 1
end
function init(args)
   size = args[1]
   tag = args[2]
   n = 0
end
function request()
   n = n + 1
   return wrk.format("GET", "/report?id=7&size=" .. size .. "&n=" .. tag .. "-" .. tid .. "-" .. n)
end
EOF
MISS_PATH="/report?id=7&size=$MISS_SIZE"
fetch "$FAST_URL$MISS_PATH" "" "$TMP/miss.json"
[[ "$F_STATUS" == 200 && "$F_BODY_BYTES" == "$MISS_SIZE" ]] || die "origin: GET $MISS_PATH: $F_STATUS, $F_BODY_BYTES bytes"
for mode in gzip off; do
    for ae in "" gzip; do
        url="${URL_OF[miss-$mode]}$MISS_PATH&n=check-${ae:-id}"
        coding=identity
        [[ "$mode" == gzip && "$ae" == gzip ]] && coding=gzip
        check_answer "miss-$mode" "$url" "$ae" "$coding" "$TMP/miss.json" 0
        [[ "$(header cache-status)" == *miss* ]] || die "miss-$mode: a new URL was not a miss: $(headers_line)"
        meta "note_miss_${mode}_${ae:-id}" "$(header cache-status); ${F_BODY_BYTES} body bytes"
        check_answer "miss-$mode" "$url" "$ae" "$coding" "$TMP/miss.json" 1 # it was stored
    done
done

# ---------------------------------------------------------------- wrk runs
CLK_TCK="$(getconf CLK_TCK)"
server_pids() { # the processes that answer for SYSTEM (with their children)
    case "$1" in
    slate-l1) echo "${PID_OF[slate-l1]} ${PID_OF[redis]}" ;;
    miss-direct) echo "${PID_OF[fast-origin]}" ;;
    *) echo "${PID_OF[$1]}" ;;
    esac
}
# outcomes NAME: "misses others" that slate NAME counted so far (slate_requests_total)
outcomes() {
    curl -fsS --max-time 5 "http://$(admin_of "$1")/metrics" |
        awk '/^slate_requests_total\{/ { if ($1 ~ /outcome="miss"/) m += $2; else o += $2 }
             END { printf "%d %d\n", m, o }'
}
redis_gets() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats |
        sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' | head -n 1
}
# wrk_totals FILE: "requests bytes" from wrk's "N requests in Ts, X read" (X in binary units)
wrk_totals() {
    awk '/ requests in / {
        v = $5; u = v; sub(/^[0-9.]+/, "", u); n = v + 0
        m = (u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : 1
        printf "%d %.0f\n", $1, n * m; found = 1 }
        END { if (!found) exit 1 }' "$1"
}

# run_wrk KIND ROUND: KIND is gz:SYSTEM, id:SYSTEM (hits) or miss-MODE:AE (misses). One
# line to $TMP/last: kind|round|req/s|p50|p99|errors|foreign %|server CPU µs/answer|
# wire bytes/answer|Redis GETs/answer (slate L1) or misses/answer (the miss runs of slate)
run_wrk() {
    local kind="$1" round="$2" sys ae raw args=() url before after stats pids t0 t1 g0="" g1="" gets="-"
    local n bytes cpu wire m0 o0 m1 o1
    raw="$TMP/wrk-${kind//:/-}-$round.txt"
    case "$kind" in
    gz:* | id:*)
        sys="${kind#*:}"
        ae="${kind%%:*}"
        url="${URL_OF[$sys]}$HOT_PATH"
        args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION")
        ;;
    miss-*)
        sys="${kind%%:*}"
        ae="${kind#*:}"
        url="${URL_OF[$sys]}"
        args=(-t1 -c1 -d"$MISS_DURATION" -s "$TMP/miss.lua")
        ;;
    esac
    [[ "$ae" == gz ]] && args+=(-H 'Accept-Encoding: gzip')
    # (the tag makes every run's URLs new: no run finds what an earlier one stored)
    [[ "$kind" == miss-* ]] && args+=("$url" -- "$MISS_SIZE" "${kind//:/-}-r$round") || args+=("$url")
    pids="$(server_pids "$sys")"
    log "round $round: $kind: wrk ${args[*]}"
    before="$(cpu_sample)"
    # shellcheck disable=SC2086 # a list of pids
    t0="$(python3 "$TOOLS" ticks $pids)"
    [[ "$sys" == slate-l1 ]] && g0="$(redis_gets)"
    [[ "$sys" == miss-gzip || "$sys" == miss-off ]] && read -r m0 o0 <<<"$(outcomes "$sys")"
    timeout $((DURATION_S + MISS_DURATION_S + 60)) wrk --timeout 10s --latency "${args[@]}" >"$raw" 2>&1 ||
        die "wrk failed for $kind: $(cat "$raw")"
    [[ -n "$g0" ]] && g1="$(redis_gets)"
    if [[ -n "${m0:-}" ]]; then
        read -r m1 o1 <<<"$(outcomes "$sys")"
        ((o1 == o0)) || die "$kind: slate answered $((o1 - o0)) requests of the run other than as misses (not new URLs?)"
    fi
    # shellcheck disable=SC2086
    t1="$(python3 "$TOOLS" ticks $pids)"
    after="$(cpu_sample)"
    stats="$(wrk_stats "$raw")" || die "could not parse wrk output for $kind: $(cat "$raw")"
    read -r n bytes <<<"$(wrk_totals "$raw")" || die "no request count in the wrk output for $kind"
    cpu="$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')"
    wire="$(awk -v b="$bytes" -v n="$n" 'BEGIN { printf "%.0f", (n > 0 ? b / n : 0) }')"
    [[ -n "$g1" ]] && gets="$(awk -v d="$((g1 - g0))" -v n="$n" 'BEGIN { printf "%.4f", (n > 0 ? d / n : 0) }')"
    # (wrk does not count the request it leaves in flight at the end: slate may have)
    [[ -n "${m1:-}" ]] && gets="$(awk -v d="$((m1 - m0))" -v n="$n" 'BEGIN { printf "%.3f", (n > 0 ? d / n : 0) }')"
    printf '%s|%s|%s|%s|%s|%s|%s\n' "$kind" "$round" "$stats" "$(foreign_pct "$before" "$after")" \
        "$cpu" "$wire" "$gets" >"$TMP/last"
    sleep 1
}
QUIET_DEADLINE=$((SECONDS + WAIT_QUIET))
REPEATED=0
measure() { # measure KIND ROUND: run_wrk, done again (twice at most) when disturbed
    local attempt f
    for attempt in 1 2 3; do
        ((attempt == 1)) || wait_quiet
        run_wrk "$1" "$2"
        f="$(cut -d'|' -f7 "$TMP/last")"
        if ((f < 10 || WAIT_QUIET == 0 || attempt == 3 || SECONDS >= QUIET_DEADLINE)); then
            break
        fi
        log "other processes used $f% of the machine during that run: doing it again"
        REPEATED=$((REPEATED + 1))
    done
    cat "$TMP/last" >>"$TMP/results"
}
rounds() { # rounds KIND...: ROUNDS interleaved rounds, each starting one kind further on
    local round k n=$#
    local kinds=("$@")
    for ((round = 1; round <= ROUNDS; round++)); do
        for ((k = 0; k < n; k++)); do
            measure "${kinds[$(((k + round - 1) % n))]}" "$round"
        done
    done
}

HIT_KINDS=(gz:slate-l1 gz:slate-memory gz:nginx gz:nginx6 gz:varnish id:slate-l1 id:slate-memory id:nginx id:varnish)
MISS_KINDS=(miss-direct:id miss-off:id miss-gzip:id miss-off:gz miss-gzip:gz)
: >"$TMP/results"
rounds "${HIT_KINDS[@]}"
check_hits "still hits after the rounds"
rounds "${MISS_KINDS[@]}"

# ---------------------------------------------------------------- perf (PERF=1)
: >"$TMP/perf"
if [[ "$PERF" == 1 ]]; then
    for ae in gz id; do
        log "perf record on slate L1 during one ${DURATION} $ae run"
        hdr=()
        [[ "$ae" == gz ]] && hdr=(-H 'Accept-Encoding: gzip')
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${hdr[@]}" "${URL_OF[slate-l1]}$HOT_PATH" \
            >"$TMP/wrk-perf-$ae.txt" 2>&1 &
        wpid=$!
        sleep 1
        perf record -F 499 -g -o "$TMP/perf-$ae.data" -p "${PID_OF[slate-l1]}" -- sleep $((DURATION_S > 3 ? DURATION_S - 2 : 1)) \
            >"$TMP/perf-record-$ae.log" 2>&1 || log "perf record failed: $(tail -n 3 "$TMP/perf-record-$ae.log")"
        wait "$wpid" || true
        {
            echo "@@ $ae"
            perf report -i "$TMP/perf-$ae.data" --no-children --sort symbol --stdio 2>/dev/null |
                grep -E '^ +[0-9]+\.[0-9]+%' | head -n 15 | sed -E 's/([[:space:]]+-)+[[:space:]]*$//'
        } >>"$TMP/perf" || true
    done
fi

# ---------------------------------------------------------------- report
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    COMMIT+=" with uncommitted changes in src/"
fi
[[ -n "${SLATE_BIN_GIVEN:-}" ]] && COMMIT="(prebuilt SLATE_BIN=$SLATE_BIN; work tree at $COMMIT)"
REPRO=""
for v in DURATION=8s MISS_DURATION=5s ROUNDS=3 THREADS=2 CONNECTIONS=64 HOT_SIZE=153600 MISS_SIZE=2097152 SIZES=20 ORIGIN_DELAY_MS=200 WAIT_QUIET=0 PERF=0; do
    name="${v%%=*}"
    [[ "${!name}" == "${v#*=}" ]] || REPRO+="$name=${!name@Q} "
done
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta commit "$COMMIT"
meta machine "$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"
meta versions "$("$SLATE_BIN" --version 2>&1 | head -n 1); $(nginx -v 2>&1 | head -n 1); $(varnishd -V 2>&1 | head -n 1); $(redis-server --version | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
# (-T none: no varnishadm; the parameter's default, which this varnishd runs with)
meta varnish_gzip_level "$(varnishd -x parameter 2>/dev/null | awk '$1 == "gzip_level" { g = 1 } g && /Default:/ { print $3; exit }')"
meta load "$LOAD_BEFORE"
meta repeated "$REPEATED"
meta repro "${REPRO}bash bench/codings.sh"
for v in DURATION MISS_DURATION ROUNDS THREADS CONNECTIONS HOT_SIZE MISS_SIZE SIZES ORIGIN_DELAY_MS WAIT_QUIET; do
    meta "$v" "${!v}"
done

python3 - "$TMP" >"$REPORT" <<'PY'
import statistics as st
import sys

tmp = sys.argv[1]
meta = {}
for line in open(f"{tmp}/meta"):
    k, _, v = line.rstrip("\n").partition("=")
    meta[k] = v
runs = [l.rstrip("\n").split("|") for l in open(f"{tmp}/results") if l.strip()]


def med(kind, field):
    vals = [r[field] for r in runs if r[0] == kind]
    if not vals or vals[0] == "-":
        return None
    return st.median(float(v) for v in vals)


def errors(kind):
    return sum(int(r[5]) for r in runs if r[0] == kind)


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def verdict(v, op, t):
    ok = v >= t if op == ">=" else v <= t
    return "met" if ok else "**missed**"


label = {
    "slate-l1": "slate L1", "slate-memory": "slate memory", "nginx": "nginx (gzip_comp_level 1, its default)",
    "nginx6": "nginx (gzip_comp_level 6)", "varnish": "Varnish (do_gzip, gzip_level %s)" % (meta.get("varnish_gzip_level") or "6"),
}
what_gz = {
    "slate-l1": "`kind = \"redis\"`, `l1 = \"64MiB\"`: the stored gzip, untouched",
    "slate-memory": "`kind = \"memory\"`: the stored gzip, untouched",
    "nginx": "gzips the cached identity on every answer",
    "nginx6": "gzips the cached identity on every answer",
    "varnish": "the stored gzip",
}
what_id = {
    "slate-l1": "decodes the stored gzip on every answer",
    "slate-memory": "decodes the stored gzip on every answer",
    "nginx": "the cached identity (file, sendfile)",
    "varnish": "gunzips the stored gzip on every answer",
}
hot = int(meta["HOT_SIZE"])
foreign = [int(r[6]) for r in runs]
busy = sum(1 for f in foreign if f >= 10)
out = []
p = out.append
p("# Encodings: bench/codings.sh")
p("")
p(f"{meta['date']}, commit {meta['commit']}. Machine: {meta['machine']}.")
p(f"{meta['versions']}.")
p("")
p(f"Load average before the run: {meta['load']}. CPU used by processes outside the benchmark during each wrk "
  f"run: at most {max(foreign, default=0)}%; {busy} of {len(runs)} runs at 10% or more; {meta['repeated']} runs "
  f"done again because of it (WAIT_QUIET={meta['WAIT_QUIET']}).")
if busy:
    p("")
    p(f"**NOTE: something else used 10% or more of the machine during {busy} runs: those numbers are noisy.**")

# 1. Redis bytes
sizes = [l.rstrip("\n").split("|") for l in open(f"{tmp}/sizes") if l.strip()]
p("")
p("## 1. Redis bytes per report")
p("")
p(f"{len(sizes)} generated JSON reports (examples/report_origin.rs), each filled once through three slates on one "
  "Redis (`l1 = \"0\"`) that differ only in `cache.compress`; Redis bytes = `STRLEN` of the entry's "
  "`slate:<ns>:e:*` key (the whole stored entry: headers, metadata, CRC and body). `gzip -6` = the size of "
  "`gzip -6` of the report, for scale.")
p("")
p("| id | report bytes | gzip -6 | Redis, gzip | ÷ report | Redis, zstd | ÷ report | Redis, off | ÷ report |")
p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
tot = {"size": 0, "gz6": 0, "gzip": 0, "zstd": 0, "off": 0}
ratios_gzip = []
for r in sizes:
    id_, size, gz6, b_gzip, _, b_zstd, _, b_off, _ = r
    size, gz6, b_gzip, b_zstd, b_off = map(int, (size, gz6, b_gzip, b_zstd, b_off))
    tot["size"] += size; tot["gz6"] += gz6; tot["gzip"] += b_gzip; tot["zstd"] += b_zstd; tot["off"] += b_off
    ratios_gzip.append(b_gzip / size)
    p(f"| {id_} | {size:,} | {gz6:,} | {b_gzip:,} | {b_gzip / size:.3f} | {b_zstd:,} | {b_zstd / size:.3f} | {b_off:,} | {b_off / size:.3f} |")
p(f"| all | {tot['size']:,} | {tot['gz6']:,} | {tot['gzip']:,} | **{tot['gzip'] / tot['size']:.3f}** | {tot['zstd']:,} | "
  f"{tot['zstd'] / tot['size']:.3f} | {tot['off']:,} | {tot['off'] / tot['size']:.3f} |")
keys_per = {r[4] for r in sizes} | {r[6] for r in sizes} | {r[8] for r in sizes}
p("")
p(f"Keys per report: {', '.join(sorted(keys_per))}. slate's own counters "
  f"(`slate_stored_body_bytes_total` ÷ `slate_stored_identity_bytes_total`): gzip "
  f"{int(meta['stored_gzip']) / max(1, int(meta['stored_identity_gzip'])):.3f}, zstd "
  f"{int(meta['stored_zstd']) / max(1, int(meta['stored_identity_zstd'])):.3f}, off "
  f"{int(meta['stored_off']) / max(1, int(meta['stored_identity_off'])):.3f}.")
r_redis = tot["gzip"] / tot["size"]


def hit_table(prefix, systems, what):
    p("| system | what answers | req/s | p50 ms | p99 ms | server CPU µs/answer | bytes/answer (curl) | bytes/answer (wrk) | errors |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        k = f"{prefix}:{s}"
        gets = med(k, 9)
        extra = f" (Redis GETs/answer {gets:.4f})" if gets is not None else ""
        p(f"| {label[s]} | {what[s]}{extra} | {fmt(med(k, 2), ',.0f')} | {fmt(med(k, 3), '.2f')} | {fmt(med(k, 4), '.2f')} | "
          f"{fmt(med(k, 7), '.1f')} | {int(meta[f'wire_{prefix}_{s}']):,} | {fmt(med(k, 8), ',.0f')} | {errors(k)} |")


p("")
p(f"## 2. Hits, gzip clients ({hot:,}-byte report)")
p("")
p(f"`wrk -t{meta['THREADS']} -c{meta['CONNECTIONS']} -d{meta['DURATION']} --latency -H 'Accept-Encoding: gzip'` on "
  f"`/report?id=1&size={hot}` (origin {meta['ORIGIN_DELAY_MS']} ms), {meta['ROUNDS']} interleaved rounds with the "
  f"identity runs below; medians. bytes/answer (curl): headers + body of one answer; (wrk): bytes read ÷ answers. "
  f"For scale: `gzip -6` of the report is {int(meta['hot_gzip6']):,} bytes, `gzip -1` {int(meta['hot_gzip1']):,}.")
p("")
gz_sys = ["slate-l1", "slate-memory", "nginx", "nginx6", "varnish"]
hit_table("gz", gz_sys, what_gz)
p("")
p(f"## 3. Hits, identity clients (no Accept-Encoding, same report)")
p("")
id_sys = ["slate-l1", "slate-memory", "nginx", "varnish"]
hit_table("id", id_sys, what_id)
p("")
p("Server CPU µs/answer: CPU time (user + system) of the answering processes during the run (nginx and Varnish: "
  "all their processes; slate L1: with redis-server), divided by the answers. wrk shares the two cores, so req/s "
  "move with what the server leaves to wrk; this column is the server's own cost per answer. bytes/answer (wrk) "
  "comes from wrk's total read, printed with 3 significant digits: within about 0.5%.")
p("")


def per_hit(a, b):
    x, y = med(a, 7), med(b, 7)
    return None if x is None or y is None else x - y


mb = hot / 1e6
parts = []
for s, name in [("slate-l1", "slate L1"), ("slate-memory", "slate memory")]:
    d = per_hit(f"id:{s}", f"gz:{s}")
    parts.append(f"{name} {d:.0f} µs ({mb / (d / 1e6):,.0f} MB/s of identity out)")
d = per_hit("id:varnish", "gz:varnish")
parts.append(f"Varnish {d:.0f} µs ({mb / (d / 1e6):,.0f} MB/s)")
enc = []
for s, lvl in [("nginx", 1), ("nginx6", 6)]:
    d = per_hit(f"gz:{s}", "id:nginx")
    enc.append(f"level {lvl} {d:.0f} µs ({mb / (d / 1e6):,.0f} MB/s of identity in)")
p(f"What an identity hit costs more than a gzip hit (identity − gzip CPU per answer: the decoding, and writing "
  f"{hot:,} bytes instead of the gzip): " + "; ".join(parts) + ". The other way round, what nginx's gzip costs per "
  "gzip hit (gzip − identity CPU per answer): " + "; ".join(enc) + ".")

# targets
p("")
p("## Against the targets")
p("")
p("| | measured | goal | |")
p("|---|---:|---:|---|")
p(f"| Redis bytes ÷ report bytes, all {len(sizes)} reports, `compress = \"gzip\"` | {r_redis:.3f}x | ≤ 0.25x | {verdict(r_redis, '<=', 0.25)} |")
p(f"| the same, worst single report | {max(ratios_gzip):.3f}x | ≤ 0.25x | {verdict(max(ratios_gzip), '<=', 0.25)} |")
for s in ["slate-l1", "slate-memory"]:
    for o in ["nginx", "nginx6", "varnish"]:
        a, b = med(f"gz:{s}", 2), med(f"gz:{o}", 2)
        r = a / b
        goal = "≥ 1.30x" if s == "slate-l1" else "(≥ 1.30x)"
        p(f"| gzip hits: {label[s]} req/s ÷ {label[o]} | {r:.2f}x | {goal} | {verdict(r, '>=', 1.3)} |")
p("")
p("Not targets: the same ratios for CPU per answer (the other's µs ÷ slate's: above 1, slate spends less per answer), "
  "and for identity clients.")
p("")
p("| slate ÷ | gzip: req/s | gzip: CPU (other ÷ slate) | identity: req/s | identity: CPU (other ÷ slate) |")
p("|---|---:|---:|---:|---:|")
for s in ["slate-l1", "slate-memory"]:
    for o in ["nginx", "nginx6", "varnish"]:
        g_r = med(f"gz:{s}", 2) / med(f"gz:{o}", 2)
        g_c = med(f"gz:{o}", 7) / med(f"gz:{s}", 7)
        io = "nginx" if o == "nginx6" else o
        i_r = med(f"id:{s}", 2) / med(f"id:{io}", 2)
        i_c = med(f"id:{io}", 7) / med(f"id:{s}", 7)
        ident = f"{i_r:.2f}x | {i_c:.2f}x" if o != "nginx6" else "(as nginx) | (as nginx)"
        p(f"| {label[s]} ÷ {label[o]} | {g_r:.2f}x | {g_c:.2f}x | {ident} |")

# 4. misses
p("")
p(f"## 4. Misses: compressing at fill time ({int(meta['MISS_SIZE']):,}-byte report)")
p("")
p(f"`wrk -t1 -c1 -d{meta['MISS_DURATION']}`, every request a new URL `/report?id=7&size={meta['MISS_SIZE']}&n=...` "
  "(a wrk Lua script), origin 0 ms; slate `kind = \"memory\"` (`memory_limit = \"256MiB\"`), a rule that caches "
  "everything, so every request is a miss that slate stores: with `compress = \"gzip\"` it gzips the 2 MB before "
  f"answering. {meta['ROUNDS']} interleaved rounds; medians. misses ÷ answers: slate's own count of misses during "
  "the run (`slate_requests_total`) over wrk's answers (1 and a request wrk left in flight; any other outcome "
  "stops the script).")
p("")
p("| path | client | req/s | p50 ms | p99 ms | slate CPU µs/miss | bytes/answer (wrk) | misses ÷ answers | errors |")
p("|---|---|---:|---:|---:|---:|---:|---:|---:|")
mlabel = {"miss-direct": "origin directly", "miss-off": "slate, compress = \"off\"", "miss-gzip": "slate, compress = \"gzip\""}
for k in ["miss-direct:id", "miss-off:id", "miss-gzip:id", "miss-off:gz", "miss-gzip:gz"]:
    sys_, ae = k.split(":")
    cpu = "(origin)" if sys_ == "miss-direct" else fmt(med(k, 7), ",.0f")
    p(f"| {mlabel[sys_]} | {'gzip' if ae == 'gz' else 'identity'} | {fmt(med(k, 2), ',.1f')} | {fmt(med(k, 3), '.2f')} | "
      f"{fmt(med(k, 4), '.2f')} | {cpu} | {fmt(med(k, 8), ',.0f')} | {fmt(med(k, 9), '.3f')} | {errors(k)} |")
d_id = med("miss-gzip:id", 3) - med("miss-off:id", 3)
d_gz = med("miss-gzip:gz", 3) - med("miss-off:gz", 3)
d_off = med("miss-off:id", 3) - med("miss-direct:id", 3)
p("")
p(f"Miss overhead of compressing, p50: **{d_id:+.2f} ms** for identity clients (gzip at fill, then decoded for the "
  f"client), **{d_gz:+.2f} ms** for gzip clients (gzip at fill, the stored bytes sent). slate with "
  f"`compress = \"off\"` adds {d_off:+.2f} ms to the origin directly. First answers: gzip/identity "
  f"`{meta['note_miss_gzip_id']}`, gzip/gzip `{meta['note_miss_gzip_gzip']}`.")

# per round
p("")
p("## Every round")
p("")
p("req/s per run (in brackets, the CPU other processes used meanwhile); the order rotates by one each round.")
p("")
rounds = int(meta["ROUNDS"])
p("| run | " + " | ".join(f"round {i}" for i in range(1, rounds + 1)) + " |")
p("|---|" + "---:|" * rounds)
kinds = []
for r in runs:
    if r[0] not in kinds:
        kinds.append(r[0])
for k in kinds:
    cells = []
    for i in range(1, rounds + 1):
        rr = [r for r in runs if r[0] == k and r[1] == str(i)]
        cells.append(f"{float(rr[0][2]):,.0f} ({rr[0][6]}%)" if rr else "-")
    p(f"| {k} | " + " | ".join(cells) + " |")

p("")
p("## Checks and configurations")
p("")
p("Before and after the rounds, each system answered a gzip client with `Content-Encoding: gzip` and a body that "
  "gunzips to the origin's bytes, an identity client with the origin's bytes, both as hits:")
p("")
for s in gz_sys:
    p(f"- {label[s]}: gzip `{meta[f'note_gz_{s}']}`; identity `{meta[f'note_id_{s}']}`")
p("")
p("nginx: `proxy_cache` + `proxy_cache_lock on`, `proxy_cache_key $request_uri`, `proxy_cache_valid 200 1h`, "
  "upstream keepalive, `worker_processes auto`, `sendfile`, `open_file_cache`; `gzip on; gzip_proxied any; "
  "gzip_types application/json; gzip_vary on;` and `gzip_comp_level` left at its default (1) on one port, `6` on "
  "another. Varnish: `-s malloc,256m`, `vcl_backend_response { set beresp.ttl = 1h; set beresp.do_gzip = true; }`, "
  f"gzip_level {meta.get('varnish_gzip_level') or '?'} (its default). slate: `cache.compress = \"gzip\"` (level 6), "
  "`[[rules]] path = \"/\" ttl = \"1h\"`.")
perf = open(f"{tmp}/perf").read().strip()
if perf:
    p("")
    p("## perf: slate L1 (PERF=1)")
    for block in perf.split("@@ ")[1:]:
        ae, _, body = block.partition("\n")
        p("")
        p(f"{'gzip' if ae.strip() == 'gz' else 'identity'} clients, `perf record -F 499 -g`, top symbols (self):")
        p("")
        p("```")
        p(body.rstrip())
        p("```")
p("")
p(f"Reproduce: `{meta['repro']}`")
print("\n".join(out))
PY

echo
cat "$REPORT"
echo
log "report written to ${REPORT#"$REPO"/}"
