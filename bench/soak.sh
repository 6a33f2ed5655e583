#!/usr/bin/env bash
# Soak: slate on the memory store (and optionally Redis with the in-process tier) under a
# churning key mix far larger than its memory bound, sampling RSS every few seconds. A
# bounded cache shows RSS rising while it fills, then flat.
#
#   bash bench/soak.sh                      # 60 s, memory store, 32 MiB bound
#   DURATION=300 STORE=redis bash bench/soak.sh
#
# Only 127.0.0.1 is used; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-60}"         # seconds of load
STORE="${STORE:-memory}"           # memory | redis
BOUND="${BOUND:-32MiB}"            # memory_limit (memory) or l1 (redis)
KEYS="${KEYS:-200000}"             # distinct report URLs
SAMPLE_EVERY="${SAMPLE_EVERY:-5}"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; }
need wrk wrk
[[ "$STORE" == redis ]] && need redis-server redis-server

SLATE_BIN="${SLATE_BIN:-}"
if [[ -z "$SLATE_BIN" ]]; then
    cargo build --release --quiet
    SLATE_BIN="${CARGO_TARGET_DIR:-target}/release/slate"
fi

TMP="$(mktemp -d /tmp/slate-soak.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    return 1
}

ORIGIN_PORT=$(free_port)
SLATE_PORT=$(free_port)
"$SLATE_BIN" demo-origin --listen "127.0.0.1:$ORIGIN_PORT" --delay 0ms --body-size 20480 >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

if [[ "$STORE" == redis ]]; then
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$REDIS_PORT"
    STORE_TOML=$'kind = "redis"\nurl = "redis://127.0.0.1:'"$REDIS_PORT"$'"\nl1 = "'"$BOUND"'"'
else
    STORE_TOML=$'kind = "memory"\nmemory_limit = "'"$BOUND"'"'
fi

cat >"$TMP/slate.toml" <<TOML
[server]
listen = "127.0.0.1:$SLATE_PORT"
admin_listen = ""
[log]
level = "warn"
[upstream]
url = "http://127.0.0.1:$ORIGIN_PORT"
[store]
$STORE_TOML
[[rules]]
path = "/"
ttl = "1h"
TOML
"$SLATE_BIN" --config "$TMP/slate.toml" >"$TMP/slate.log" 2>&1 &
SLATE_PID=$!
PIDS+=("$SLATE_PID")
wait_port "$SLATE_PORT"

cat >"$TMP/churn.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/soak?id=" .. math.random(1, $KEYS))
end
LUA

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$SLATE_PID/status"; }

echo "slate soak: store=$STORE bound=$BOUND keys=$KEYS duration=${DURATION}s body=20480 B"
echo "t_s   rss_MiB"
wrk -t2 -c32 -d"${DURATION}s" -s "$TMP/churn.lua" "http://127.0.0.1:$SLATE_PORT/" >"$TMP/wrk.txt" 2>&1 &
WRK=$!
PIDS+=("$WRK")
start=$SECONDS
samples=()
while kill -0 "$WRK" 2>/dev/null && (( SECONDS - start <= DURATION + 5 )); do
    r=$(rss_kib)
    samples+=("$r")
    printf '%-5d %.1f\n' "$((SECONDS - start))" "$(echo "$r / 1024" | bc -l)"
    sleep "$SAMPLE_EVERY"
done
wait "$WRK" || true
grep -E "Requests/sec|Non-2xx|Socket errors" "$TMP/wrk.txt" || true

n=${#samples[@]}
if (( n >= 4 )); then
    half=${samples[$((n / 2))]}
    last=${samples[$((n - 1))]}
    growth=$(echo "($last - $half) * 100 / $half" | bc -l)
    printf 'RSS at half time %.1f MiB, at the end %.1f MiB: %+.1f%% over the second half\n' \
        "$(echo "$half / 1024" | bc -l)" "$(echo "$last / 1024" | bc -l)" "$growth"
fi
