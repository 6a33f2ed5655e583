#!/usr/bin/env python3
"""The Markdown report of bench/realistic.sh (standard library only).

    python3 bench/realistic_report.py TMP

reads TMP/meta (key=value lines) and, per system, TMP/results/SYSTEM.json (the driver's
measured phase), SYSTEM.warm.json (its warm phase) and SYSTEM.extra.json (CPU, Redis, origin
and RSS samples of the script), and TMP/results/perf.txt when there is one; prints the report.
"""

import json
import os
import sys

tmp = sys.argv[1]
meta = {}
for line in open(f"{tmp}/meta"):
    k, _, v = line.rstrip("\n").partition("=")
    meta[k] = v
systems = meta["systems"].split()
R = {}
for s in systems:
    d = json.load(open(f"{tmp}/results/{s}.json"))
    d.update(json.load(open(f"{tmp}/results/{s}.extra.json")))
    d["warm"] = json.load(open(f"{tmp}/results/{s}.warm.json"))
    rss = f"{tmp}/results/{s}.rss"
    d["rss_samples"] = [tuple(map(int, l.split())) for l in open(rss) if len(l.split()) == 2] \
        if os.path.exists(rss) else []
    n = max(1, d["answers"])
    d["cpu_us"] = d["server_ticks"] / d["clk_tck"] * 1e6 / n
    d["redis_cpu_us"] = d["redis_ticks"] / d["clk_tck"] * 1e6 / n
    R[s] = d


def second_half_growth(d):
    """(MiB, %) RSS grew from the middle of the measured phase to its end, or None."""
    xs = d["rss_samples"]
    if len(xs) < 4:
        return None
    mid, end = xs[len(xs) // 2][1], xs[-1][1]
    return (end - mid) / 1024, 100.0 * (end - mid) / max(1, mid)


out = []
p = out.append


def f(v, spec):
    return "-" if v is None else format(v, spec)


def verdict(ok):
    return "met" if ok else "**missed**"


p("# Realistic traffic: bench/realistic.sh")
p("")
p(f"{meta['date']}, commit {meta['commit']}. Machine: {meta['machine']}.")
p(f"{meta['versions']}.")
p("")
quick = " (QUICK=1: a short regression print, not the benchmark of record)" if meta["QUICK"] == "1" else ""
p(f"Workload{quick}: seed {meta['SEED']}, {int(meta['REPORTS']):,} warm reports (JSON rows, log-normal sizes "
  f"2 KiB..2 MiB, median 40 KiB, `Cache-Control: public, max-age=86400`), Zipf s = 1.0; warm phase: every warm "
  f"report once; measured phase: {meta['DURATION']} s, {meta['CONNECTIONS']} closed-loop connections, "
  f"{float(meta['COLD_SHARE']) * 100:g}% of requests to cold reports never asked before (origin 1-5 s, each on a "
  f"connection of its own so that they do not hold the closed loop), {float(meta['GZIP_SHARE']) * 100:g}% of "
  f"requests with `Accept-Encoding: gzip, deflate, br, zstd`, the rest none. Cache memory of every system: "
  f"{meta['CACHE_MEM']} MiB. Load average before the run: {meta['load']}.")
busy = [s for s in systems if R[s]["foreign_pct"] >= 10]
if busy:
    p("")
    p(f"**NOTE: processes outside the benchmark used 10% or more of the machine during the measured phase of "
      f"{', '.join(busy)}: those numbers are noisy.**")

p("")
p("## Throughput and latency (measured phase)")
p("")
p("| system | req/s | hit p50 ms | hit p99 ms | hit p99.9 ms | miss p50 ms | miss p99 ms | miss p99.9 ms | hit ratio | errors | others' CPU |")
p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in systems:
    d = R[s]
    p(f"| {d['label']} | {d['req_per_s']:,.0f} | {f(d['hit_p50_ms'], '.2f')} | {f(d['hit_p99_ms'], '.2f')} | "
      f"{f(d['hit_p999_ms'], '.2f')} | {f(d['miss_p50_ms'], ',.0f')} | {f(d['miss_p99_ms'], ',.0f')} | "
      f"{f(d['miss_p999_ms'], ',.0f')} | {d['hit_ratio']:.4f} | {d['errors'] + d['warm']['errors']} | {d['foreign_pct']}% |")
p("")
p("Hit or miss by the system's own header (slate `Cache-Status`, nginx `X-Cache-Status`, Varnish `X-Cache` from "
  "the VCL); errors: measured and warm phase (transport, timeout, non-200, identity body of the wrong length); "
  "others' CPU: CPU used by processes outside the benchmark during the measured phase.")

p("")
p("## Cost per answer (measured phase)")
p("")
p("| system | CPU µs/answer, server | CPU µs/answer, Redis | bytes/answer on the wire | identity bytes/answer | "
  "Redis GETs/answer | Redis calls/answer | Redis bytes out/hit | ÷ identity bytes/hit | RSS MiB server (after warm → after) | "
  "RSS MiB Redis | upstream requests | cold reports asked |")
p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in systems:
    d = R[s]
    n = max(1, d["answers"])
    redis = d["redis_nodes"] > 0
    bph = d["redis_bytes_out"] / max(1, d["hits"]) if redis else None
    p(f"| {d['label']} | {d['cpu_us']:,.0f} | {f(d['redis_cpu_us'] if redis else None, ',.0f')} | "
      f"{d['bytes_per_answer']:,.0f} | {d['identity_bytes_per_answer']:,.0f} | "
      f"{f(d['redis_gets'] / n if redis else None, '.3f')} | {f(d['redis_calls'] / n if redis else None, '.3f')} | "
      f"{f(bph, ',.0f')} | {f(bph / d['identity_bytes_per_hit'] if redis else None, '.3f')} | "
      f"{d['rss_kib_warm'] / 1024:,.0f} → {d['rss_kib'] / 1024:,.0f} | "
      f"{f(d['redis_rss_kib'] / 1024 if redis else None, ',.0f')} | {d['upstream_measured']:,} | {d['cold_requests']:,} |")
p("")
p("CPU: utime + stime from `/proc` of the system's processes (nginx: master and workers; Varnish: manager and "
  "child; 3 slates: all three) and of its redis-server(s), during the measured phase, ÷ answers. The driver shares "
  "the two cores, so req/s move with what the server leaves to the driver; CPU per answer is the server's own "
  "cost. Redis bytes out: `total_net_output_bytes` from `INFO` (every node of the cluster). Upstream requests: "
  "what the origin served during the measured phase; a cold report is asked once, so the ideal is the cold column.")

p("")
p("## Warm phase")
p("")
p("| system | seconds | answers | upstream requests | errors |")
p("|---|---:|---:|---:|---:|")
for s in systems:
    w = R[s]["warm"]
    p(f"| {R[s]['label']} | {w['seconds']:.1f} | {w['answers']:,} | {R[s]['upstream_warm']:,} | {w['errors']} |")

ref_names = [s for s in ("nginx", "varnish") if s in R]
if ref_names:
    ref = max(ref_names, key=lambda s: R[s]["req_per_s"])
    rd = R[ref]
    p("")
    p(f"## Ratios to the faster of nginx and Varnish ({rd['label']}, {rd['req_per_s']:,.0f} req/s)")
    p("")
    p("| system | req/s ÷ | hit p99 ÷ | hit p99.9 ÷ | server CPU/answer: theirs ÷ this | bytes/answer ÷ |")
    p("|---|---:|---:|---:|---:|---:|")
    for s in systems:
        d = R[s]
        p(f"| {d['label']} | {d['req_per_s'] / rd['req_per_s']:.2f}x | {d['hit_p99_ms'] / rd['hit_p99_ms']:.2f}x | "
          f"{d['hit_p999_ms'] / rd['hit_p999_ms']:.2f}x | {rd['cpu_us'] / d['cpu_us']:.2f}x | "
          f"{d['bytes_per_answer'] / rd['bytes_per_answer']:.2f}x |")

    p("")
    p("## Against the targets (issue 18)")
    p("")
    p("| target | measured | goal | |")
    p("|---|---:|---:|---|")
    for s in ("slate-memory", "slate-l1"):
        if s not in R:
            continue
        d = R[s]
        r = d["req_per_s"] / rd["req_per_s"]
        p(f"| {d['label']} req/s ÷ {rd['label']} | {r:.2f}x | ≥ 1.30x | {verdict(r >= 1.3)} |")
        q = d["hit_p99_ms"] / rd["hit_p99_ms"]
        p(f"| {d['label']} hit p99 ÷ {rd['label']} | {q:.2f}x | ≤ 1.00x | {verdict(q <= 1.0)} |")
    if "slate-redis" in R and "nginx" in R:
        r = R["slate-redis"]["req_per_s"] / R["nginx"]["req_per_s"]
        p(f"| slate Redis, no L1, req/s ÷ nginx | {r:.2f}x | ≥ 1.00x | {verdict(r >= 1.0)} |")
    if "slate-3x" in R:
        d = R["slate-3x"]
        p(f"| 3 slates: upstream requests = cold reports asked | {d['upstream_measured']:,} vs {d['cold_requests']:,} | "
          f"equal | {verdict(d['upstream_measured'] == d['cold_requests'])} |")
        b = d["redis_bytes_out"] / max(1, d["hits"]) / d["identity_bytes_per_hit"]
        p(f"| 3 slates: Redis bytes per hit ÷ body size | {b:.3f}x | ≤ 0.30x | {verdict(b <= 0.3)} |")
    errs = sum(R[s]["errors"] + R[s]["warm"]["errors"] for s in systems)
    p(f"| errors, every system, warm and measured | {errs} | 0 | {verdict(errs == 0)} |")
    soak = int(meta["DURATION"]) >= 600
    for s in systems:
        if not s.startswith("slate"):
            continue
        g = second_half_growth(R[s])
        if g is None:
            continue
        mib, pct = g
        flat = pct <= 5.0
        p(f"| {R[s]['label']}: RSS over the second half of the measured phase "
          f"{'(a 10-minute soak)' if soak else '(not a soak: DURATION < 600)'} | {mib:+,.0f} MiB ({pct:+.1f}%) | "
          f"flat (≤ 5%) | {verdict(flat) if soak else 'not a soak'} |")

rss_systems = [s for s in systems if R[s]["rss_samples"]]
if rss_systems:
    p("")
    p("## RSS over the measured phase")
    p("")
    p("MiB of the system's processes, sampled every DURATION/20 s (`bench/realistic.sh`):")
    p("")
    for s in rss_systems:
        p(f"- {R[s]['label']}: " + ", ".join(f"{t} s {k / 1024:,.0f}" for t, k in R[s]["rss_samples"]))

perf = os.path.join(tmp, "results", "perf.txt")
if os.path.exists(perf):
    p("")
    p("## perf: slate Redis without L1, measured phase (PERF=1)")
    p("")
    p("`perf record -F 499 -g -p <slate>`, top symbols (self):")
    p("")
    p("```")
    p(open(perf).read().rstrip())
    p("```")
p("")
p("Hit checks (a second GET of `/report?id=1`): " +
  "; ".join(f"{R[s]['label']} `{R[s]['hit_marker']}`" for s in systems) + ".")
p("")
p(f"Reproduce: `{meta['repro']}`")
print("\n".join(out))
