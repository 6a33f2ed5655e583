# shellcheck shell=bash disable=SC2034 # (what it sets, the scripts read)
# bench/lib.sh: helpers shared by the bench scripts (run.sh, compare.sh, codings.sh, ...). Sourced,
# not run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Read from the script (set them before calling the helpers that use them):
#   BENCH_NAME        how die's messages start ("bench", "compare", ...)
#   START_TIMEOUT_S   how long a started server may take to answer (wait_*)
#   PROBE_TIMEOUT_S   how long one wait_http probe may take (default 3)
#   APT_INSTALL_ENV   more environment for apt-get install (ensure_cmd; default none)
#   KEEP_TMP          1: cleanup keeps $TMP (default 0)
#   SLATE_BIN         the slate binary (build_slate sets it when unset)
#   write_config      (function) start_slate writes a slate config with it
#   cleanup_extra_pids (function, optional) cleanup_extra_pids PID: the PIDs of what PID
#                     started in turn, one a line; cleanup stops them too
#   TOOLS             bench/compare_tools.py (cpu_sample, wait_quiet)
#   WAIT_QUIET, QUIET_DEADLINE  wait_quiet's budget: seconds, and the $SECONDS it ends at

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$BENCH_NAME" "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- prerequisites
SUDO=()
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
APT_UPDATED=0
APT_INSTALL_ENV=()
ensure_cmd() { # ensure_cmd COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${APT_INSTALL_ENV[@]}" \
        apt-get install -y -qq --no-install-recommends "$2"
    command -v "$1" >/dev/null 2>&1 || die "$1 still not found after installing $2"
}

# ensure_servers: what the scripts that run slate beside nginx and Varnish need: redis-server,
# redis-cli, nginx, varnishd, curl, python3, and cc (varnishd compiles its VCL with it).
ensure_servers() {
    ensure_cmd redis-server redis-server
    ensure_cmd redis-cli redis-tools
    ensure_cmd nginx nginx-light
    ensure_cmd varnishd varnish
    ensure_cmd curl curl
    ensure_cmd python3 python3
    ensure_cmd cc gcc
}

# build_slate [CARGO_ARGS...]: without SLATE_BIN, `cargo build --release CARGO_ARGS...` and
# SLATE_BIN is the slate it built; with SLATE_BIN, no build (and SLATE_BIN_GIVEN=1).
build_slate() {
    if [[ -z "${SLATE_BIN:-}" ]]; then
        log "cargo build --release${*:+ $*}"
        cargo build --release "$@"
        SLATE_BIN="${CARGO_TARGET_DIR:-target}/release/slate"
    else
        log "using SLATE_BIN=$SLATE_BIN (no build)"
        SLATE_BIN_GIVEN=1
    fi
}

# ---------------------------------------------------------------- settings
# seconds DURATION: "10s" -> 10, "2m" -> 120, "15" -> 15
seconds() {
    case "$1" in
    *[0-9]s) printf '%s' "${1%s}" ;;
    *[0-9]m) printf '%s' "$((${1%m} * 60))" ;;
    *) printf '%s' "$1" ;;
    esac
}
int_in() { # int_in VALUE MIN MAX: VALUE is an integer within [MIN, MAX]
    [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= $2 && $1 <= $3))
}

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
NAMES=()
declare -A PID_OF=()

# make_tmp PREFIX: creates the temp dir TMP (${TMPDIR:-/tmp}/PREFIX.XXXXXX) and has cleanup
# run on exit, INT and TERM.
make_tmp() {
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# cleanup: stops everything start started (SIGTERM, SIGKILL after 5 s), shows the end of
# their logs when the script failed, removes $TMP, exits with the script's status.
cleanup() {
    local status=$? pid waited name more tree=()
    trap - EXIT INT TERM
    if declare -F cleanup_extra_pids >/dev/null; then
        # Listed first, so that what outlives its parent is still found and stopped.
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || continue
            read -r -a more <<<"$(cleanup_extra_pids "$pid" | tr '\n' ' ')" || true
            tree+=("${more[@]}")
        done
    fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Give everything up to 5 s to drain and exit, then kill what is left.
    for pid in "${PIDS[@]}" "${tree[@]}"; do
        waited=0
        while kill -0 "$pid" 2>/dev/null && [[ "$waited" -lt 50 ]]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid did not exit after SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$status" -ne 0 ]]; then
        # Show what the servers said: usually the reason for the failure.
        for name in "${NAMES[@]}"; do
            if [[ -s "$TMP/$name.log" ]]; then
                printf -- '--- last lines of %s.log ---\n' "$name" >&2
                tail -n 15 "$TMP/$name.log" >&2 || true
            fi
        done
    fi
    if [[ "${KEEP_TMP:-0}" == "1" ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}

# start NAME COMMAND...: runs COMMAND in the background, output in $TMP/NAME.log; its PID in
# LAST_PID and PID_OF[NAME].
start() {
    local name="$1"
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    PID_OF[$name]="$!"
    LAST_PID="$!"
}

# ---------------------------------------------------------------- ports and readiness
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VAR: a loopback port nothing listens on, not handed out yet, and below the
# kernel's ephemeral range (so no client socket of the load generators can hold it).
EPHEMERAL_LOW="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
PORT_HIGH=$((EPHEMERAL_LOW > 12000 ? EPHEMERAL_LOW - 1 : 60999))
USED_PORTS=" "
free_port() {
    local try p
    for try in $(seq 1 300); do
        p=$((10000 + RANDOM % (PORT_HIGH - 10000)))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! port_open "$p"; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found after $try tries"
}

# wait_until NAME PID WHAT PROBE...: runs PROBE every 0.1 s until it succeeds, at most
# START_TIMEOUT_S seconds; dies when PID (NAME) exits first, or when time is up ("NAME did
# not answer WHAT").
wait_until() {
    local name="$1" pid="$2" what="$3" i
    shift 3
    for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see its log below)"
        "$@" && return 0
        sleep 0.1
    done
    die "$name did not answer $what within ${START_TIMEOUT_S}s"
}
http_ok() { curl -fsS -o /dev/null --max-time "${PROBE_TIMEOUT_S:-3}" "$1" 2>/dev/null; }
redis_pong() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == "PONG" ]]; }

# wait_http NAME PID URL: waits until URL answers 2xx.
wait_http() { wait_until "$1" "$2" "$3" http_ok "$3"; }
# wait_redis PID PORT: waits until the redis-server on PORT answers PING.
wait_redis() { wait_until redis-server "$1" "PING on port $2" redis_pong "$2"; }

# ---------------------------------------------------------------- servers
# start_redis PORT: redis-server on 127.0.0.1:PORT, no persistence, its files in $TMP/redis.
start_redis() {
    log "starting redis-server on 127.0.0.1:$1"
    mkdir -p "$TMP/redis"
    start redis redis-server --bind 127.0.0.1 --port "$1" --dir "$TMP/redis" \
        --save '' --appendonly no --daemonize no --loglevel warning
    wait_redis "$LAST_PID" "$1"
}

# start_demo_origin NAME PORT READY_PATH DESCRIPTION DEMO_ORIGIN_ARGS...: `slate demo-origin`
# on 127.0.0.1:PORT; waits until READY_PATH answers.
start_demo_origin() {
    local name="$1" port="$2" ready="$3" what="$4"
    shift 4
    log "starting $what on 127.0.0.1:$port"
    start "$name" "$SLATE_BIN" demo-origin --listen "127.0.0.1:$port" "$@"
    wait_http "$name" "$LAST_PID" "http://127.0.0.1:$port$ready"
}

# nginx_prelude: sets NGX ($TMP/nginx, with cache/ and temp/ in it) and NGX_USER, the `user`
# line of an nginx.conf run as root (its workers would be "nobody", who cannot use $TMP).
nginx_prelude() {
    NGX="$TMP/nginx"
    mkdir -p "$NGX/cache" "$NGX/temp"
    NGX_USER=""
    if [[ "$(id -u)" -eq 0 ]]; then
        NGX_USER="user $(id -un) $(id -gn);"
    fi
}

# start_nginx PORT [WHAT]: checks $NGX/nginx.conf with nginx -t, starts nginx on it in the
# foreground (its own prefix $NGX) and waits until http://127.0.0.1:PORT/__ready answers.
start_nginx() {
    nginx -t -q -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$TMP/nginx-t.log" 2>&1 ||
        die "nginx -t rejected the generated config: $(cat "$TMP/nginx-t.log" "$NGX/error.log" 2>/dev/null)"
    log "starting nginx on 127.0.0.1:$1${2:+ $2}"
    start nginx nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" -g 'daemon off;'
    wait_http nginx "$LAST_PID" "http://127.0.0.1:$1/__ready"
}

# start_varnish PORT VCL: varnishd in the foreground on 127.0.0.1:PORT with VCL, its workdir
# $TMP/varnish, -s malloc,256m; waits until /__ready answers. -j none: no jail, so it runs as
# whoever runs the script (root included) and can use the temp dir; -T none: no management port.
start_varnish() {
    log "starting varnishd on 127.0.0.1:$1"
    start varnish varnishd -F -j none -n "$TMP/varnish" -a "127.0.0.1:$1" \
        -f "$2" -s malloc,256m -T none
    wait_http varnish "$LAST_PID" "http://127.0.0.1:$1/__ready"
}

# hit_defaults: what the hit benchmarks (ab.sh, tracing.sh) default to, each unless set:
# THREADS 2, CONNECTIONS 64 (wrk), BODY_SIZE 20480, KEEP_TMP 0, and the one URL_PATH asked.
hit_defaults() {
    THREADS="${THREADS:-2}"
    CONNECTIONS="${CONNECTIONS:-64}"
    BODY_SIZE="${BODY_SIZE:-20480}"
    KEEP_TMP="${KEEP_TMP:-0}"
    URL_PATH="/report?id=1"
}

# config_head PROXY_PORT ADMIN_PORT UPSTREAM_URL: the [server], [log] (warn: no log line per
# request to pay for) and [upstream] tables of a bench slate's config.
config_head() {
    printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n' "$1" "$2"
    printf '[log]\nlevel = "warn"\n[upstream]\nurl = "%s"\n' "$3"
}

# [[rules]] of the slate configs: every path cached for an hour; every path passed through.
CACHE_ALL='[[rules]]
path = "/"
ttl = "1h"'
PASS_ALL='[[rules]]
path = "/"
cache = false'

# start_slate NAME CONFIG_ARGS...: slate on two free ports, its config written by the
# script's `write_config NAME PROXY_PORT ADMIN_PORT CONFIG_ARGS...` to $TMP/NAME.toml and
# checked first; waits for its /healthz; sets LAST_PORT (the proxy port).
start_slate() {
    local name="$1" port admin
    shift
    free_port port
    free_port admin
    write_config "$name" "$port" "$admin" "$@"
    if ! "$SLATE_BIN" check-config "$TMP/$name.toml" >"$TMP/$name.check.log" 2>&1; then
        cat "$TMP/$name.check.log" >&2
        die "slate check-config rejected the generated $name config ($TMP/$name.toml)"
    fi
    log "starting $name on 127.0.0.1:$port (admin $admin)"
    start "$name" "$SLATE_BIN" --config "$TMP/$name.toml"
    wait_http "$name" "$LAST_PID" "http://127.0.0.1:$admin/healthz"
    LAST_PORT="$port"
}

# nginx_conf_head DIR: the start of a bench nginx.conf, up to the open `http {` and its common
# directives (as compare.sh and codings.sh write them): workers as the current user (as root
# they would be "nobody", who cannot use the temp dir), pid, error log and temp paths in DIR,
# no access log, sendfile, keep-alive connections kept, open_file_cache. The caller writes
# the rest of the http block and its closing brace.
nginx_conf_head() {
    local user=""
    [[ "$(id -u)" -eq 0 ]] && user="user $(id -un) $(id -gn);"
    cat <<EOF
$user
worker_processes auto;
worker_rlimit_nofile 65536;
pid $1/nginx.pid;
error_log $1/error.log warn;
events {
    worker_connections 16384;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;          # load generators keep their connections: do not recycle them
    client_body_temp_path $1/temp/client;
    proxy_temp_path $1/temp/proxy;
    fastcgi_temp_path $1/temp/fastcgi;
    uwsgi_temp_path $1/temp/uwsgi;
    scgi_temp_path $1/temp/scgi;
    # cached responses are files: keep their descriptors open between hits
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
EOF
}

# ---------------------------------------------------------------- wrk output
# An awk function, ms(v): a wrk duration (512.00us, 1.20ms, 1.05s, 2.00m) in milliseconds.
WRK_MS_AWK='
    function ms(v,   n) {
        n = v + 0
        if (v ~ /us$/) return n / 1000
        if (v ~ /ms$/) return n
        if (v ~ /m$/)  return n * 60000
        if (v ~ /s$/)  return n * 1000
        return n
    }'

# wrk_stats FILE: "requests/s|p50 ms|p99 ms|errors" of the `wrk --latency` output in FILE,
# errors being non-2xx/3xx answers plus socket errors; fails when FILE holds no result.
wrk_stats() {
    awk "$WRK_MS_AWK"'
        $1 == "50%"           { p50 = ms($2) }
        $1 == "99%"           { p99 = ms($2) }
        /^Requests\/sec:/     { rps = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ {
            for (i = 3; i <= NF; i += 2) { gsub(",", "", $(i + 1)); errors += $(i + 1) }
        }
        END {
            if (rps == "" || p50 == "") { exit 1 }
            printf "%.2f|%.3f|%.3f|%d\n", rps, p50, p99, errors
        }' "$1"
}

# header NAME: the value of response header NAME in $TMP/headers (curl -D "$TMP/headers")
header() {
    tr -d '\r' <"$TMP/headers" | awk -v h="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" '
        { n = index($0, ":"); if (n && tolower(substr($0, 1, n - 1)) == h) { print substr($0, n + 2); exit } }'
}

# ---------------------------------------------------------------- CPU used by others
# The load average counts this benchmark's own wrk and servers, so it says little about
# a build running beside it. Instead: the CPU the whole machine used minus what this
# script's process tree used, as a share of all cores, between two samples.
cpu_sample() { python3 "$TOOLS" cpu "$$"; }
foreign_pct() { # foreign_pct "BUSY1 TOTAL1 OURS1" "BUSY2 TOTAL2 OURS2"
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        total = y[2] - x[2]; other = (y[1] - x[1]) - (y[3] - x[3])
        if (other < 0) other = 0
        printf "%.0f", (total > 0 ? 100 * other / total : 0) }'
}

# wait_quiet: with WAIT_QUIET, waits (until $SECONDS reaches QUIET_DEADLINE, for the whole
# run) while other processes use 10% or more of the machine (measured over 3 s).
wait_quiet() {
    local a b f
    ((WAIT_QUIET > 0 && SECONDS < QUIET_DEADLINE)) || return 0
    for ((;;)); do
        a="$(cpu_sample)"
        sleep 3
        b="$(cpu_sample)"
        f="$(foreign_pct "$a" "$b")"
        ((f < 10)) && return 0
        if ((SECONDS >= QUIET_DEADLINE)); then
            log "other processes still use $f% of the machine; WAIT_QUIET=$WAIT_QUIET is spent, measuring anyway"
            return 0
        fi
        log "other processes use $f% of the machine: waiting for quiet (at most $((QUIET_DEADLINE - SECONDS))s more)"
        sleep 5
    done
}
