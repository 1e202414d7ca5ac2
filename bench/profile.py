#!/usr/bin/env python3
"""Profiles this build's tenantd under bench/run's gateway-overhead scenario:
`perf record -F 997 -g` on the server (pinned to the server core) for 8 s
while wrk drives it through the `fast` service with each tenant's key in turn;
with `--tls`, over HTTP/1.1 and TLS as bench/tls.py's `h1` scenario does.

    bench/profile.py --tenants 100 [--tls] --out /tmp/tenantd.perf
    perf report -i /tmp/tenantd.perf --no-children --sort sym -g none

Needs `perf` (Debian's linux-perf) and the release build bench/run makes.
"""

import argparse
import subprocess

import run
import tls


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    procs = run.Processes()
    try:
        run.start_fast_upstream(procs)
        port, scheme, extra = run.PORTS["tenantd"], "http", ""
        if args.tls:
            cert, key = tls.make_certificate()
            port, scheme = tls.TLS_PORTS["tenantd"], "https"
            extra = f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nlisten = "127.0.0.1:{port}"\n'
        server, keys = run.start_tenantd(procs, "tenantd", "fair", args.tenants, extra=extra)
        load = dict(port=port, path="/v1/proxy/fast/ok", keys=keys, connections=64, threads=1,
                    scheme=scheme)
        # Warm: caches filled, connections to the upstream pooled.
        run.wrk(**load, seconds=3)
        perf = subprocess.Popen(["perf", "record", "-F", "997", "-g", "-p", str(server.pid),
                                 "-o", args.out, "--", "sleep", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = run.wrk(**load, seconds=9)
        perf.wait()
        print(f"{result['rps']:.0f} req/s while recording; wrote {args.out}")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    run.in_work_dir(main)
