#!/usr/bin/env python3
"""Side-by-side benchmarks: tenantd against nginx and HAProxy in front of the
same upstream, on 127.0.0.1, driven by wrk. Started by `bench/run`, which
installs the peers and builds the binaries first.

Every process this script starts is stopped when it ends, whatever happens.
The server under test is pinned to one core and the load generator and the
upstream to the other; systems are interleaved within each round, and each
row is the median of the rounds with its spread (min to max).
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELEASE = ROOT / "target" / "release"
SERVER_CORE = "0"
LOAD_CORE = "1"
UPSTREAM_PORT = 19000
FAST_UPSTREAM_PORT = 19001
HELLO_PORT = 19002
PORTS = {"tenantd": 19080, "tenantd-fifo": 19083, "tenantd-capped": 19084, "nginx": 19081,
         "haproxy": 19082, "tenantd-baseline": 19085, "hyper-floor": 19086,
         "tenantd-local": 19087, "tenantd-shared": 19088, "tenantd-tls": 19089}
# The operator key of each tenantd started, by name.
OPERATORS = {}

# The upstream of the isolation scenarios: 8 requests at once, 2 ms each,
# so about 4,000 requests a second. Each tenant's rate limit alone allows
# half of that: rate limiting cannot isolate tenants here.
SERVICE_TIME = "2ms"
UPSTREAM_SLOTS = 8
TENANT_RATE = 2000
TENANT_BURST = 200
# Every system answers a request it cannot finish in time with an error, so
# a 2xx is an answer within the deadline (goodput).
DEADLINE_S = 2
# Think time of the overload ramp's clients.
THINK_MS = 20


class Processes:
    """The processes this run started; all stopped on exit."""

    def __init__(self):
        self.running = []

    def start(self, name, args, core, env=None, cwd=None):
        log = open(WORK / f"{name}.log", "w")
        process = subprocess.Popen(
            ["taskset", "-c", core, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self.running.append((name, process))
        return process

    def stop(self, process):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.running = [(n, p) for n, p in self.running if p is not process]

    def stop_all(self):
        for _, process in list(self.running):
            self.stop(process)


def data_bench_tenant(name, records):
    """On tenantd `name`: tenant `data-bench` on the unlimited `bulk` plan, its
    collection `orders` (indexed by `customer`) with `records` records r1, r2,
    …; returns a developer key of it."""
    port, operator = PORTS[name], OPERATORS[name]
    api(port, operator, "POST", "/v1/tenants", {"id": "data-bench", "name": "data", "plan": "bulk"})
    token = api(port, operator, "POST", "/v1/tenants/data-bench/keys",
                {"role": "developer", "name": "bench"})["token"]
    api(port, token, "POST", "/v1/collections", {"name": "orders", "indexes": ["customer"]})
    for start in range(1, records + 1, 500):
        operations = [{"op": "put", "id": f"r{n}",
                       "data": {"customer": f"c{n % 100}", "total": n}}
                      for n in range(start, min(start + 500, records + 1))]
        api(port, token, "POST", "/v1/collections/orders/batch", {"operations": operations})
    return token


def group_cpu_seconds(pgid):
    """User plus system CPU time of every process in group `pgid` (a server
    and the workers it forked, as nginx does), in seconds, from /proc."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, pgrp, …; utime and stime are 12 and 13.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk_measured(pid, *args, **kwargs):
    """`wrk(*args)`, with the server CPU µs per request of process group
    `pid` over the run added as `cpu_us_per_request`."""
    before = group_cpu_seconds(pid)
    result = wrk(*args, **kwargs)
    used = group_cpu_seconds(pid) - before
    result["cpu_us_per_request"] = used * 1e6 / max(result["requests"], 1)
    return result


def start_fast_upstream(procs, wait=True):
    """The stand-in upstream of the gateway-overhead scenario: no service
    time, no concurrency limit, on the load core."""
    process = procs.start("fast-upstream", [str(RELEASE / "upstream-sim"), "--listen",
                                            f"127.0.0.1:{FAST_UPSTREAM_PORT}", "--service-time",
                                            "0ms", "--concurrency", "100000"], LOAD_CORE)
    if wait:
        wait_for_port(FAST_UPSTREAM_PORT)
    return process


def wait_for_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # Something answers HTTP there.
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port} within {timeout} s")


def api(port, token, method, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def start_tenantd(procs, name, discipline, tenants, concurrency_cap=None,
                  binary=RELEASE / "tenantd", quotas=None, extra="", rate=TENANT_RATE):
    """A tenantd (`binary`) on its embedded default with the `sim` and `fast`
    services, and `tenants` tenants each with a developer key; returns the
    keys. With `concurrency_cap`, the default plan lets a tenant hold at most
    that many seats at once (its further requests wait in its own queue);
    `quotas` is the default plan's quota list instead (TOML); `extra` is
    appended to the configuration; `rate` is the default plan's requests a
    second per tenant (burst TENANT_BURST)."""
    cap = ("" if concurrency_cap is None else
           f'quotas = [{{ metric = "concurrent_requests", hard = {concurrency_cap} }}]')
    if quotas is not None:
        cap = f"quotas = {quotas}"
    port = PORTS[name]
    data = WORK / name
    data.mkdir()
    operator = "tk_" + secrets.token_hex(8) + "_" + secrets.token_hex(24)
    (data / "tenantd.toml").write_text(f"""
listen = "127.0.0.1:{port}"
log_level = "warn"

[[plans]]
id = "default"
rate = {{ requests = {rate}, per = "1s", burst = {TENANT_BURST} }}
{cap}

[[plans]]
id = "bulk"
rate = {{ requests = 1000000, per = "1s", burst = 1000000 }}

[admission]
seats = 256
discipline = "{discipline}"
max_queue = 256
queue_wait = "{DEADLINE_S * 500}ms"
classes.proxy = {{ width = 1, deadline = "{DEADLINE_S * 500}ms", estimate = "{SERVICE_TIME}" }}

[[gateway.services]]
name = "sim"
upstreams = ["http://127.0.0.1:{UPSTREAM_PORT}"]
seats = {UPSTREAM_SLOTS}
request_timeout = "{DEADLINE_S * 500 - 100}ms"
max_in_flight_per_tenant = 256
retries = 0

[[gateway.services]]
name = "fast"
upstreams = ["http://127.0.0.1:{FAST_UPSTREAM_PORT}"]
request_timeout = "{DEADLINE_S * 500 - 100}ms"
max_in_flight_per_tenant = 256
retries = 0
{extra}
""")
    OPERATORS[name] = operator
    process = procs.start(
        name,
        [str(binary), "serve"],
        SERVER_CORE,
        env={"TENANTD_BOOTSTRAP_KEY": operator},
        cwd=data,
    )
    wait_for_port(port)

    def make(i):
        tenant = f"t{i:05d}"
        api(port, operator, "POST", "/v1/tenants", {"id": tenant, "name": tenant})
        created = api(port, operator, "POST", f"/v1/tenants/{tenant}/keys",
                      {"role": "developer", "name": "bench"})
        return created["token"]

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(make, range(tenants)))
    return process, keys


def nginx_location(service):
    """The path of `service`, as tenantd names it, sent to its upstream."""
    return f"""
    location /v1/proxy/{service}/ {{
      limit_req zone=perkey burst={TENANT_BURST} nodelay;
      proxy_pass http://{service}/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout {DEADLINE_S}s;
    }}"""


def start_nginx_with(procs, name, server, rate=TENANT_RATE, http=""):
    """nginx (one worker, on the server core) as `name`, with the `sim` and
    `fast` upstreams, a per-key `limit_req` zone of `rate` requests a second,
    `http` added to its http block and `server` as its one server block's
    body; returns its process once it started."""
    conf = WORK / name
    conf.mkdir()
    (conf / "logs").mkdir()
    (conf / "nginx.conf").write_text(f"""
worker_processes 1;
pid {conf}/nginx.pid;
error_log {conf}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {conf}/body;
  proxy_temp_path {conf}/proxy;
  limit_req_zone $http_authorization zone=perkey:64m rate={rate}r/s;
  limit_req_status 429;
  upstream sim {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 256; }}
  upstream fast {{ server 127.0.0.1:{FAST_UPSTREAM_PORT}; keepalive 256; }}
{http}
  server {{
{server}
  }}
}}
""")
    return procs.start(name, ["nginx", "-p", str(conf), "-c", str(conf / "nginx.conf"),
                              "-g", "daemon off;"], SERVER_CORE)


def start_nginx(procs):
    process = start_nginx_with(procs, "nginx", f"""
    listen 127.0.0.1:{PORTS["nginx"]};
{"".join(nginx_location(service) for service in ("sim", "fast"))}
    location = /healthz {{ return 200 "ok"; }}""")
    wait_for_port(PORTS["nginx"])
    return process


def start_hyper_floor(procs):
    """The plainest reverse proxy on hyper (upstream-sim --forward-to), on
    the server core: what any gateway on tenantd's HTTP stack costs."""
    process = procs.start("hyper-floor", [str(RELEASE / "upstream-sim"), "--listen",
                                          f"127.0.0.1:{PORTS['hyper-floor']}", "--forward-to",
                                          f"127.0.0.1:{FAST_UPSTREAM_PORT}"], SERVER_CORE)
    wait_for_port(PORTS["hyper-floor"])
    return process


def start_haproxy(procs):
    conf = WORK / "haproxy.cfg"
    conf.write_text(f"""
global
  maxconn 4096
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server {DEADLINE_S * 500}ms
  timeout queue {DEADLINE_S * 500}ms
frontend fe
  bind 127.0.0.1:{PORTS["haproxy"]}
  stick-table type string len 80 size 200k expire 10s store http_req_rate(1s)
  http-request return status 200 content-type text/plain string ok if {{ path /healthz }}
  http-request track-sc0 req.hdr(authorization)
  http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {TENANT_RATE} }}
  use_backend fast if {{ path_beg /v1/proxy/fast/ }}
  default_backend sim
backend sim
  http-reuse always
  http-request replace-path /v1/proxy/sim(/.*) \\1
  server s1 127.0.0.1:{UPSTREAM_PORT} maxconn {UPSTREAM_SLOTS}
backend fast
  http-reuse always
  http-request replace-path /v1/proxy/fast(/.*) \\1
  server s1 127.0.0.1:{FAST_UPSTREAM_PORT}
""")
    process = procs.start("haproxy", ["haproxy", "-f", str(conf)], SERVER_CORE)
    wait_for_port(PORTS["haproxy"])
    return process


def wrk(port, path, keys, connections, threads, seconds, spread="rotate", think_ms=0,
        scheme="http", close=False):
    """Runs wrk on the load core; returns its JSON summary. With `close`,
    every request asks the server to close its connection, so each opens a
    new one (with `scheme` https, a new TLS handshake)."""
    keyfile = WORK / f"keys-{secrets.token_hex(4)}.txt"
    keyfile.write_text("\n".join(keys) + "\n")
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t", str(threads), "-c", str(connections),
         "-d", f"{seconds}s", "--timeout", f"{DEADLINE_S + 2}s", "-s", str(BENCH / "wrk.lua"),
         f"{scheme}://127.0.0.1:{port}", "--", str(keyfile), path, spread, str(think_ms),
         "close" if close else "keep-alive"],
        capture_output=True, text=True, timeout=seconds + 30,
    )
    keyfile.unlink()
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result = json.loads(line[len("WRK_JSON "):])
            errors = result["non_2xx"] + result["connect_errors"] + result["read_errors"] \
                + result["write_errors"] + result["timeouts"]
            result["ok"] = max(result["requests"] - errors, 0)
            result["ok_per_s"] = result["ok"] / (result["duration_us"] / 1e6)
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk printed no summary: {out.stdout}\n{out.stderr}")


def wrk_together(runs):
    """Runs several wrk loads at once (victims and a noisy tenant)."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda r: wrk(**r), runs))


def median_spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(rounds, fields):
    return {f: median_spread([r[f] for r in rounds]) for f in fields}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--tenants", type=int, default=10_000,
                        help="tenants of the large gateway-overhead run")
    args = parser.parse_args()
    results = {"date": str(date.today()), "rounds": args.rounds, "seconds": args.seconds,
               "setup": {"service_time": SERVICE_TIME, "upstream_slots": UPSTREAM_SLOTS,
                         "tenant_rate": TENANT_RATE, "tenant_burst": TENANT_BURST,
                         "deadline_s": DEADLINE_S, "think_ms": THINK_MS,
                         "server_core": SERVER_CORE,
                         "load_core": LOAD_CORE}}
    procs = Processes()
    try:
        procs.start("upstream", [str(RELEASE / "upstream-sim"), "--listen",
                                 f"127.0.0.1:{UPSTREAM_PORT}", "--service-time", SERVICE_TIME,
                                 "--concurrency", str(UPSTREAM_SLOTS)], LOAD_CORE)
        fast = start_fast_upstream(procs, wait=False)
        # The framework's floor for the data API: an axum handler that
        # answers at once, on the server core.
        hello = procs.start("hello", [str(RELEASE / "upstream-sim"), "--listen",
                                      f"127.0.0.1:{HELLO_PORT}", "--service-time", "0ms",
                                      "--concurrency", "100000"], SERVER_CORE)
        wait_for_port(UPSTREAM_PORT)
        wait_for_port(FAST_UPSTREAM_PORT)
        wait_for_port(HELLO_PORT)
        print(f"creating {args.tenants} tenants in two tenantd servers…", flush=True)
        tenantd, keys = start_tenantd(procs, "tenantd", "fair", args.tenants)
        _, fifo_keys = start_tenantd(procs, "tenantd-fifo", "fifo", 9)
        _, capped_keys = start_tenantd(procs, "tenantd-capped", "fair", 9,
                                       concurrency_cap=UPSTREAM_SLOTS // 2)
        nginx = start_nginx(procs)
        haproxy = start_haproxy(procs)
        floor = start_hyper_floor(procs)
        systems = ["tenantd", "nginx", "haproxy"]
        pids = {"direct": fast.pid, "tenantd": tenantd.pid, "nginx": nginx.pid,
                "haproxy": haproxy.pid, "hyper-floor": floor.pid}
        keys_of = {"tenantd": keys, "nginx": keys, "haproxy": keys, "tenantd-fifo": fifo_keys,
                   "tenantd-capped": capped_keys}

        # 1. Gateway overhead, against an upstream with no service time.
        overhead = {}
        for tenants in (100, args.tenants):
            rows = {s: [] for s in ["direct", *systems, "hyper-floor"]}
            for round_ in range(args.rounds):
                for system in rows:
                    # Server CPU per request is what compares systems: wrk's
                    # core saturates near 30,000 req/s. For `direct` it is
                    # the upstream's own (on the load core).
                    if system == "direct":
                        rows[system].append(wrk_measured(pids[system], FAST_UPSTREAM_PORT, "/ok",
                                                         keys[:tenants], 64, 1, args.seconds))
                    else:
                        rows[system].append(wrk_measured(pids[system], PORTS[system],
                                                         "/v1/proxy/fast/ok", keys[:tenants], 64,
                                                         1, args.seconds))
                print(f"overhead {tenants} tenants, round {round_ + 1} done", flush=True)
            overhead[tenants] = {s: summarize(r, ["rps", "ok_per_s", "p50_us", "p99_us",
                                                  "cpu_us_per_request"])
                                 for s, r in rows.items()}
        results["overhead"] = overhead

        # 2. Noisy neighbour: 8 victims (one connection each) and one tenant
        # with 10, 20 or 50 connections.
        isolation_systems = ["tenantd", "tenantd-capped", "tenantd-fifo", "nginx", "haproxy"]
        noisy = {s: {} for s in isolation_systems}
        levels = [0, 10, 20, 50]
        raw = {s: {level: [] for level in levels} for s in isolation_systems}
        for round_ in range(args.rounds):
            for level in levels:
                for system in isolation_systems:
                    k = keys_of[system]
                    runs = [dict(port=PORTS[system], path="/v1/proxy/sim/work", keys=k[:8],
                                 connections=8, threads=8, seconds=args.seconds, spread="thread")]
                    if level:
                        runs.append(dict(port=PORTS[system], path="/v1/proxy/sim/work",
                                         keys=[k[8]], connections=level, threads=1,
                                         seconds=args.seconds, spread="thread"))
                    got = wrk_together(runs)
                    victims = got[0]
                    noise_ok = got[1]["ok"] if level else 0
                    victims["share"] = victims["ok"] / max(victims["ok"] + noise_ok, 1)
                    victims["rejected"] = victims["requests"] - victims["ok"]
                    if level:
                        victims["noisy_rejected"] = got[1]["requests"] - got[1]["ok"]
                    raw[system][level].append(victims)
            print(f"noisy neighbour round {round_ + 1} done", flush=True)
        for system in isolation_systems:
            for level in levels:
                noisy[system][level] = summarize(
                    raw[system][level], ["p50_us", "p99_us", "ok_per_s", "share", "rejected"])
        results["noisy_neighbour"] = noisy

        # 3. Heavy against light: one tenant's requests cost 20 times the others'.
        heavy = {s: [] for s in isolation_systems}
        for round_ in range(args.rounds):
            for system in isolation_systems:
                k = keys_of[system]
                got = wrk_together([
                    dict(port=PORTS[system], path="/v1/proxy/sim/work", keys=k[:8],
                         connections=8, threads=8, seconds=args.seconds, spread="thread"),
                    dict(port=PORTS[system], path="/v1/proxy/sim/heavy", keys=[k[8]],
                         connections=8, threads=1, seconds=args.seconds, spread="thread"),
                ])
                light = got[0]
                light["rejected"] = light["requests"] - light["ok"]
                heavy[system].append(light)
        results["heavy_vs_light"] = {s: summarize(r, ["p50_us", "p99_us", "ok_per_s", "rejected"])
                                     for s, r in heavy.items()}
        print("heavy against light done", flush=True)

        # 4. Overload ramp: clients that wait THINK_MS between an answer and
        # their next request, each offering about 1000 / THINK_MS requests a
        # second while answers are quick; enough of them for 0.5 to 3 times
        # the upstream's capacity.
        ramp = {s: {} for s in isolation_systems}
        multiples = [0.5, 1, 1.5, 2, 3]
        capacity = UPSTREAM_SLOTS / (int(SERVICE_TIME.rstrip("ms")) / 1000)
        for multiple in multiples:
            rows = {s: [] for s in isolation_systems}
            connections = max(int(capacity * multiple * THINK_MS / 1000), 1)
            for _ in range(args.rounds):
                for system in isolation_systems:
                    rows[system].append(wrk(PORTS[system], "/v1/proxy/sim/work",
                                            keys_of[system][:9], connections, 2,
                                            args.seconds, spread="rotate", think_ms=THINK_MS))
            for system in isolation_systems:
                ramp[system][multiple] = summarize(rows[system], ["ok_per_s", "rps", "p99_us"])
        results["overload_ramp"] = ramp
        print("overload ramp done", flush=True)

        # 5. The data API on the embedded default (tenantd only), for a
        # tenant whose plan does not limit the load.
        token = data_bench_tenant("tenantd", records=1000)
        data_paths = {
            "get_by_id": "/v1/collections/orders/records/r{n}",
            "filtered_list": "/v1/collections/orders/records?filter=customer%20%3D%20%22c7%22&limit=20",
            "write": "PUT /v1/collections/orders/records/r{n}",
        }
        data_api = {}
        rows = {name: [] for name in ["axum hello world", *data_paths]}
        for _ in range(args.rounds):
            rows["axum hello world"].append(wrk_measured(hello.pid, HELLO_PORT, "/ok", [token],
                                                         16, 1, args.seconds))
            for name, path in data_paths.items():
                rows[name].append(wrk_measured(tenantd.pid, PORTS["tenantd"], path, [token], 16,
                                               1, args.seconds))
        for name, rounds in rows.items():
            data_api[name] = summarize(rounds, ["ok_per_s", "p50_us", "p99_us",
                                                "cpu_us_per_request"])
        results["data_api"] = data_api
        print("data API done", flush=True)
    finally:
        procs.stop_all()

    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "side-by-side.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "noisy-neighbour.svg").write_text(chart(results))
    write_results(results, " ".join(["bench/run", *sys.argv[1:]]))
    print("wrote bench/RESULTS.md, bench/results/side-by-side.json, "
          "bench/results/noisy-neighbour.svg")


def ms(us):
    return f"{us / 1000:.2f}"


def cell(stat, scale=ms, fmt="{}"):
    return f"{fmt.format(scale(stat['median']))} ({scale(stat['min'])}–{scale(stat['max'])})"


def write_results(r, command):
    lines = [
        "<!-- side-by-side:start (written by bench/run; edit bench/run.py, not this part) -->",
        f"## Side by side: tenantd, nginx and HAProxy ({r['date']})",
        "",
        f"`{command}` on this 2-core machine. The server under test runs on core "
        f"{r['setup']['server_core']}; wrk (one process per tenant group, `bench/wrk.lua`, each "
        f"tenant its own key) and the upstream run on core {r['setup']['load_core']}. "
        f"{r['rounds']} rounds of {r['seconds']} s, systems interleaved within each round; "
        "each cell is the median with the range over the rounds in brackets. "
        f"nginx {tool_version(['nginx', '-v'])}, HAProxy {tool_version(['haproxy', '-v'])}, "
        f"wrk {tool_version(['wrk', '-v'])}. Raw numbers: `bench/results/side-by-side.json`.",
        "",
        f"Upstream (`crates/upstream-sim`): {r['setup']['upstream_slots']} requests at once, "
        f"{r['setup']['service_time']} each (about "
        f"{int(r['setup']['upstream_slots'] / 0.002)} requests a second). Every system limits "
        f"each key to {r['setup']['tenant_rate']} requests a second (burst "
        f"{r['setup']['tenant_burst']}), half the upstream's capacity, so rate limits alone "
        "cannot isolate tenants (nginx `limit_req` on `$http_authorization`; HAProxy a stick "
        "table on the `Authorization` header with `maxconn "
        f"{r['setup']['upstream_slots']}` on the server, which queues; tenantd a plan rate "
        f"and the service's own {r['setup']['upstream_slots']} seats, fair or FIFO; "
        "`tenantd-capped` also caps each tenant's plan at half the seats, "
        "`concurrent_requests` = "
        f"{r['setup']['upstream_slots'] // 2}, a limit the peers were not given). Each "
        f"answers a request it cannot finish within {r['setup']['deadline_s']} s with an "
        "error, so a 2xx is an answer within the deadline.",
        "",
        "### 1. Gateway overhead (upstream with no service time, 64 connections)",
        "",
        "Server CPU per request (user + system of the server's processes, from /proc, over "
        "each round) is the figure that compares systems: wrk's core saturates near 30,000 "
        "requests a second. For `direct` it is the upstream's own CPU. `hyper-floor` is the "
        "plainest reverse proxy on hyper and hyper-util's client (upstream-sim --forward-to): "
        "no tenancy, limits or rewriting, the floor of tenantd's HTTP stack.",
        "",
        "| tenants | system | req/s | p50 ms | p99 ms | server CPU µs per request | "
        "÷ nginx's |",
        "|---|---|---|---|---|---|---|",
    ]
    for tenants, systems in r["overhead"].items():
        nginx_cpu = systems["nginx"]["cpu_us_per_request"]["median"] or 1
        for system, s in systems.items():
            cpu = s["cpu_us_per_request"]
            lines.append(f"| {tenants} | {system} | {cell(s['rps'], lambda v: f'{v:.0f}')} | "
                         f"{cell(s['p50_us'])} | {cell(s['p99_us'])} | "
                         f"{cell(cpu, lambda v: f'{v:.1f}')} | "
                         f"{cpu['median'] / nginx_cpu:.2f} |")
    lines += [
        "",
        "### 2. Noisy neighbour: 8 victims (1 connection each) and one tenant with 10, 20, 50 "
        "connections",
        "",
        "Victims' latency against their solo run (no neighbour), their share of the answers, "
        "and their refused requests (per round, median).",
        "",
        "| system | neighbour | victims p50 ms | victims p99 ms | p99 / solo | victims' share | "
        "victims refused |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, levels in r["noisy_neighbour"].items():
        solo = levels[0]["p99_us"]["median"] or 1
        for level, s in levels.items():
            name = "none (solo)" if level == 0 else f"{level}×"
            lines.append(
                f"| {system} | {name} | {cell(s['p50_us'])} | {cell(s['p99_us'])} | "
                f"{s['p99_us']['median'] / solo:.2f} | "
                f"{cell(s['share'], lambda v: f'{v * 100:.0f}%')} | "
                f"{cell(s['rejected'], lambda v: f'{v:.0f}')} |")
    lines += ["", "![victims' p99 against solo](results/noisy-neighbour.svg)", "",
              "### 3. Heavy against light (one tenant's requests take 20× the service time, "
              "8 connections against 8 light tenants)", "",
              "| system | light p50 ms | light p99 ms | light answers/s | light refused |",
              "|---|---|---|---|---|"]
    for system, s in r["heavy_vs_light"].items():
        lines.append(f"| {system} | {cell(s['p50_us'])} | {cell(s['p99_us'])} | "
                     f"{cell(s['ok_per_s'], lambda v: f'{v:.0f}')} | "
                     f"{cell(s['rejected'], lambda v: f'{v:.0f}')} |")
    lines += ["", "### 4. Overload ramp: offered load from 0.5× to 3× the upstream's capacity",
              "", f"Clients that wait {r['setup']['think_ms']} ms after each answer, enough of "
              "them to offer each multiple of the capacity while answers are quick (9 tenants' "
              "keys in turn). Goodput: 2xx answers a second, each within the deadline.", "",
              "| system | " + " | ".join(f"{m}×" for m in next(iter(r["overload_ramp"].values())))
              + " |",
              "|---|" + "---|" * len(next(iter(r["overload_ramp"].values())))]
    for system, multiples in r["overload_ramp"].items():
        lines.append(f"| {system} | " + " | ".join(
            cell(s["ok_per_s"], lambda v: f"{v:.0f}") for s in multiples.values()) + " |")
    lines += ["", "### 5. Data API on the embedded default (SQLite), 16 connections, one tenant",
              "", "`axum hello world` is an axum handler that answers at once (upstream-sim on "
              "the server core): the framework's floor.", "",
              "| operation | answers/s | p50 ms | p99 ms | server CPU µs per request | "
              "÷ hello world's |", "|---|---|---|---|---|---|"]
    floor = r["data_api"]["axum hello world"]["cpu_us_per_request"]["median"] or 1
    for name, s in r["data_api"].items():
        cpu = s["cpu_us_per_request"]
        lines.append(f"| {name} | {cell(s['ok_per_s'], lambda v: f'{v:.0f}')} | "
                     f"{cell(s['p50_us'])} | {cell(s['p99_us'])} | "
                     f"{cell(cpu, lambda v: f'{v:.1f}')} | {cpu['median'] / floor:.2f} |")
    lines += [""] + verdicts(r) + ["", "<!-- side-by-side:end -->"]
    section = "\n".join(lines) + "\n"
    path = BENCH / "RESULTS.md"
    text = path.read_text()
    start = text.find("<!-- side-by-side:start")
    end = text.find("<!-- side-by-side:end -->")
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len("<!-- side-by-side:end -->\n"):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def tool_version(command):
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    found = re.search(r"\d+\.\d+(\.\d+)?", out.stdout + out.stderr)
    return found.group(0) if found else "?"


def verdicts(r):
    """The issue's targets, each said met or missed with the numbers."""
    lines = ["### Targets", ""]
    for tenants, systems in r["overhead"].items():
        ours, nginx = systems["tenantd"]["rps"]["median"], systems["nginx"]["rps"]["median"]
        verdict = "met" if ours >= nginx else "**missed**"
        lines.append(f"- Gateway throughput ≥ nginx's, {tenants} tenants: {verdict} "
                     f"(tenantd {ours:.0f} req/s, nginx {nginx:.0f} req/s).")
    cpu = {tenants: systems["tenantd"]["cpu_us_per_request"]["median"]
           for tenants, systems in r["overhead"].items()}
    for tenants, systems in r["overhead"].items():
        nginx = systems["nginx"]["cpu_us_per_request"]["median"] or 1
        ratio = cpu[tenants] / nginx
        verdict = "met" if ratio <= 1.5 else "**missed**"
        floor = systems.get("hyper-floor", {}).get("cpu_us_per_request", {}).get("median")
        floor_note = f"; hyper-floor {floor / nginx:.2f}×" if floor else ""
        lines.append(f"- Gateway CPU per request ≤ 1.5× nginx's, {tenants} tenants: {verdict} "
                     f"(tenantd {cpu[tenants]:.1f} µs, nginx {nginx:.1f} µs, "
                     f"{ratio:.2f}×{floor_note}).")
    low, high = min(cpu.values()), max(cpu.values())
    verdict = "met" if high <= 1.1 * low else "**missed**"
    lines.append(f"- CPU per request flat across tenant counts (within 10 %): {verdict} "
                 f"({', '.join(f'{t}: {c:.1f} µs' for t, c in cpu.items())}).")
    noisy = r["noisy_neighbour"]
    worst = max(level for level in noisy["tenantd"])
    for system, levels in noisy.items():
        ratio = levels[worst]["p99_us"]["median"] / (levels[0]["p99_us"]["median"] or 1)
        refused = levels[worst]["rejected"]["median"]
        within = ratio <= 1.5 and refused == 0
        if system == "tenantd":
            verdict = "met" if within else "**missed**"
            lines.append(f"- Under the {worst}× neighbour, tenantd's victims' p99 ≤ 1.5× solo "
                         f"with no victim refused: {verdict} ({ratio:.2f}×, {refused:.0f} "
                         "refused).")
        elif system == "tenantd-capped":
            verdict = "within 1.5×" if within else "**not within 1.5×**"
            lines.append(f"- tenantd with plans capping each tenant at half the service's "
                         f"seats, at {worst}×: {ratio:.2f}× solo, {refused:.0f} refused: "
                         f"{verdict}.")
        else:
            verdict = "exceeds it, as expected" if not within else "**does not exceed it**"
            lines.append(f"- {system} at {worst}×: {ratio:.2f}× solo, {refused:.0f} refused: "
                         f"{verdict}.")
    return lines


def chart(r):
    """Grouped bars: victims' p99 over their solo p99, per system and neighbour."""
    systems = list(r["noisy_neighbour"])
    levels = [level for level in next(iter(r["noisy_neighbour"].values())) if level]
    colours = ["#2b6cb0", "#63b3ed", "#9f7aea", "#dd6b20", "#38a169"]
    width, height, left, bottom = 760, 320, 60, 40
    top = max(r["noisy_neighbour"][s][lv]["p99_us"]["median"]
              / (r["noisy_neighbour"][s][0]["p99_us"]["median"] or 1)
              for s in systems for lv in levels)
    top = max(top * 1.1, 2)
    plot_h = height - bottom - 20
    group_w = (width - left - 20) / len(levels)
    bar_w = group_w / (len(systems) + 1)
    y = lambda v: 20 + plot_h * (1 - v / top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
             'font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="14">victims\' p99 / their solo p99 (lower is better; '
             'dashed: 1.5×)</text>']
    for tick in range(0, int(top) + 1, max(int(top / 5), 1)):
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(1.5):.1f}" y2="{y(1.5):.1f}" '
                 'stroke="#c53030" stroke-dasharray="4 3"/>')
    for g, level in enumerate(levels):
        x0 = left + g * group_w + bar_w / 2
        for i, system in enumerate(systems):
            ratio = (r["noisy_neighbour"][system][level]["p99_us"]["median"]
                     / (r["noisy_neighbour"][system][0]["p99_us"]["median"] or 1))
            x = x0 + i * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{y(ratio):.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{y(0) - y(ratio):.1f}" fill="{colours[i % len(colours)]}">'
                         f'<title>{system} {level}×: {ratio:.2f}</title></rect>')
        parts.append(f'<text x="{x0 + len(systems) * bar_w / 2:.1f}" y="{height - 15}" '
                     f'text-anchor="middle">neighbour at {level}×</text>')
    for i, system in enumerate(systems):
        parts.append(f'<rect x="{left + i * 140}" y="{height + 8}" width="10" height="10" '
                     f'fill="{colours[i % len(colours)]}"/><text x="{left + i * 140 + 14}" '
                     f'y="{height + 17}">{system}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def in_work_dir(entry):
    """Runs `entry` with WORK a fresh temporary directory, removed after."""
    global WORK
    WORK = Path(tempfile.mkdtemp(prefix="tenantd-bench-"))
    try:
        entry()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    in_work_dir(main)
