#!/usr/bin/env python3
"""The management API with many queues, side by side with RabbitMQ (its management and
prometheus plugins enabled): declares N idle queues on each broker, then times what operators'
tools ask for and reports each broker's RSS for the queues.

    bench/mgmt.py [--queues 10000] [--skip-rabbitmq] [--no-build]

Timed (median of 5): the first page of /api/queues (page_size 100), the whole /api/queues,
/api/overview, and /metrics/per-object (RabbitMQ's prometheus plugin). See docs/benchmarks.md.
"""

import argparse
import base64
import os
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import pika  # noqa: F401
except ImportError:
    # The interop suites' virtualenv has pika (tests/interop/setup.sh installs it).
    venv = os.path.join(HERE, "..", "tests", "interop", ".venv", "bin", "python")
    if os.path.exists(venv) and os.path.realpath(sys.executable) != os.path.realpath(venv):
        os.execv(venv, [venv, *sys.argv])
    raise SystemExit("pika is needed: run tests/interop/setup.sh first")

sys.path.insert(0, HERE)
import run as R  # noqa: E402  (the benchmark's helpers: ports, RSS, the brokers)

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def get(url):
    req = urllib.request.Request(url, headers={"authorization": AUTH})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body)


def timed(url, n=5):
    runs = [get(url) for _ in range(n)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def declare(amqp_port, n):
    """Declares n durable queues over AMQP (pika), in batches on one channel."""
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = conn.channel()
    for i in range(n):
        ch.queue_declare(f"idle.{i:05}", durable=True)
    conn.close()


class Warren(R.Warren):
    def launch(self):
        self.mgmt_port, self.metrics_port = R.free_port(), R.free_port()
        self.log = open(os.path.join(self.dir, "warren.log"), "a")
        self.proc = subprocess.Popen(
            [R.WARREN, "--amqp-listen", f"127.0.0.1:{self.port}",
             "--management-listen", f"127.0.0.1:{self.mgmt_port}",
             "--prometheus-listen", f"127.0.0.1:{self.metrics_port}",
             "--data-dir", os.path.join(self.dir, "data")],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})
        if not (R.wait_port(self.port, timeout=300) and R.wait_port(self.mgmt_port, timeout=30)):
            raise SystemExit("warren did not start")
        self.pid = self.proc.pid


class RabbitMQ(R.RabbitMQ):
    """RabbitMQ with its management and prometheus plugins on ports of their own."""
    plugins = ["rabbitmq_management", "rabbitmq_prometheus"]

    def configure(self):
        self.mgmt_port, self.metrics_port = R.free_port(), R.free_port()
        self.extra_conf = (f"management.tcp.port = {self.mgmt_port}\n"
                           f"prometheus.tcp.port = {self.metrics_port}\n")

    def start(self):
        super().start()
        if not R.wait_port(self.mgmt_port, timeout=60):
            raise SystemExit("rabbitmq's management plugin did not start")


def measure(b, n):
    rss0 = R.rss_kib(b.pid)
    t0 = time.time()
    declare(b.port, n)
    declare_s = time.time() - t0
    # RabbitMQ's stats database fills in over its collection interval (5 s).
    time.sleep(12)
    rss1 = R.rss_kib(b.pid)
    api = f"http://127.0.0.1:{b.mgmt_port}"
    first_page, _ = timed(api + "/api/queues?page=1&page_size=100")
    whole, size = timed(api + "/api/queues")
    overview, _ = timed(api + "/api/overview")
    per_object, _ = timed(f"http://127.0.0.1:{b.metrics_port}/metrics/per-object")
    return {
        "declare_s": declare_s,
        "queues_rss_mib": (rss1 - rss0) / 1024,
        "rss_mib": rss1 / 1024,
        "first_page_ms": first_page * 1000,
        "all_queues_ms": whole * 1000,
        "all_queues_mib": size / 2**20,
        "overview_ms": overview * 1000,
        "per_object_ms": per_object * 1000,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--skip-rabbitmq", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "warren"], cwd=R.ROOT,
                       check=True)
    brokers = [Warren()] + ([] if args.skip_rabbitmq else [RabbitMQ()])
    results = {}
    for b in brokers:
        b.start()
        try:
            print(f"{b.name}: declaring {args.queues} queues...", file=sys.stderr)
            results[b.name] = measure(b, args.queues)
        finally:
            b.stop()
    rows = [
        ("declare N queues (s)", "declare_s", "{:.1f}"),
        ("RSS for the idle queues (MiB)", "queues_rss_mib", "{:.0f}"),
        ("RSS in all (MiB)", "rss_mib", "{:.0f}"),
        ("GET /api/queues first page of 100 (ms)", "first_page_ms", "{:.1f}"),
        ("GET /api/queues, all (ms)", "all_queues_ms", "{:.0f}"),
        ("... its size (MiB)", "all_queues_mib", "{:.1f}"),
        ("GET /api/overview (ms)", "overview_ms", "{:.1f}"),
        ("GET /metrics/per-object (ms)", "per_object_ms", "{:.0f}"),
    ]
    print(f"{args.queues} idle durable queues; median of 5 requests each\n")
    print("| | Warren | RabbitMQ |")
    print("|---|---|---|")
    for title, key, f in rows:
        cells = [f.format(results[n][key]) if n in results else "—" for n in ("Warren", "RabbitMQ")]
        print(f"| {title} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
