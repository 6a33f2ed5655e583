#!/usr/bin/env bash
# bench/tracing.sh: what request tracing (issue 17, `[tracing] otlp_endpoint`) costs the hit
# path, and that a dead collector costs it nothing more.
#
# One slow origin (`slate demo-origin`, 200 ms, BODY_SIZE bytes) and four slates in front of
# it, all on the memory store, all warmed on one URL:
#   off   no [tracing]
#   live  tracing to examples/otlp_sink.rs, which decodes and counts every export
#   dead  tracing to a closed port (every export refused at once)
#   hung  tracing to an otlp_sink --hang, which reads each export and never answers (every
#         export waits out its timeout: the queue fills and spans are dropped)
# wrk asks each in turn, in ROUNDS interleaved rounds (the order rotating), so a drift of
# the shared machine lands on all four. Printed: per row the median req/s, p50 and p99, and
# the ratio of req/s to `off`; the spans the live sink received against those the live row
# made (three a hit: request, key, store lookup). Every round's figures follow.
#
#   bash bench/tracing.sh                      # builds, then ~2 min with the defaults
#   DURATION=5s ROUNDS=3 bash bench/tracing.sh
#   SLATE_BIN=/tmp/t/release/slate bash bench/tracing.sh   # prebuilt (otlp_sink looked for
#                                                          # beside it, in examples/)
#
# With INSTR=1, then: instructions per hit, counted by valgrind's callgrind (repeatable
# whatever else the machine runs, where req/s on a shared machine is not): each row's slate
# under callgrind, warmed, its counters zeroed, HITS hits on one keep-alive connection, then
# dumped; the whole process's instructions (the exporting thread's too) over HITS. With
# BASE_BIN (a slate built without tracing), a row `base` for it first.
#
# Environment: DURATION (8s); ROUNDS (4); THREADS (2); CONNECTIONS (64); BODY_SIZE (20480);
# INSTR (0); HITS (2000); BASE_BIN; SLATE_BIN; OTLP_SINK_BIN; CARGO_TARGET_DIR; KEEP_TMP.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-8s}"
ROUNDS="${ROUNDS:-4}"
INSTR="${INSTR:-0}"
HITS="${HITS:-2000}"
hit_defaults
START_TIMEOUT_S=60
PROBE_TIMEOUT_S=2
BENCH_NAME=tracing

ensure_cmd wrk wrk
ensure_cmd curl curl
ensure_cmd python3 python3
if [[ "$INSTR" == 1 ]]; then
    ensure_cmd valgrind valgrind
fi
make_tmp slate-tracing

build_slate --bin slate --example otlp_sink
if [[ -z "${OTLP_SINK_BIN:-}" ]]; then
    OTLP_SINK_BIN="$(dirname "$SLATE_BIN")/examples/otlp_sink"
fi
[[ -x "$OTLP_SINK_BIN" ]] || die "no otlp_sink at $OTLP_SINK_BIN (set OTLP_SINK_BIN)"

write_config() { # NAME PROXY_PORT ADMIN_PORT TRACING_TOML
    config_head "$2" "$3" "http://127.0.0.1:$ORIGIN_PORT" >"$TMP/$1.toml"
    cat >>"$TMP/$1.toml" <<CONF
[store]
kind = "memory"
[cache]
namespace = "$1"
$4
$CACHE_ALL
CONF
}

free_port ORIGIN_PORT
free_port SINK_PORT
free_port HUNG_PORT
free_port DEAD_PORT # never listened on: the dead collector
start_demo_origin origin "$ORIGIN_PORT" "$URL_PATH" "slow origin" --delay 200ms --body-size "$BODY_SIZE"
log "starting otlp_sink on 127.0.0.1:$SINK_PORT and a hung one on $HUNG_PORT"
start sink "$OTLP_SINK_BIN" --listen "127.0.0.1:$SINK_PORT"
wait_http sink "$LAST_PID" "http://127.0.0.1:$SINK_PORT/stats"
start hung "$OTLP_SINK_BIN" --listen "127.0.0.1:$HUNG_PORT" --hang
wait_http hung "$LAST_PID" "http://127.0.0.1:$HUNG_PORT/stats"

tracing_to() { printf '[tracing]\notlp_endpoint = "http://127.0.0.1:%s"' "$1"; }
declare -A URL
ROWS=(off live dead hung)
start_slate off ""
URL[off]="http://127.0.0.1:$LAST_PORT$URL_PATH"
start_slate live "$(tracing_to "$SINK_PORT")"
URL[live]="http://127.0.0.1:$LAST_PORT$URL_PATH"
start_slate dead "$(tracing_to "$DEAD_PORT")"
URL[dead]="http://127.0.0.1:$LAST_PORT$URL_PATH"
start_slate hung "$(tracing_to "$HUNG_PORT")"
URL[hung]="http://127.0.0.1:$LAST_PORT$URL_PATH"
for row in "${ROWS[@]}"; do
    curl -fsS -o /dev/null "${URL[$row]}" || die "$row: warm-up GET failed"
    cs="$(curl -fsS -o /dev/null -D - "${URL[$row]}" | tr -d '\r' | sed -n 's/^[Cc]ache-[Ss]tatus: *//p')"
    [[ "$cs" == *"; hit"* ]] || die "$row: second GET is not a hit: '$cs'"
done

sink_spans() { curl -fsS "http://127.0.0.1:$SINK_PORT/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["spans"])'; }

: >"$TMP/results"
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order, so no row always runs first (or last) in a round.
    order=("${ROWS[@]:$(((r - 1) % 4))}" "${ROWS[@]:0:$(((r - 1) % 4))}")
    for row in "${order[@]}"; do
        raw="$TMP/wrk-$r-$row.txt"
        before="$(sink_spans)"
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
            "${URL[$row]}" >"$raw" 2>&1 || die "wrk failed on $row"
        requests="$(awk '/requests in/ { print $1 }' "$raw")"
        # The live sink's count a moment later: spans still in slate's queue arrive by then.
        [[ "$row" == live ]] && sleep 6
        received=$(($(sink_spans) - before))
        echo "$r|$row|$(wrk_stats "$raw")|$requests|$received" >>"$TMP/results"
        log "round $r $row: $(tail -n 1 "$TMP/results")"
    done
done

python3 - "$TMP/results" "$DURATION" "$ROUNDS" "$CONNECTIONS" "$BODY_SIZE" <<'PY'
import sys, statistics as st
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
duration, rounds, conns, size = sys.argv[2:6]
print(f"Hits of one {size}-byte report on the memory store; wrk {conns} connections, "
      f"{rounds} interleaved rounds of {duration} (medians).\n")
print("| row | req/s | p50 ms | p99 ms | req/s vs off | errors |")
print("|---|---:|---:|---:|---:|---:|")
off = st.median(float(r[2]) for r in rows if r[1] == "off")
for row in ["off", "live", "dead", "hung"]:
    got = [r for r in rows if r[1] == row]
    rps = st.median(float(r[2]) for r in got)
    p50 = st.median(float(r[3]) for r in got)
    p99 = st.median(float(r[4]) for r in got)
    err = sum(int(r[5]) for r in got)
    print(f"| {row} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {rps / off:.3f} | {err} |")
live = [r for r in rows if r[1] == "live"]
made = sum(3 * int(r[6]) for r in live)
received = sum(int(r[7]) for r in live)
print(f"\nlive: the sink received {received:,} spans for the {made:,} the measured hits made "
      f"(three a hit; {100 * received / made:.1f}%: below 100, the rest were dropped at "
      f"slate's queue; warm-ups and requests wrk did not count land in the window too).")
print("\nEvery round (req/s):")
for row in ["off", "live", "dead", "hung"]:
    print(f"  {row:5}: " + ", ".join(f"{float(r[2]):,.0f}" for r in rows if r[1] == row))
PY

[[ "$INSTR" == 1 ]] || exit 0

# hits URL N: N GETs of URL on one keep-alive connection, each a 200 with its whole body.
hits() {
    python3 - "$1" "$2" <<'PY'
import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
for _ in range(int(sys.argv[2])):
    c.request("GET", u.path + "?" + u.query)
    r = c.getresponse()
    if r.status != 200 or not r.read():
        sys.exit(f"GET {sys.argv[1]}: {r.status}")
PY
}

# instr_row ROW BIN TRACING_TOML: instructions per hit of BIN with TRACING_TOML, on stdout.
instr_row() {
    local row="$1" bin="$2" port admin pid out
    free_port port
    free_port admin
    write_config "cg-$row" "$port" "$admin" "$3"
    log "callgrind: $row"
    start "cg-$row" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg-$row.out" \
        "$bin" --config "$TMP/cg-$row.toml"
    pid="$LAST_PID"
    wait_http "cg-$row" "$pid" "http://127.0.0.1:$admin/healthz"
    hits "http://127.0.0.1:$port$URL_PATH" 200 || die "$row: warm-up failed"
    callgrind_control -z "$pid" >/dev/null
    hits "http://127.0.0.1:$port$URL_PATH" "$HITS" || die "$row: hits failed"
    callgrind_control -d "$pid" >/dev/null
    out="$(ls "$TMP/cg-$row.out".* 2>/dev/null | head -n 1)"
    [[ -n "$out" ]] || die "$row: callgrind wrote no dump"
    kill -TERM "$pid" 2>/dev/null || true
    awk -v n="$HITS" '/^(summary|totals):/ { print int($2 / n); exit }' "$out"
}

START_TIMEOUT_S=180
: >"$TMP/instr"
if [[ -n "${BASE_BIN:-}" ]]; then
    echo "base|$(instr_row base "$BASE_BIN" "")" >>"$TMP/instr"
fi
echo "off|$(instr_row off "$SLATE_BIN" "")" >>"$TMP/instr"
echo "live|$(instr_row live "$SLATE_BIN" "$(tracing_to "$SINK_PORT")")" >>"$TMP/instr"
echo "dead|$(instr_row dead "$SLATE_BIN" "$(tracing_to "$DEAD_PORT")")" >>"$TMP/instr"
echo "hung|$(instr_row hung "$SLATE_BIN" "$(tracing_to "$HUNG_PORT")")" >>"$TMP/instr"
python3 - "$TMP/instr" "$HITS" <<'PY'
import sys
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
off = next(int(r[1]) for r in rows if r[0] == "off")
print(f"\nInstructions per hit (callgrind, the whole process, over {sys.argv[2]} hits on one connection):\n")
print("| row | instructions per hit | vs off |")
print("|---|---:|---:|")
for name, n in rows:
    print(f"| {name} | {int(n):,} | {int(n) / off:.3f} |")
PY
