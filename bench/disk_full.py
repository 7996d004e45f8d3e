#!/usr/bin/env python3
"""Persistent publishers against a small disk (issue 12, fault 2). Needs root (it mounts a
tmpfs) and pika: run it with the interop venv's python (tests/interop/setup.sh).

Part A, the alarm: a 64 MB tmpfs, Warren with the default 50 MB disk free limit, one pika
publisher sending persistent 64 KiB messages as fast as it can for SECONDS. Prints the lowest
free space seen (sampled every 5 ms) and whether the publisher was blocked before the disk
filled.

Part B, ENOSPC: the same disk with the limit at 1 byte (no alarm until it is full) and a 16 MB
ballast file; a confirming publisher fills the disk until its confirms stop for 3 s. The
ballast is removed; prints how long until the waiting publish is confirmed, confirms 200 more,
kills the broker with SIGKILL, restarts it and checks every confirmed message is there.

    tests/interop/.venv/bin/python bench/disk_full.py --warren target/release/warren
"""

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pika


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_bytes(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


class Warren:
    def __init__(self, binary, data, limit):
        self.binary, self.data, self.limit = binary, data, limit
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data, "--amqp-listen", f"127.0.0.1:{self.port}",
             "--disk-free-limit", str(self.limit), "--management-listen", "none",
             "--prometheus-listen", "none"],
            stdout=subprocess.DEVNULL, stderr=open(self.data + ".log", "ab"))
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("warren did not start")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def params(self, blocked_timeout=None):
        return pika.ConnectionParameters("127.0.0.1", self.port,
                                         blocked_connection_timeout=blocked_timeout)


PERSISTENT = pika.BasicProperties(delivery_mode=2)
BODY = b"x" * (64 << 10)


def part_a(args, mnt):
    data = os.path.join(mnt, "a")
    w = Warren(args.warren, data, 50_000_000)
    w.start()
    low = [free_bytes(mnt)]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            low[0] = min(low[0], free_bytes(mnt))
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    conn = pika.BlockingConnection(w.params())
    blocked = []
    conn.add_on_connection_blocked_callback(lambda *a: blocked.append(time.time()))
    ch = conn.channel()
    ch.queue_declare("fill", durable=True)
    sent, start, error = 0, time.time(), None
    try:
        while time.time() - start < args.seconds and not blocked:
            ch.basic_publish("", "fill", BODY, PERSISTENT)
            sent += 1
            if sent % 16 == 0:
                conn.process_data_events(0)
    except Exception as e:  # noqa: BLE001 (report whatever the client saw)
        error = repr(e)
    stop.set()
    t.join()
    print(f"A: 64 MB disk, 50 MB limit: {sent} x 64 KiB sent, publisher blocked: {bool(blocked)}, "
          f"lowest free {low[0] / 1e6:.1f} MB, client error: {error}")
    w.kill9()
    shutil.rmtree(data, ignore_errors=True)


def publish_confirmed(w, n):
    """Publishes n persistent messages with confirms; returns (confirmed, error)."""
    conn = pika.BlockingConnection(w.params())
    ch = conn.channel()
    ch.confirm_delivery()
    done = 0
    try:
        for _ in range(n):
            ch.basic_publish("", "fill", BODY, PERSISTENT)
            done += 1
    except Exception as e:  # noqa: BLE001
        return done, repr(e)
    conn.close()
    return done, None


def part_b(args, mnt):
    data = os.path.join(mnt, "b")
    ballast = os.path.join(mnt, "ballast")
    w = Warren(args.warren, data, 1)
    w.start()
    conn = pika.BlockingConnection(w.params())
    conn.channel().queue_declare("fill", durable=True)
    conn.close()
    with open(ballast, "wb") as f:
        f.write(b"\0" * (16 << 20))
    # One confirming publisher, until the disk is full: its last publish then waits for a
    # confirm that only space can bring.
    confirmed = [0]
    stop = threading.Event()
    errors = []

    def publisher():
        c = pika.BlockingConnection(w.params())
        ch = c.channel()
        ch.confirm_delivery()
        try:
            while not stop.is_set():
                ch.basic_publish("", "fill", BODY, PERSISTENT)
                confirmed[0] += 1
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    seen, since = -1, time.time()
    while time.time() - since < 3:
        if confirmed[0] != seen:
            seen, since = confirmed[0], time.time()
        time.sleep(0.05)
    stop.set()
    held = confirmed[0]
    print(f"B: disk full after {held} confirmed x 64 KiB (free {free_bytes(mnt) / 1e6:.2f} MB); "
          f"the next publish waits for its confirm (errors: {errors or 'none'})")
    os.remove(ballast)
    freed = time.time()
    t.join(30)
    if t.is_alive() or confirmed[0] != held + 1:
        raise SystemExit(f"B: the held publish was not confirmed 30 s after space returned {errors}")
    print(f"B: 16 MB freed; the held publish was confirmed {time.time() - freed:.2f} s later"
          " (no restart)")
    more, err = publish_confirmed(w, 200)
    print(f"B: then {more} of 200 more persistent publishes confirmed (error: {err})")
    w.kill9()
    w.start()
    conn = pika.BlockingConnection(w.params())
    count = conn.channel().queue_declare("fill", durable=True, passive=True).method.message_count
    conn.close()
    total = confirmed[0] + more
    print(f"B: after kill -9 and restart the queue holds {count} messages; {total} were confirmed:"
          f" {'none lost' if count >= total else 'LOST ' + str(total - count)}")
    w.kill9()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--warren", default="target/release/warren")
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    args.warren = os.path.abspath(args.warren)
    mnt = tempfile.mkdtemp(prefix="warren-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], check=True)
    try:
        part_a(args, mnt)
        part_b(args, mnt)
    finally:
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)


if __name__ == "__main__":
    main()
