#!/usr/bin/env python3
"""Publishers behind a stalled consumer, side by side with RabbitMQ (issue 12, fault 3).

For each broker: one warren-perf producer (SIZE-byte bodies, no confirms) into a queue for
SECONDS with no consumer, then again while a pika consumer is subscribed to that queue and
never reads its socket (prefetch unlimited, or --prefetch N: at its prefetch without acking).
Prints both rates and their ratio per broker. Needs a release build and the interop venv
(tests/interop/setup.sh) for pika.

    bench/stalled_consumer.py [--seconds 6] [--size 4096] [--prefetch 0] [--skip-rabbitmq]
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the side-by-side harness: brokers, warren-perf)

VENV_PY = os.path.join(run.ROOT, "tests", "interop", ".venv", "bin", "python")

STALL = """
import pika, sys, time
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = c.channel()
ch.queue_declare(sys.argv[2])
ch.basic_qos(prefetch_count=int(sys.argv[3]))
ch.basic_consume(sys.argv[2], lambda *a: None, auto_ack=False)
print("stalled", flush=True)
time.sleep(3600)
"""


def declare(url, queue):
    subprocess.run([VENV_PY, "-c", (
        "import pika,sys; c=pika.BlockingConnection(pika.URLParameters(sys.argv[1]));"
        "c.channel().queue_declare(sys.argv[2]); c.close()"), url, queue], check=True)


def rate(broker, queue, args):
    r = run.perf(broker, ["-x", "1", "-y", "0", "-u", queue, "-p", "-s", str(args.size),
                          "-z", str(args.seconds)], timeout=args.seconds + 60)
    return r["send_rate"] * args.size / 1e6


def measure_free(broker, args):
    declare(broker.url(), "free")
    return rate(broker, "free", args)


def measure_stalled(broker, args):
    url = broker.url()
    declare(url, "stalled")
    stall = subprocess.Popen([VENV_PY, "-c", STALL, url, "stalled", str(args.prefetch)],
                             stdout=subprocess.PIPE, text=True)
    try:
        stall.stdout.readline()
        time.sleep(1)
        return rate(broker, "stalled", args)
    finally:
        stall.kill()
        stall.wait()


def fresh(make, fn, args):
    """Runs fn on a newly started broker: the backlog one run leaves (gigabytes of paged
    messages being written back) must not slow the next one down."""
    b = make()
    b.start()
    try:
        return b.name, fn(b, args)
    finally:
        b.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--prefetch", type=int, default=0)
    ap.add_argument("--skip-rabbitmq", action="store_true")
    args = ap.parse_args()
    makers = [run.Warren] + ([] if args.skip_rabbitmq else [run.RabbitMQ])
    rows = []
    for make in makers:
        name, free = fresh(make, measure_free, args)
        _, stalled = fresh(make, measure_stalled, args)
        rows.append({"broker": name, "no_consumer_mb_s": round(free),
                     "stalled_consumer_mb_s": round(stalled),
                     "kept": f"{stalled / free:.0%}" if free else "-"})
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
