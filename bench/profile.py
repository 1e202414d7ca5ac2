#!/usr/bin/env python3
"""Profiles this build's tenantd under bench/run's gateway-overhead scenario:
`perf record -F 997 -g` on the server (pinned to the server core) for 8 s
while wrk drives it through the `fast` service with each tenant's key in turn.

    bench/profile.py --tenants 100 --out /tmp/tenantd.perf
    perf report -i /tmp/tenantd.perf --no-children --sort sym -g none

Needs `perf` (Debian's linux-perf) and the release build bench/run makes.
"""

import argparse
import subprocess

import run


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    procs = run.Processes()
    try:
        run.start_fast_upstream(procs)
        server, keys = run.start_tenantd(procs, "tenantd", "fair", args.tenants)
        # Warm: caches filled, connections to the upstream pooled.
        run.wrk(run.PORTS["tenantd"], "/v1/proxy/fast/ok", keys, 64, 1, 3)
        perf = subprocess.Popen(["perf", "record", "-F", "997", "-g", "-p", str(server.pid),
                                 "-o", args.out, "--", "sleep", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = run.wrk(run.PORTS["tenantd"], "/v1/proxy/fast/ok", keys, 64, 1, 9)
        perf.wait()
        print(f"{result['rps']:.0f} req/s while recording; wrote {args.out}")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    run.in_work_dir(main)
