#!/usr/bin/env python3
"""TLS on the listener: tenantd against nginx with the same certificate
(ECDSA P-256, TLS 1.3), both in front of the `fast` upstream (no service
time) with a per-key rate limit that the load never reaches, interleaved
round by round:

- `h1`: HTTP/1.1 keep-alive over TLS, 64 connections, each request with the
  next of 100 tenants' keys (wrk);
- `h2`: HTTP/2 over TLS (ALPN), 16 connections of 8 concurrent streams, one
  tenant's key (h2load sends one set of headers);
- `handshakes`: a new connection and a full TLS handshake for every request
  (`Connection: close`), 16 connections (wrk).

The servers are pinned to the server core, the load and the upstream to the
other. Reports req/s and the server's CPU µs per request (user + system of
its processes, from /proc). Run by bench/run as its TLS section, or alone:

    bench/tls.py [--rounds 3 --seconds 5]

which writes the TLS section of bench/RESULTS.md and bench/results/tls.json.
"""

import argparse
import json
import re
import subprocess
import sys
from datetime import date

import run

TLS_PORTS = {"tenantd": 19091, "nginx": 19092}
TENANTS = 100
# Far above what this machine can offer: the limit is checked, never hit.
RATE = 1_000_000


def make_certificate():
    """A self-signed ECDSA P-256 certificate for localhost and its key, in
    run.WORK; returns their paths."""
    cert, key = run.WORK / "tls-cert.pem", run.WORK / "tls-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def start_nginx_tls(procs, cert, key):
    return run.start_nginx_with(procs, "nginx-tls", f"""
    listen 127.0.0.1:{TLS_PORTS["nginx"]} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
{run.nginx_location("fast")}""", rate=RATE, http="  keepalive_requests 1000000;")


def wait_for_tls(port):
    """Waits until `port` completes a TLS handshake."""
    for _ in range(300):
        done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                               "-brief"], input="", capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            return
        run.time.sleep(0.1)
    raise RuntimeError(f"no TLS handshake on port {port}")


def h2load(pid, port, key, seconds):
    """h2load on the load core over HTTP/2 with TLS; its counts, with the
    server CPU µs per request of process group `pid`."""
    before = run.group_cpu_seconds(pid)
    out = subprocess.run(
        ["taskset", "-c", run.LOAD_CORE, "h2load", "-t", "1", "-c", "16", "-m", "8",
         "-D", str(seconds), "-H", f"Authorization: Bearer {key}",
         f"https://127.0.0.1:{port}/v1/proxy/fast/ok"],
        capture_output=True, text=True, timeout=seconds + 60)
    used = run.group_cpu_seconds(pid) - before
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed",
                     out.stdout)
    took = re.search(r"finished in ([\d.]+)s", out.stdout)
    protocol = re.search(r"Application protocol: (\S+)", out.stdout)
    if not (done and took and protocol):
        raise RuntimeError(f"h2load printed no summary: {out.stdout}\n{out.stderr}")
    if protocol.group(1) != "h2":
        raise RuntimeError(f"h2load spoke {protocol.group(1)}, not h2")
    statuses = re.search(r"status codes: (\d+) 2xx", out.stdout)
    ok = int(statuses.group(1)) if statuses else 0
    requests = int(done.group(1)) + int(done.group(2))
    return {"requests": requests, "ok": ok, "rps": requests / float(took.group(1)),
            "ok_per_s": ok / float(took.group(1)),
            "cpu_us_per_request": used * 1e6 / max(requests, 1)}


def measure(procs, rounds, seconds):
    """Starts both servers, runs every scenario `rounds` times interleaved,
    and returns the summaries by system and scenario."""
    cert, key = make_certificate()
    if not any(name == "fast-upstream" for name, _ in procs.running):
        run.start_fast_upstream(procs)
    extra = f"""
[tls]
cert_file = "{cert}"
key_file = "{key}"
listen = "127.0.0.1:{TLS_PORTS['tenantd']}"
"""
    tenantd, keys = run.start_tenantd(procs, "tenantd-tls", "fair", TENANTS, extra=extra,
                                      rate=RATE)
    nginx = start_nginx_tls(procs, cert, key)
    for port in TLS_PORTS.values():
        wait_for_tls(port)
    pids = {"tenantd": tenantd.pid, "nginx": nginx.pid}
    scenarios = ["h1", "h2", "handshakes"]
    rows = {s: {n: [] for n in scenarios} for s in pids}
    path = "/v1/proxy/fast/ok"
    for round_ in range(rounds):
        for system, pid in pids.items():
            port = TLS_PORTS[system]
            rows[system]["h1"].append(run.wrk_measured(pid, port, path, keys, 64, 1, seconds,
                                                       scheme="https"))
            rows[system]["h2"].append(h2load(pid, port, keys[0], seconds))
            rows[system]["handshakes"].append(run.wrk_measured(pid, port, path, keys, 16, 1,
                                                               seconds, scheme="https",
                                                               close=True))
        print(f"TLS round {round_ + 1} done", flush=True)
    return {system: {n: run.summarize(r, ["rps", "ok_per_s", "cpu_us_per_request"])
                     for n, r in by_scenario.items()}
            for system, by_scenario in rows.items()}


def section(results, command):
    """The TLS section of bench/RESULTS.md."""
    lines = [
        "<!-- tls:start (written by bench/tls.py; edit it, not this part) -->",
        f"## TLS on the listener: tenantd and nginx ({results['date']})",
        "",
        f"`{command}` on this 2-core machine; {results['rounds']} rounds of "
        f"{results['seconds']} s, the two systems interleaved within each round; each cell is "
        "the median with the range over the rounds in brackets. Both serve TLS 1.3 with the "
        "same self-signed ECDSA P-256 certificate and proxy `/v1/proxy/fast/…` to an upstream "
        "with no service time, checking a per-key rate limit the load never reaches. "
        f"nginx {run.tool_version(['nginx', '-v'])} (1 worker), "
        f"wrk {run.tool_version(['wrk', '-v'])}, h2load "
        f"{run.tool_version(['h2load', '--version'])}. `h1`: HTTP/1.1 keep-alive, 64 "
        f"connections, {TENANTS} tenants' keys in turn; `h2`: HTTP/2 by ALPN, 16 connections "
        "× 8 streams, one key; `handshakes`: `Connection: close` on every request, so each is "
        "a new TCP connection and a full TLS handshake (16 connections): req/s is handshakes "
        "a second. Server CPU: user + system of the server's processes from /proc over the run.",
        "",
        "| scenario | system | req/s | 2xx/s | server CPU µs per request | ÷ nginx's |",
        "|---|---|---|---|---|---|",
    ]
    systems = results["systems"]
    for scenario in ["h1", "h2", "handshakes"]:
        nginx_cpu = systems["nginx"][scenario]["cpu_us_per_request"]["median"] or 1
        for system, by_scenario in systems.items():
            s = by_scenario[scenario]
            cpu = s["cpu_us_per_request"]
            lines.append(f"| {scenario} | {system} | {run.cell(s['rps'], lambda v: f'{v:.0f}')} "
                         f"| {run.cell(s['ok_per_s'], lambda v: f'{v:.0f}')} | "
                         f"{run.cell(cpu, lambda v: f'{v:.1f}')} | "
                         f"{cpu['median'] / nginx_cpu:.2f} |")
    lines += ["", "<!-- tls:end -->"]
    return "\n".join(lines) + "\n"


def record(results, command):
    """Writes results/tls.json and the TLS section of RESULTS.md."""
    out = run.BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "tls.json").write_text(json.dumps(results, indent=2) + "\n")
    path = run.BENCH / "RESULTS.md"
    text = path.read_text()
    start, end = text.find("<!-- tls:start"), text.find("<!-- tls:end -->")
    new = section(results, command)
    if start >= 0 and end >= 0:
        text = text[:start] + new + text[end + len("<!-- tls:end -->\n"):]
    else:
        text = text.rstrip("\n") + "\n\n" + new
    path.write_text(text)


def results_of(procs, rounds, seconds):
    return {"date": str(date.today()), "rounds": rounds, "seconds": seconds,
            "systems": measure(procs, rounds, seconds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    # bench/run passes its options to both scripts; --tenants is run.py's.
    parser.add_argument("--tenants", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    procs = run.Processes()
    try:
        results = results_of(procs, args.rounds, args.seconds)
    finally:
        procs.stop_all()
    record(results, " ".join(["bench/tls.py", *sys.argv[1:]]))
    print("wrote bench/RESULTS.md (TLS section) and bench/results/tls.json")


if __name__ == "__main__":
    run.in_work_dir(main)
