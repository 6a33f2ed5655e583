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
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-60}"         # seconds of load
STORE="${STORE:-memory}"           # memory | redis
BOUND="${BOUND:-32MiB}"            # memory_limit (memory) or l1 (redis)
KEYS="${KEYS:-200000}"             # distinct report URLs
SAMPLE_EVERY="${SAMPLE_EVERY:-5}"
START_TIMEOUT_S=10 # how long a started server may take to open its port
BENCH_NAME=soak    # die: "soak: error: ..."

ensure_cmd wrk wrk
if [[ "$STORE" == redis ]]; then
    ensure_cmd redis-server redis-server
    ensure_cmd redis-cli redis-tools
fi

build_slate --quiet

make_tmp slate-soak

free_port ORIGIN_PORT
free_port SLATE_PORT
start origin "$SLATE_BIN" demo-origin --listen "127.0.0.1:$ORIGIN_PORT" --delay 0ms --body-size 20480
wait_until origin "$LAST_PID" "on port $ORIGIN_PORT" port_open "$ORIGIN_PORT"

if [[ "$STORE" == redis ]]; then
    free_port REDIS_PORT
    start_redis "$REDIS_PORT"
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
start slate "$SLATE_BIN" --config "$TMP/slate.toml"
SLATE_PID=$LAST_PID
wait_until slate "$SLATE_PID" "on port $SLATE_PORT" port_open "$SLATE_PORT"

cat >"$TMP/churn.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/soak?id=" .. math.random(1, $KEYS))
end
LUA

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$SLATE_PID/status"; }

echo "slate soak: store=$STORE bound=$BOUND keys=$KEYS duration=${DURATION}s body=20480 B"
echo "t_s   rss_MiB"
start wrk wrk -t2 -c32 -d"${DURATION}s" -s "$TMP/churn.lua" "http://127.0.0.1:$SLATE_PORT/"
WRK=$LAST_PID
start=$SECONDS
samples=()
while kill -0 "$WRK" 2>/dev/null && (( SECONDS - start <= DURATION + 5 )); do
    r=$(rss_kib)
    samples+=("$r")
    printf '%-5d %.1f\n' "$((SECONDS - start))" "$(echo "$r / 1024" | bc -l)"
    sleep "$SAMPLE_EVERY"
done
wait "$WRK" || true
grep -E "Requests/sec|Non-2xx|Socket errors" "$TMP/wrk.log" || true

n=${#samples[@]}
if (( n >= 4 )); then
    half=${samples[$((n / 2))]}
    last=${samples[$((n - 1))]}
    growth=$(echo "($last - $half) * 100 / $half" | bc -l)
    printf 'RSS at half time %.1f MiB, at the end %.1f MiB: %+.1f%% over the second half\n' \
        "$(echo "$half / 1024" | bc -l)" "$(echo "$last / 1024" | bc -l)" "$growth"
fi
