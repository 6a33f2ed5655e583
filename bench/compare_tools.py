#!/usr/bin/env python3
"""Helpers of bench/compare.sh (standard library only).

  stampede  --targets HOST:PORT[,HOST:PORT...] --path /cold/x [--count 1000] [--timeout 30]
            [--expect-size N]
      Opens COUNT connections at once (spread round-robin over the targets), waits until
      all are connected, then writes one identical `GET PATH` on each in one burst and
      reads every answer. Prints one JSON object: how many answered 200 with the expected
      body size, the status and cache-header tallies, errors, and timings. Bounded by
      --timeout seconds in all.

  cpu ROOT_PID
      Prints "busy total ours": the machine's process (user + nice + system) and total jiffies
      from /proc/stat, and the
      CPU jiffies used by ROOT_PID and all its descendants, alive or reaped (utime + stime +
      cutime + cstime). Two samples give the CPU that processes outside the benchmark used
      in between: (busy2 - busy1) - (ours2 - ours1).

  rss PID
      Prints the summed VmRSS, in KiB, of PID and all its descendants.

  tree PID
      Prints PID and the ids of all its descendants, one a line.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time


# ---------------------------------------------------------------- process helpers
def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode("latin-1")
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    return rest  # rest[0] = state (field 3), rest[1] = ppid (field 4), ...


def _children_map():
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(name)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def _tree(root):
    children = _children_map()
    out, todo = [], [root]
    while todo and len(out) < 100000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cmd_cpu(args):
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    # "busy" is process time only: interrupt time (mostly the loopback traffic of the
    # benchmark itself) and steal are charged to no process, so they would show up as
    # "others" below.
    busy = cpu[0] + cpu[1] + cpu[2]
    total = sum(cpu[:8])
    # with the children's that were waited for (cutime, cstime): the whole run so far
    print(busy, total, _ticks([args.root], waited_children=True))


def _ticks(roots, waited_children=False):
    """CPU time in clock ticks of every process in the trees of `roots`: utime + stime
    (fields 14-15, rest[11:13]), and with `waited_children` cutime + cstime (16-17)."""
    end = 15 if waited_children else 13
    seen, total = set(), 0
    for root in roots:
        for pid in _tree(root):
            if pid in seen:
                continue
            seen.add(pid)
            try:
                total += sum(int(x) for x in _stat_fields(pid)[11:end])
            except (OSError, ValueError):
                continue
    return total


def cmd_ticks(args):
    """CPU ticks of the trees of the given pids, so a run's CPU per request can be read
    from two samples."""
    print(_ticks(args.pids))


def cmd_tree(args):
    for pid in _tree(args.pid):
        print(pid)


def cmd_rss(args):
    total = 0
    for pid in _tree(args.pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    print(total)


# ---------------------------------------------------------------- stampede
CACHE_HEADERS = ("cache-status", "x-cache-status", "x-cache")


def _parse_response(data, expect_size):
    """Returns (status, body_size, cache_header) for one HTTP/1.1 response read to EOF."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no end of headers in {len(data)} bytes")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out, rest = bytearray(), body
        for _ in range(1_000_000):
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = bytes(out)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    cache = ""
    for h in CACHE_HEADERS:
        if h in headers:
            cache = headers[h]
            break
    # "slate; hit; ttl=3599" -> "slate; hit": drop the parts that change per response
    cache = "; ".join(p.strip() for p in cache.split(";") if "=" not in p or p.strip().startswith("fwd="))
    return status, len(body), cache


async def _stampede(args):
    targets = []
    for t in args.targets.split(","):
        host, _, port = t.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise SystemExit(f"stampede: refusing non-loopback target {t}")
        targets.append((host, int(port)))
    deadline = time.monotonic() + args.timeout
    result = {
        "sent": 0, "ok": 0, "statuses": {}, "cache": {}, "errors": {},
        "connect_s": None, "last_answer_s": None, "targets": len(targets),
    }

    def err(kind):
        result["errors"][kind] = result["errors"].get(kind, 0) + 1

    async def connect(i):
        host, port = targets[i % len(targets)]
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(host, port), max(0.1, deadline - time.monotonic()))
            return (r, w, host, port)
        except Exception as e:  # noqa: BLE001 - any failure is counted, not raised
            err("connect: " + type(e).__name__)
            return None

    t0 = time.monotonic()
    conns = await asyncio.gather(*(connect(i) for i in range(args.count)))
    result["connect_s"] = round(time.monotonic() - t0, 3)
    conns = [c for c in conns if c is not None]

    # One burst: every request is written before any answer is read.
    t_send = time.monotonic()
    for r, w, host, port in conns:
        w.write(f"GET {args.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"User-Agent: slate-bench-stampede\r\nConnection: close\r\n\r\n".encode())
        result["sent"] += 1
    last = [0.0]

    async def finish(conn):
        r, w, _, _ = conn
        try:
            data = await asyncio.wait_for(r.read(), max(0.1, deadline - time.monotonic()))
            last[0] = max(last[0], time.monotonic() - t_send)
            status, size, cache = _parse_response(data, args.expect_size)
            result["statuses"][str(status)] = result["statuses"].get(str(status), 0) + 1
            if cache:
                result["cache"][cache] = result["cache"].get(cache, 0) + 1
            if status == 200 and (args.expect_size < 0 or size == args.expect_size):
                result["ok"] += 1
            elif status == 200:
                err(f"body of {size} bytes")
        except Exception as e:  # noqa: BLE001
            err("answer: " + type(e).__name__)
        finally:
            w.close()

    await asyncio.gather(*(finish(c) for c in conns))
    result["last_answer_s"] = round(last[0], 3)
    return result


def cmd_stampede(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.count + 256))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    print(json.dumps(asyncio.run(_stampede(args)), sort_keys=True))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stampede")
    s.add_argument("--targets", required=True)
    s.add_argument("--path", required=True)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--expect-size", type=int, default=-1)
    s.set_defaults(func=cmd_stampede)
    c = sub.add_parser("cpu")
    c.add_argument("root", type=int)
    c.set_defaults(func=cmd_cpu)
    k = sub.add_parser("ticks")
    k.add_argument("pids", type=int, nargs="+")
    k.set_defaults(func=cmd_ticks)
    t = sub.add_parser("tree")
    t.add_argument("pid", type=int)
    t.set_defaults(func=cmd_tree)
    r = sub.add_parser("rss")
    r.add_argument("pid", type=int)
    r.set_defaults(func=cmd_rss)
    args = p.parse_args()
    if getattr(args, "count", 1) < 1 or getattr(args, "count", 1) > 20000:
        sys.exit("stampede: --count must be between 1 and 20000")
    args.func(args)


if __name__ == "__main__":
    main()
