#!/usr/bin/env python3
"""One node against three on one PostgreSQL catalog and one Redis, in one run,
interleaved round by round:

- `1 node`: one tenantd on a PostgreSQL catalog with `[admission.redis]`;
- `3 nodes`: three tenantd on another catalog (another Redis database), each
  load split evenly over them (one wrk per node, run at once).

Each round measures two things:

- CPU per request: bench/run's gateway-overhead scenario (the `fast`
  upstream, each request with the next of 100 tenants' keys, a quota far from
  its limit), req/s and the tenantd processes' CPU µs per request (user +
  system, from /proc, summed over the nodes) and Redis's;
- over-admission: one fresh tenant with a hard quota of 20,000 requests a day
  driven by 64 connections for 3 s (well past the limit): what was admitted.

Every tenantd is pinned to the server core, so one node and three share the
same CPU; wrk, the upstream, Redis and PostgreSQL share the other.

    bench/cluster.py [--rounds 3 --seconds 5]

It writes bench/results/cluster.json and prints a table for bench/RESULTS.md.
"""

import argparse
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import run

PG_PORT = 19110
REDIS_PORT = 19111
NODE_PORTS = {"1 node": [19120], "3 nodes": [19121, 19122, 19123]}
TENANTS = 100
CONNECTIONS = 64
LIMIT = 20_000
# Fixed for the run: every node of one setup must have the same.
SECRET = secrets.token_hex(32)


def as_postgres(args):
    """`args` as the postgres user when this runs as root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        if (version / "bin" / name).exists():
            return str(version / "bin" / name)
    raise RuntimeError(f"{name} not found: install PostgreSQL")


def start_postgres(procs):
    data = run.WORK / "postgres"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(run.WORK, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(as_postgres([pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                                "--auth", "trust"]), check=True, capture_output=True)
    process = procs.start("postgres", as_postgres([
        pg_bin("postgres"), "-D", str(data), "-p", str(PG_PORT), "-k", str(data),
        "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=off"]),
        run.LOAD_CORE)
    deadline = time.time() + 30
    while subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(PG_PORT)],
                         capture_output=True).returncode != 0:
        if time.time() > deadline:
            raise RuntimeError("PostgreSQL did not start")
        time.sleep(0.2)
    sql = ["CREATE ROLE tenantd_owner LOGIN CREATEDB",
           "CREATE ROLE tenantd_app LOGIN NOSUPERUSER NOBYPASSRLS"]
    for setup in ("one", "three"):
        sql += [f"CREATE DATABASE catalog_{setup} OWNER tenantd_owner",
                f"CREATE DATABASE data_{setup} OWNER tenantd_owner"]
    for statement in sql:
        subprocess.run([pg_bin("psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres",
                        "-q", "-c", statement], check=True)
    return process


def url(role, database):
    return f"postgres://{role}@127.0.0.1:{PG_PORT}/{database}"


def start_node(procs, setup, n, port, redis_db, operator):
    name = f"{setup}-{n}"
    data = run.WORK / name
    data.mkdir()
    (data / "tenantd.toml").write_text(f"""
listen = "127.0.0.1:{port}"
log_level = "warn"
node_name = "{name}"
catalog_url = "{url('tenantd_owner', 'catalog_' + setup)}"
server_secret = "{SECRET}"

[[plans]]
id = "default"
rate = {{ requests = 1000000, per = "1s", burst = 1000000 }}
quotas = [{{ metric = "requests", period = "day", hard = 1000000000 }}]

[[plans]]
id = "limited"
rate = {{ requests = 1000000, per = "1s", burst = 1000000 }}
quotas = [{{ metric = "requests", period = "day", hard = {LIMIT} }}]

[admission]
seats = 256

[admission.redis]
url = "redis://127.0.0.1:{REDIS_PORT}/{redis_db}"
on_unavailable = "fail_open"

[[pools]]
name = "main"
engine = "postgres"
location = "{url('tenantd_app', 'data_' + setup)}"
owner_location = "{url('tenantd_owner', 'data_' + setup)}"
models = ["pooled"]

[[gateway.services]]
name = "fast"
upstreams = ["http://127.0.0.1:{run.FAST_UPSTREAM_PORT}"]
max_in_flight_per_tenant = 256
retries = 0
""")
    process = procs.start(name, [str(run.RELEASE / "tenantd"), "serve"], run.SERVER_CORE,
                          env={"TENANTD_BOOTSTRAP_KEY": operator}, cwd=data)
    try:
        run.wait_for_port(port)
    except RuntimeError:
        print((run.WORK / f"{name}.log").read_text())
        raise
    return process


def tenant_keys(port, operator, prefix, count, plan="default"):
    def make(i):
        tenant = f"{prefix}{i:05d}"
        run.api(port, operator, "POST", "/v1/tenants", {"id": tenant, "name": tenant, "plan": plan})
        return run.api(port, operator, "POST", f"/v1/tenants/{tenant}/keys",
                       {"role": "developer", "name": "bench"})["token"]
    return [make(i) for i in range(count)]


def quota_calls(ports, operator):
    """Calls the nodes made to Redis for shared quotas so far (every kind and
    outcome of `tenantd_shared_quota_calls_total`), summed over the nodes."""
    total = 0.0
    for port in ports:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": f"Bearer {operator}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("tenantd_shared_quota_calls_total"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def measure(ports, pids, redis_pid, keys, seconds, operator):
    """Each node's share of the load at once; CPU summed over the nodes."""
    per_node = CONNECTIONS // len(ports)
    calls_before = quota_calls(ports, operator)
    before = [run.group_cpu_seconds(p) for p in pids]
    redis_before = run.group_cpu_seconds(redis_pid)
    results = run.wrk_together([
        {"port": port, "path": "/v1/proxy/fast/ok", "keys": keys, "connections": per_node,
         "threads": 1, "seconds": seconds} for port in ports])
    used = sum(run.group_cpu_seconds(p) for p in pids) - sum(before)
    redis_used = run.group_cpu_seconds(redis_pid) - redis_before
    calls = quota_calls(ports, operator) - calls_before
    requests = sum(r["requests"] for r in results)
    duration = max(r["duration_us"] for r in results) / 1e6
    return {"rps": requests / duration,
            "cpu_us_per_request": used * 1e6 / max(requests, 1),
            "redis_cpu_us_per_request": redis_used * 1e6 / max(requests, 1),
            "quota_calls_per_1000_requests": calls * 1000 / max(requests, 1)}


def over_admission(ports, operator, round_number):
    key = tenant_keys(ports[0], operator, f"limited-{round_number}-", 1, plan="limited")
    # The nodes learn of the tenant through the change feed within a second.
    time.sleep(1.5)
    per_node = CONNECTIONS // len(ports)
    results = run.wrk_together([
        {"port": port, "path": "/v1/proxy/fast/ok", "keys": key, "connections": per_node,
         "threads": 1, "seconds": 3} for port in ports])
    return sum(r["ok"] for r in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    procs = run.Processes()
    rows = {setup: [] for setup in NODE_PORTS}
    try:
        run.start_fast_upstream(procs)
        start_postgres(procs)
        redis = procs.start("redis", ["redis-server", "--port", str(REDIS_PORT), "--save", "",
                                      "--appendonly", "no"], run.LOAD_CORE)
        time.sleep(0.5)
        pids, keys, operators = {}, {}, {}
        for db, (setup, ports) in enumerate(NODE_PORTS.items()):
            operator = "tk_" + secrets.token_hex(8) + "_" + secrets.token_hex(24)
            operators[setup] = operator
            catalog = "one" if len(ports) == 1 else "three"
            pids[setup] = [start_node(procs, catalog, n, port, db, operator).pid
                           for n, port in enumerate(ports, 1)]
            keys[setup] = tenant_keys(ports[0], operator, "t", TENANTS)
        time.sleep(1.5)
        for round_number in range(args.rounds):
            for setup, ports in NODE_PORTS.items():
                row = measure(ports, pids[setup], redis.pid, keys[setup], args.seconds,
                              operators[setup])
                row["admitted"] = over_admission(ports, operators[setup], round_number)
                row["over_admission_percent"] = (row["admitted"] - LIMIT) * 100 / LIMIT
                rows[setup].append(row)
                print(setup, json.dumps(row), flush=True)
    finally:
        procs.stop_all()
    fields = ["rps", "cpu_us_per_request", "redis_cpu_us_per_request",
              "quota_calls_per_1000_requests", "admitted", "over_admission_percent"]
    summary = {setup: run.summarize(r, fields) for setup, r in rows.items()}
    out = run.BENCH / "results" / "cluster.json"
    out.write_text(json.dumps({"rounds": args.rounds, "seconds": args.seconds,
                               "tenants": TENANTS, "connections": CONNECTIONS, "limit": LIMIT,
                               "rows": rows, "summary": summary}, indent=2) + "\n")
    print("| setup | req/s | tenantd CPU µs per request | Redis CPU µs per request "
          "| quota calls to Redis per 1,000 requests | admitted of 20,000 | over-admission |")
    print("|---|---|---|---|---|---|---|")
    for setup, s in summary.items():
        print(f"| {setup} | {spread(s['rps'], '{:.0f}')} | {spread(s['cpu_us_per_request'], '{:.1f}')} "
              f"| {spread(s['redis_cpu_us_per_request'], '{:.1f}')} "
              f"| {spread(s['quota_calls_per_1000_requests'], '{:.1f}')} | {spread(s['admitted'], '{:.0f}')} "
              f"| {spread(s['over_admission_percent'], '{:.2f} %')} |")


def spread(stat, fmt):
    return f"{fmt.format(stat['median'])} ({fmt.format(stat['min'])}–{fmt.format(stat['max'])})"


if __name__ == "__main__":
    run.in_work_dir(main)
