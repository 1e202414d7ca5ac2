#!/usr/bin/env python3
"""Writes on the embedded default, this build against a baseline build: 16
connections of one tenant writing records (PUT) as fast as they can, the
two servers interleaved round by round, each pinned to the server core with
wrk on the other. Reports answers/s, p50 and p99, and the server's CPU time
per write (user + system, from /proc/<pid>/stat).

    bench/data_writes.py --baseline /path/to/old/tenantd [--rounds 5 --seconds 10]

The baseline is any tenantd binary, e.g. one built from an earlier commit:
    git worktree add /tmp/base <commit> && \\
      (cd /tmp/base && cargo build --release -p tenantd-cli)
It writes bench/results/data-writes.json.
"""

import argparse
import json
from pathlib import Path

import run

CONNECTIONS = 16


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    procs = run.Processes()
    systems = {"tenantd": run.RELEASE / "tenantd", "tenantd-baseline": args.baseline}
    rows = {name: [] for name in systems}
    try:
        servers, tokens = {}, {}
        for name, binary in systems.items():
            servers[name], _ = run.start_tenantd(procs, name, "fair", 0, binary=binary)
            tokens[name] = run.data_bench_tenant(name, records=0)
        for _ in range(args.rounds):
            for name in systems:
                pid = servers[name].pid
                before = run.group_cpu_seconds(pid)
                result = run.wrk(run.PORTS[name], "PUT /v1/collections/orders/records/r{n}",
                                 [tokens[name]], CONNECTIONS, 1, args.seconds)
                used = run.group_cpu_seconds(pid) - before
                # Per acknowledged write: a refused one costs little and did nothing.
                result["cpu_us_per_ok"] = used * 1e6 / max(result["ok"], 1)
                rows[name].append(result)
    finally:
        procs.stop_all()
    summary = {name: run.summarize(r, ["ok_per_s", "p50_us", "p99_us", "cpu_us_per_ok"])
               for name, r in rows.items()}
    out = run.BENCH / "results" / "data-writes.json"
    out.write_text(json.dumps({"rounds": args.rounds, "seconds": args.seconds,
                               "connections": CONNECTIONS, "summary": summary}, indent=2) + "\n")
    print("| build | writes/s | p50 ms | p99 ms | server CPU µs per write |")
    print("|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['ok_per_s']['median']:.0f} ({s['ok_per_s']['min']:.0f}–"
              f"{s['ok_per_s']['max']:.0f}) | {s['p50_us']['median'] / 1000:.2f} | "
              f"{s['p99_us']['median'] / 1000:.2f} ({s['p99_us']['min'] / 1000:.2f}–"
              f"{s['p99_us']['max'] / 1000:.2f}) | {s['cpu_us_per_ok']['median']:.0f} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    run.in_work_dir(main)
