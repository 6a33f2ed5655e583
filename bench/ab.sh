#!/usr/bin/env bash
# bench/ab.sh: two slate binaries, A and B, on the hit rows, in interleaved rounds.
#
# For a change that must not cost the hit path anything (a reshaping, say): both builds run
# side by side in front of one slow origin and one redis-server, and wrk asks each in turn,
# A B A B ..., so a drift of the shared machine lands on both. Rows: memory store; Redis
# with the in-process tier (L1); Redis with l1 = "0" (every hit a GET). Printed: per row the
# median requests/s and p99 of each build and the ratio B/A of the medians, and every round.
#
#   A=/tmp/old/slate B=target/release/slate bash bench/ab.sh
#   DURATION=5s ROUNDS=5 A=... B=... bash bench/ab.sh
#
# Environment: A, B (required, slate binaries); DURATION (5s); ROUNDS (5); THREADS (2);
# CONNECTIONS (64); BODY_SIZE (20480); KEEP_TMP.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${A:?set A to the first slate binary}" "${B:?set B to the second slate binary}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-5}"
hit_defaults
START_TIMEOUT_S=30
PROBE_TIMEOUT_S=2
BENCH_NAME=ab

ensure_cmd wrk wrk
ensure_cmd redis-server redis-server
ensure_cmd redis-cli redis-tools
ensure_cmd curl curl
make_tmp slate-ab

write_config() { # NAME PROXY_PORT ADMIN_PORT STORE_TOML NAMESPACE
    config_head "$2" "$3" "http://127.0.0.1:$ORIGIN_PORT" >"$TMP/$1.toml"
    cat >>"$TMP/$1.toml" <<CONF
[store]
$4
[cache]
namespace = "$5"
$CACHE_ALL
CONF
}

SLATE_BIN="$A"
free_port ORIGIN_PORT
free_port REDIS_PORT
start_demo_origin origin "$ORIGIN_PORT" "$URL_PATH" "slow origin" --delay 200ms --body-size "$BODY_SIZE"
start_redis "$REDIS_PORT"
REDIS="kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\""

declare -A URL
ROWS=(memory l1 redis)
for build in A B; do
    SLATE_BIN="${!build}"
    start_slate "$build-memory" 'kind = "memory"' "$build-memory"
    URL[$build-memory]="http://127.0.0.1:$LAST_PORT$URL_PATH"
    start_slate "$build-l1" "$REDIS
l1 = \"64MiB\"" "$build-l1"
    URL[$build-l1]="http://127.0.0.1:$LAST_PORT$URL_PATH"
    start_slate "$build-redis" "$REDIS
l1 = \"0\"" "$build-redis"
    URL[$build-redis]="http://127.0.0.1:$LAST_PORT$URL_PATH"
done
for k in "${!URL[@]}"; do
    curl -fsS -o /dev/null "${URL[$k]}" || die "$k: warm-up GET failed"
    cs="$(curl -fsS -o /dev/null -D - "${URL[$k]}" | tr -d '\r' | sed -n 's/^[Cc]ache-[Ss]tatus: *//p')"
    [[ "$cs" == *"; hit"* ]] || die "$k: second GET is not a hit: '$cs'"
done

: >"$TMP/results"
for ((r = 1; r <= ROUNDS; r++)); do
    for row in "${ROWS[@]}"; do
        # Alternate which build goes first, so neither always runs on a warmer machine.
        order=(A B)
        ((r % 2 == 0)) && order=(B A)
        for build in "${order[@]}"; do
            raw="$TMP/wrk-$r-$build-$row.txt"
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
                "${URL[$build-$row]}" >"$raw" 2>&1 || die "wrk failed on $build-$row"
            echo "$r|$row|$build|$(wrk_stats "$raw")" >>"$TMP/results"
            log "round $r $row $build: $(tail -n 1 "$TMP/results")"
        done
    done
done

python3 - "$TMP/results" "$A" "$B" <<'PY'
import sys, statistics as st
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}\n")
print("| row | A req/s | B req/s | B/A | A p99 ms | B p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row in ["memory", "l1", "redis"]:
    got = {b: [r for r in rows if r[1] == row and r[2] == b] for b in "AB"}
    rps = {b: st.median(float(r[3]) for r in got[b]) for b in "AB"}
    p99 = {b: st.median(float(r[5]) for r in got[b]) for b in "AB"}
    err = sum(int(r[6]) for b in "AB" for r in got[b])
    print(f"| {row} | {rps['A']:,.0f} | {rps['B']:,.0f} | {rps['B']/rps['A']:.3f} | {p99['A']:.2f} | {p99['B']:.2f} | {err} |")
print("\nEvery round (req/s):")
for row in ["memory", "l1", "redis"]:
    for b in "AB":
        print(f"  {row:6} {b}: " + ", ".join(f"{float(r[3]):,.0f}" for r in rows if r[1] == row and r[2] == b))
PY
