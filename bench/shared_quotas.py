#!/usr/bin/env python3
"""What sharing quotas through Redis costs a node: bench/run's
gateway-overhead scenario (64 connections, the `fast` upstream, each request
with the next tenant's key) against three tenantd nodes whose default plan
has a requests-per-day quota far from its limit, interleaved round by round:

- `tenantd-local`: this build, no Redis: rate limits and quotas decided alone;
- `tenantd-baseline`: a baseline build with Redis for rate limits (quotas local);
- `tenantd-shared`: this build with Redis for rate limits and shared quotas.

Each node is pinned to the server core; wrk, the upstream and Redis share
the other. Reports req/s, p50, p99, each node's CPU time per request (user +
system, from /proc) and Redis's.

    bench/shared_quotas.py --baseline /path/to/old/tenantd [--tenants 100 --rounds 3 --seconds 5]

It writes bench/results/shared-quotas-<tenants>.json.
"""

import argparse
import json
import socket
import time
from pathlib import Path
import run

CONNECTIONS = 64
REDIS_PORT = 19090
QUOTAS = '[{ metric = "requests", period = "day", hard = 1000000000 }]'


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    procs = run.Processes()
    rows = {name: [] for name in ["tenantd-local", "tenantd-baseline", "tenantd-shared"]}
    try:
        run.start_fast_upstream(procs)
        redis = procs.start("redis", ["redis-server", "--port", str(REDIS_PORT), "--save", "",
                                      "--appendonly", "no"], run.LOAD_CORE)
        run.wait_for_port(run.FAST_UPSTREAM_PORT)
        wait_for_redis()
        servers, keys = {}, {}
        # Each node its own Redis database: the nodes' tenants share names.
        for db, (name, binary, redis_db) in enumerate([
                ("tenantd-local", run.RELEASE / "tenantd", None),
                ("tenantd-baseline", args.baseline, 1),
                ("tenantd-shared", run.RELEASE / "tenantd", 2)]):
            extra = ("" if redis_db is None else
                     f'[admission.redis]\nurl = "redis://127.0.0.1:{REDIS_PORT}/{redis_db}"\n'
                     'on_unavailable = "fail_open"\n')
            servers[name], keys[name] = run.start_tenantd(procs, name, "fair", args.tenants,
                                                          binary=binary, quotas=QUOTAS,
                                                          extra=extra)
        for _ in range(args.rounds):
            for name in rows:
                before = run.group_cpu_seconds(redis.pid)
                result = run.wrk_measured(servers[name].pid, run.PORTS[name],
                                          "/v1/proxy/fast/ok", keys[name], CONNECTIONS, 1,
                                          args.seconds)
                used = run.group_cpu_seconds(redis.pid) - before
                result["redis_cpu_us_per_request"] = used * 1e6 / max(result["requests"], 1)
                rows[name].append(result)
    finally:
        procs.stop_all()
    fields = ["rps", "p50_us", "p99_us", "cpu_us_per_request", "redis_cpu_us_per_request"]
    summary = {name: run.summarize(r, fields) for name, r in rows.items()}
    out = run.BENCH / "results" / f"shared-quotas-{args.tenants}.json"
    out.write_text(json.dumps({"tenants": args.tenants, "rounds": args.rounds,
                               "seconds": args.seconds, "connections": CONNECTIONS,
                               "summary": summary}, indent=2) + "\n")
    print("| node | req/s | p50 ms | p99 ms | node CPU µs per request | Redis CPU µs per request |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {spread(s['rps'], 1, 0)} | {spread(s['p50_us'], 1000, 2)} "
              f"| {spread(s['p99_us'], 1000, 2)} | {spread(s['cpu_us_per_request'], 1, 1)} "
              f"| {spread(s['redis_cpu_us_per_request'], 1, 1)} |")
    print(f"wrote {out}")


def wait_for_redis(timeout=30):
    """Until Redis accepts a connection (it speaks no HTTP, which
    run.wait_for_port asks)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"Redis did not listen on port {REDIS_PORT} within {timeout} s")


def spread(stat, divisor, digits):
    """A median with its range, as bench/RESULTS.md writes them."""
    v = {k: stat[k] / divisor for k in ("median", "min", "max")}
    return f"{v['median']:.{digits}f} ({v['min']:.{digits}f}–{v['max']:.{digits}f})"

if __name__ == "__main__":
    run.in_work_dir(main)
