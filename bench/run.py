#!/usr/bin/env python3
"""Side-by-side benchmark: the same warren-perf scenarios against Warren and RabbitMQ.

Starts a release `warren` and a RabbitMQ node (Debian's rabbitmq-server, installed if missing),
each on its own free port and data directory, runs every scenario against both in one run, and
prints a Markdown table of msgs/s, latency percentiles, broker CPU and RSS, and the
Warren/RabbitMQ ratio. See docs/benchmarks.md.

    bench/run.sh [--duration SECONDS] [--only 1,2,6] [--skip-rabbitmq] [--scrape] [--out FILE]
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARREN = os.path.join(ROOT, "target", "release", "warren")
PERF = os.path.join(ROOT, "target", "release", "warren-perf")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def cpu_seconds(pid):
    """User+system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Broker:
    name = "?"
    pid = None
    port = None

    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"


class Warren(Broker):
    name = "Warren"

    def start(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-warren-")
        self.launch()

    def crash_restart(self):
        """kill -9, then start again on the same data; returns seconds until it listens."""
        self.proc.kill()
        self.proc.wait()
        t0 = time.time()
        self.launch()
        return time.time() - t0

    # Set by --scrape: the management API and metrics listen, and are read every 5 s.
    scrape = False

    def launch(self):
        self.log = open(os.path.join(self.dir, "warren.log"), "a")
        http = ["--management-listen", "none", "--prometheus-listen", "none"]
        if self.scrape:
            self.mgmt_port, self.metrics_port = free_port(), free_port()
            http = ["--management-listen", f"127.0.0.1:{self.mgmt_port}",
                    "--prometheus-listen", f"127.0.0.1:{self.metrics_port}"]
            start_scraper(self)
        self.proc = subprocess.Popen(
            [WARREN, "--amqp-listen", f"127.0.0.1:{self.port}", *http, "--data-dir",
             os.path.join(self.dir, "data")],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})
        if not wait_port(self.port, timeout=300):
            raise SystemExit("warren did not start")
        self.pid = self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self):
        out = subprocess.run([WARREN, "--version"], capture_output=True, text=True)
        return out.stdout.strip()


def start_scraper(warren):
    """Reads what an operator's tools read (overview, queues, connections, /metrics) every
    5 s, as a Prometheus and a dashboard would, for as long as the benchmark runs."""
    import base64
    import threading
    import urllib.request

    auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def loop():
        while True:
            time.sleep(5)
            for url in [f"http://127.0.0.1:{warren.mgmt_port}/api/overview",
                        f"http://127.0.0.1:{warren.mgmt_port}/api/queues",
                        f"http://127.0.0.1:{warren.mgmt_port}/api/connections",
                        f"http://127.0.0.1:{warren.metrics_port}/metrics"]:
                try:
                    req = urllib.request.Request(url, headers={"authorization": auth})
                    urllib.request.urlopen(req, timeout=5).read()
                except OSError:
                    pass

    threading.Thread(target=loop, daemon=True).start()


class RabbitMQ(Broker):
    name = "RabbitMQ"
    # Plugins to enable and rabbitmq.conf lines to add (bench/mgmt.py sets them).
    plugins = []
    extra_conf = ""

    def configure(self):
        """Ports other than AMQP, chosen before the node starts (a subclass's hook)."""

    def start(self):
        if not shutil.which("rabbitmq-server") and not os.path.exists("/usr/sbin/rabbitmq-server"):
            print("installing rabbitmq-server (Debian package)...", file=sys.stderr)
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "rabbitmq-server"], check=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-rabbitmq-")
        os.chmod(self.dir, 0o777)
        node = f"bench{self.port}@localhost"
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "pid"),
        }
        self.configure()
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[" + ",".join(self.plugins) + "].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("loopback_users.guest = true\n" + self.extra_conf)
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=False)
        self.node = node
        subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, timeout=120):
            raise SystemExit("rabbitmq did not start")
        self.pid = self.listener_pid(self.port)

    def crash_restart(self):
        """kill -9 the node, then start it again on the same data; returns seconds until it
        accepts connections (RabbitMQ opens its listeners after recovering its queues)."""
        os.kill(self.pid, signal.SIGKILL)
        time.sleep(1)
        t0 = time.time()
        subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, timeout=600):
            raise SystemExit("rabbitmq did not restart")
        elapsed = time.time() - t0
        self.pid = self.listener_pid(self.port)
        return elapsed

    @staticmethod
    def listener_pid(port):
        """The process listening on `port` (beam.smp: the node name is not in its arguments)."""
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                             text=True).stdout
        m = re.search(r"pid=(\d+)", out)
        if not m:
            raise SystemExit(f"cannot find the process listening on port {port}")
        return int(m.group(1))

    def stop(self):
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env,
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self):
        out = subprocess.run(["rabbitmqctl", "-n", self.node, "version"], env=self.env,
                             capture_output=True, text=True)
        return "RabbitMQ " + out.stdout.strip()


def perf(broker, args, timeout):
    cmd = [PERF, "--uri", broker.url(), "--json", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1])


def measured(broker, fn):
    """Runs fn(), returning its result with the broker's CPU% and RSS over the run."""
    cpu0, t0 = cpu_seconds(broker.pid), time.time()
    result = fn()
    cpu1, t1 = cpu_seconds(broker.pid), time.time()
    result["broker_cpu_pct"] = 100.0 * (cpu1 - cpu0) / max(t1 - t0, 1e-9)
    result["broker_rss_mib"] = rss_kib(broker.pid) / 1024
    return result


def scenarios(d):
    """(id, title, function(broker) -> result dict, the metric compared)."""
    base = ["-z", str(d)]

    def simple(args, metric="recv_rate"):
        return lambda b: measured(b, lambda: perf(b, base + args, d + 60)), metric

    # Scenarios whose runs later rows read again (their latency; their capacity).
    last_run = {}

    def kept(sid, args):
        def run(b):
            result = measured(b, lambda: perf(b, base + args, d + 60))
            last_run[(sid, b.name)] = result
            return result
        return run, "recv_rate"

    def run_of(sid):
        return lambda b: last_run.get((sid, b.name), {"error": [f"scenario {sid} did not run"]})

    s2 = ["-x", "1", "-y", "1", "-s", "16", "-c", "1000", "-q", "1000"]

    def at_90_percent(b):
        # The same flow at 90% of what this broker's consumer took in scenario 2: latency when
        # the broker keeps up, not when it is saturated.
        cap = (last_run.get(("2", b.name)) or {}).get("recv_rate")
        if not cap:
            return {"error": ["scenario 2 did not run"]}
        return measured(b, lambda: perf(b, base + s2 + ["-r", str(int(cap * 0.9))], d + 60))

    def backlog(b):
        n = 1_000_000
        rss0 = rss_kib(b.pid)
        t0 = time.time()
        pub = perf(b, ["-x", "1", "-y", "0", "-C", str(n), "-s", "1024", "-u", "backlog",
                       "--keep", "-c", "1000"], 600)
        t1 = time.time()
        rss1 = rss_kib(b.pid)
        drain = perf(b, ["-x", "0", "-y", "1", "-D", str(n), "-u", "backlog", "--predeclared",
                         "-q", "1000"], 600)
        t2 = time.time()
        result = {"send_rate": n / (t1 - t0), "recv_rate": n / (t2 - t1),
                  "backlog_rss_mib": (rss1 - rss0) / 1024, "broker_rss_mib": rss1 / 1024,
                  "error": pub.get("error") or drain.get("error")}
        last_backlog[b.name] = result
        return result

    last_backlog = {}

    def backlog_rss(b):
        return last_backlog.get(b.name, {"error": ["scenario 8 did not run"]})

    def restart(b):
        """1,000,000 persistent 1 KB messages (confirms, fsync): publish, kill -9, drain."""
        n = 1_000_000
        rss0 = rss_kib(b.pid)
        t0 = time.time()
        pub = perf(b, ["-x", "1", "-y", "0", "-C", str(n), "-s", "1024", "-u", "restart", "--keep",
                       "--durable", "-f", "persistent", "-c", "1000"], 900)
        t1 = time.time()
        rss1 = rss_kib(b.pid)
        seconds = b.crash_restart()
        t2 = time.time()
        drain = perf(b, ["-x", "0", "-y", "1", "-D", str(n), "-u", "restart", "--predeclared",
                         "-q", "1000"], 900)
        result = {"restart_s": seconds, "send_rate": n / (t1 - t0),
                  "recv_rate": n / (time.time() - t2),
                  "backlog_rss_mib": (rss1 - rss0) / 1024,
                  "broker_rss_mib": rss_kib(b.pid) / 1024,
                  "error": pub.get("error") or drain.get("error")}
        last_restart[b.name] = result
        return result

    last_restart = {}

    def restart_again(b):
        return last_restart.get(b.name, {"error": ["scenario 10 did not run"]})

    def at_scale(b):
        """Issue 4's figures: 10,000,000 persistent 1 KB messages in a durable queue."""
        n = 10_000_000
        rss0 = rss_kib(b.pid)
        t0 = time.time()
        pub = perf(b, ["-x", "1", "-y", "0", "-C", str(n), "-s", "1024", "-u", "scale", "--keep",
                       "--durable", "-f", "persistent", "-c", "1000"], 3600)
        t1 = time.time()
        rss1 = rss_kib(b.pid)
        seconds = b.crash_restart()
        time.sleep(3)
        rss2 = rss_kib(b.pid)
        t2 = time.time()
        drain = perf(b, ["-x", "0", "-y", "1", "-D", str(n), "-u", "scale", "--predeclared",
                         "-q", "1000"], 3600)
        result = {"send_rate": n / (t1 - t0), "backlog_rss_mib": rss1 / 1024,
                  "restart_s": seconds, "restarted_rss_mib": rss2 / 1024,
                  "recv_rate": n / (time.time() - t2), "broker_rss_mib": rss1 / 1024,
                  "rss_before_mib": rss0 / 1024,
                  "error": pub.get("error") or drain.get("error")}
        last_scale[b.name] = result
        return result

    last_scale = {}

    def scale_again(b):
        return last_scale.get(b.name, {"error": ["scenario 11 did not run"]})

    def idle(b):
        n = 5000
        rss0 = rss_kib(b.pid)
        proc = subprocess.Popen([PERF, "--uri", b.url(), "--idle-connections", str(n), "-z", "15"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(12)
        rss1 = rss_kib(b.pid)
        proc.wait(timeout=60)
        return {"kib_per_connection": (rss1 - rss0) / n, "broker_rss_mib": rss1 / 1024}

    return [
        ("1", "1 queue, 1→1, 16 B, transient, auto-ack", *simple(["-x", "1", "-y", "1", "-s", "16", "-a"])),
        ("2", "as 1 + confirms (1000) + manual acks (prefetch 1000)", *kept("2", s2)),
        ("2p50", "scenario 2 at saturation: latency p50 (µs)", run_of("2"), "p50"),
        ("2p99", "scenario 2 at saturation: latency p99 (µs)", run_of("2"), "p99"),
        ("2r", "scenario 2 at 90% of its rate: latency p99 (µs)", at_90_percent, "p99"),
        ("3", "durable queue, persistent, confirms, manual acks",
         *kept("3", s2 + ["-f", "persistent", "--durable"])),
        ("3p50", "scenario 3 at saturation: latency p50 (µs)", run_of("3"), "p50"),
        ("3p99", "scenario 3 at saturation: latency p99 (µs)", run_of("3"), "p99"),
        ("4", "fanout to 10 queues, 10 consumers", *simple(["--fanout-queues", "10", "-x", "1", "-y", "1", "-s", "16", "-a"])),
        ("5a", "1 KB bodies", *simple(["-x", "1", "-y", "1", "-s", "1024", "-a"])),
        ("5b", "64 KB bodies", *simple(["-x", "1", "-y", "1", "-s", "65536", "-a"])),
        ("6", "latency at 10,000 msgs/s, 1 KB (p99 µs)", *simple(["-x", "1", "-y", "1", "-s", "1024", "-a", "-r", "10000"], "p99")),
        ("7", "fan-in: 100 connections → 1 queue", *kept("7", ["-x", "100", "-y", "1", "-s", "16", "-a"])),
        ("7p50", "scenario 7 at saturation: latency p50 (µs)", run_of("7"), "p50"),
        ("7p99", "scenario 7 at saturation: latency p99 (µs)", run_of("7"), "p99"),
        ("8", "backlog 1,000,000 × 1 KB: publish msgs/s", backlog, "send_rate"),
        ("8d", "backlog 1,000,000 × 1 KB: drain msgs/s", backlog_rss, "recv_rate"),
        ("8m", "backlog 1,000,000 × 1 KB: RSS growth MiB", backlog_rss, "backlog_rss_mib"),
        ("9", "5,000 idle connections (KiB each)", idle, "kib_per_connection"),
        ("10", "kill -9 with 1,000,000 × 1 KB persistent: restart (s)", restart, "restart_s"),
        ("10p", "1,000,000 × 1 KB persistent (fsync): publish msgs/s", restart_again, "send_rate"),
        ("10d", "1,000,000 × 1 KB persistent: drain after restart msgs/s", restart_again, "recv_rate"),
        ("10m", "1,000,000 × 1 KB persistent: RSS growth MiB", restart_again, "backlog_rss_mib"),
        # Opt-in (--only 11), Warren alone in practice (--skip-rabbitmq): an hour for RabbitMQ.
        ("11", "10,000,000 × 1 KB persistent: RSS with the backlog (MiB)", at_scale, "backlog_rss_mib"),
        ("11r", "10,000,000 × 1 KB persistent: kill -9, restart (s)", scale_again, "restart_s"),
        ("11a", "10,000,000 × 1 KB persistent: RSS after restart (MiB)", scale_again, "restarted_rss_mib"),
        ("11d", "10,000,000 × 1 KB persistent: drain after restart msgs/s", scale_again, "recv_rate"),
    ]

# Scenarios that run only when named in --only.
OPT_IN = {"11"}
# Rows that report more of another scenario's run (and come with it).
FOLLOWS = {"8d": "8", "8m": "8", "10p": "10", "10d": "10", "10m": "10", "11r": "11", "11a": "11", "11d": "11", "2p50": "2",
           "2p99": "2", "2r": "2", "3p50": "3", "3p99": "3", "7p50": "7", "7p99": "7"}


def fmt_rate(r):
    if r is None:
        return "—"
    return f"{r:,.2f}" if r < 100 else f"{r:,.0f}"


def metric(res, key):
    if res is None or res.get("error"):
        return None
    if key in ("p50", "p99"):
        return (res.get("latency_us") or {}).get(key)
    return res.get(key)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--only", default="")
    ap.add_argument("--skip-rabbitmq", action="store_true")
    ap.add_argument("--out", default="")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--scrape", action="store_true",
                    help="Warren serves its management API and metrics, read every 5 s")
    args = ap.parse_args()
    Warren.scrape = args.scrape

    # Scenario 9 opens thousands of connections: raise the descriptor limit for everything
    # started from here (brokers inherit it).
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard) if hard != resource.RLIM_INFINITY else hard))
    except (ValueError, OSError) as e:
        print(f"could not raise the file descriptor limit: {e}", file=sys.stderr)

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "warren", "-p", "warren-perf"],
                       cwd=ROOT, check=True)
    brokers = [Warren()] + ([] if args.skip_rabbitmq else [RabbitMQ()])
    for b in brokers:
        b.start()
    wanted = set(filter(None, args.only.split(",")))
    rows = []
    # Memory scenarios measure growth, so they start from freshly started brokers.
    fresh = {"8", "9", "10", "11"}
    try:
        for sid, title, fn, key in scenarios(args.duration):
            parent = FOLLOWS.get(sid, sid)
            if (wanted and sid not in wanted and parent not in wanted) or (
                    not wanted and parent in OPT_IN):
                continue
            if sid in fresh:
                for b in brokers:
                    b.stop()
                    b.start()
                time.sleep(2)
            results = {}
            for b in brokers:
                print(f"scenario {sid} on {b.name}...", file=sys.stderr)
                try:
                    results[b.name] = fn(b)
                except Exception as e:  # a failed scenario is reported, not fatal
                    results[b.name] = {"error": [str(e)]}
            rows.append((sid, title, key, results))
            print(json.dumps({"scenario": sid, "results": results}), file=sys.stderr)
        versions = {b.name: b.version() for b in brokers}
    finally:
        for b in brokers:
            b.stop()

    lines = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines.append(f"Machine: {os.cpu_count()} cores, {cpu}; {platform.platform()}")
    lines.append("Brokers: " + "; ".join(f"{v}" for v in versions.values()))
    lines.append(f"Duration per scenario: {args.duration} s\n")
    lines.append("| # | scenario | metric | Warren | RabbitMQ | ratio | Warren CPU% / RSS MiB | RabbitMQ CPU% / RSS MiB |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for sid, title, key, res in rows:
        w, r = res.get("Warren"), res.get("RabbitMQ")
        wv, rv = metric(w, key), metric(r, key)
        lower_is_better = key in ("p50", "p99", "kib_per_connection", "backlog_rss_mib", "restart_s",
                                  "restarted_rss_mib")
        if wv and rv:
            ratio = (rv / wv) if lower_is_better else (wv / rv)
            ratio_s = f"{ratio:.1f}x"
        else:
            ratio_s = "—"

        def res_s(x):
            if x is None:
                return "—"
            if x.get("error"):
                return "error: " + " ".join(x["error"])[:60]
            return f"{x.get('broker_cpu_pct', 0):.0f}% / {x.get('broker_rss_mib', 0):.0f}"

        lines.append(f"| {sid} | {title} | {key} | {fmt_rate(wv)} | {fmt_rate(rv)} | {ratio_s} | {res_s(w)} | {res_s(r)} |")
    lines.append("\nRatio: Warren/RabbitMQ for rates; RabbitMQ/Warren for latency and memory (higher is better for Warren).")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump({sid: res for sid, _, _, res in rows}, f, indent=1)


if __name__ == "__main__":
    main()
