#!/usr/bin/env python3
"""bench/run's gateway-overhead scenario (section 1: an upstream with no
service time, 64 wrk connections, each request with the next tenant's key)
for this build, a baseline tenantd binary, nginx (`limit_req` per key) and
hyper-floor (the plainest reverse proxy on hyper, tenantd's HTTP stack),
interleaved round by round, each server pinned to the server core with wrk
and the upstream on the other. Reports req/s, p50, p99 and each server's CPU
time per request (user + system, from /proc/<pid>/stat, over the round).

    bench/gateway_compare.py --baseline /path/to/old/tenantd [--tenants 100 --rounds 3 --seconds 5]

The baseline is any tenantd binary, e.g. one built from an earlier commit
(see bench/data_writes.py). It writes bench/results/gateway-compare-<tenants>.json.
"""

import argparse
import json
from pathlib import Path
import run

CONNECTIONS = 64


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    procs = run.Processes()
    rows = {name: [] for name in ["nginx", "hyper-floor", "tenantd-baseline", "tenantd"]}
    try:
        run.start_fast_upstream(procs)
        servers, keys = {}, {}
        for name, binary in [("tenantd", run.RELEASE / "tenantd"),
                             ("tenantd-baseline", args.baseline)]:
            servers[name], keys[name] = run.start_tenantd(procs, name, "fair", args.tenants,
                                                          binary=binary)
        servers["nginx"] = run.start_nginx(procs)
        servers["hyper-floor"] = run.start_hyper_floor(procs)
        keys["nginx"] = keys["hyper-floor"] = keys["tenantd"]
        for _ in range(args.rounds):
            for name in rows:
                rows[name].append(run.wrk_measured(servers[name].pid, run.PORTS[name],
                                                   "/v1/proxy/fast/ok", keys[name], CONNECTIONS,
                                                   1, args.seconds))
    finally:
        procs.stop_all()
    summary = {name: run.summarize(r, ["rps", "p50_us", "p99_us", "cpu_us_per_request"])
               for name, r in rows.items()}
    out = run.BENCH / "results" / f"gateway-compare-{args.tenants}.json"
    out.write_text(json.dumps({"tenants": args.tenants, "rounds": args.rounds,
                               "seconds": args.seconds, "connections": CONNECTIONS,
                               "summary": summary}, indent=2) + "\n")
    print("| system | req/s | p50 ms | p99 ms | server CPU µs per request |")
    print("|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['rps']['median']:.0f} ({s['rps']['min']:.0f}–{s['rps']['max']:.0f})"
              f" | {s['p50_us']['median'] / 1000:.2f} | {s['p99_us']['median'] / 1000:.2f} | "
              f"{s['cpu_us_per_request']['median']:.1f} "
              f"({s['cpu_us_per_request']['min']:.1f}–{s['cpu_us_per_request']['max']:.1f}) |")
    print(f"wrote {out}")


if __name__ == "__main__":
    run.in_work_dir(main)
